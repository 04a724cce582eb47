"""A run's state: written by its engine thread only, read by everyone else through a view.

:class:`RunState` holds what a run knows about each item (status, output, error, attempts,
duration, log) and about itself (lifecycle, counts, clock). Only the engine thread writes
it; :class:`RunView` is the read-only face that :class:`~mapnb.MapRun`, the grid and the
DataFrame take, so nothing above the engine reaches into the engine.

Readers on other threads see each field as of some moment during the run: an item's
fields are written before its status says it is final. A run that grows (``run.extend``)
lengthens its lists in place, ``n`` last: read ``n`` first and the first ``n`` entries.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, cast, overload

from .errors import ItemError
from .events import RunStatus, Status
from .logs import LogStore
from .protocol import MAX_STEPS

_NAN = float("nan")


STATUS_CODE: dict[Status, int] = {s: k for k, s in enumerate(Status)}
"""Each status as a small int (queued is 0): :attr:`RunState.codes` holds them per item."""


def consecutive(idx: Sequence[int]) -> slice | None:
    """``idx`` (a list, or an ``array.array`` of indices) as a slice if it is a run of
    consecutive indices, checked in C; else None. A batch of items usually is one: its
    fields are then read and written with slices, not item by item."""
    if not idx:
        return None
    a, b = idx[0], idx[-1] + 1
    if b - a != len(idx):
        return None
    want = array.array(idx.typecode, range(a, b)) if isinstance(idx, array.array) else list(range(a, b))
    return slice(a, b) if idx == want else None


class Columns(Sequence[tuple[Any, ...]]):
    """Each item's values, read as from a list of tuples (``c[i]`` is item i's tuple,
    ``c[a:b]`` a list of them, and it compares equal to that list), held as one list per
    mapped parameter.

    A million items' inputs made no million tuples before the first task (nor garbage
    collections over them), and go to the workers (:class:`~mapnb.protocol.ItemRun`) and
    into the DataFrame column by column. :meth:`extend` lengthens the last column last:
    ``len`` never counts an item whose values are not all there.
    """

    __slots__ = ("columns",)

    def __init__(self, columns: list[list[Any]]) -> None:
        if not columns:
            raise ValueError("Columns needs at least one column")
        self.columns = columns

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Any, ...]], width: int) -> Columns:
        out = cls([[] for _ in range(width)])
        out.extend(rows)
        return out

    def __len__(self) -> int:
        return len(self.columns[-1])

    @overload
    def __getitem__(self, i: int) -> tuple[Any, ...]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[Any, ...]]: ...

    def __getitem__(self, i: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(i, slice):
            return list(zip(*(c[i] for c in self.columns)))
        if i < 0:
            i += len(self)
        return tuple([c[i] for c in self.columns])

    def head(self, n: int) -> Columns:
        """The first ``n`` items' values, as columns of their own."""
        return Columns([c[:n] for c in self.columns])

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(*self.columns)

    def extend(self, rows: Iterable[tuple[Any, ...]]) -> None:
        rows = list(rows)
        for k, column in enumerate(self.columns):
            column.extend([r[k] for r in rows])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, Columns)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


Inputs = list[tuple[Any, ...]] | Columns
"""A run's inputs: each item's values, as a list of tuples or as :class:`Columns`."""


class Ints(array.array):
    """Per item a small int, 4 bytes each (a list costs 8 per item, more for the objects):
    attempts and the like. A list of the same ints compares equal to it."""

    def __new__(cls, n: int = 0) -> Ints:
        out = cast(Ints, super().__new__(cls, "i"))
        out.frombytes(bytes(4 * n))
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return list(self) == other
        return super().__eq__(other)  # (NotImplemented for a tuple, say: Python then says False)

    __hash__ = None

    def __copy__(self) -> Ints:
        out = Ints()
        array.array.extend(out, self)
        return out

    def __deepcopy__(self, memo: Any) -> Ints:
        return self.__copy__()


class OptionalFloats(array.array):
    """Per item a float or None (held as NaN), 8 bytes each: a list held a float object
    (24 bytes) per item besides its pointer. Durations: ``d[i]`` is None until known.

    Writes of None (``d[i] = None``, ``d.extend([None, 1.0])``) are stored as NaN. The
    engine's hot path writes floats through ``array.array.__setitem__`` directly."""

    def __new__(cls, n: int = 0) -> OptionalFloats:
        out = cast(OptionalFloats, super().__new__(cls, "d"))
        out.frombytes(_NAN_BYTES * n)
        return out

    def __getitem__(self, i: Any) -> Any:
        v = array.array.__getitem__(self, i)
        if isinstance(i, slice):
            return [None if x != x else x for x in v]
        return None if v != v else v

    def __setitem__(self, i: Any, v: Any) -> None:
        if isinstance(i, slice):
            array.array.__setitem__(self, i, array.array("d", [_NAN if x is None else x for x in v]))
        else:
            array.array.__setitem__(self, i, _NAN if v is None else v)

    def __iter__(self) -> Iterator[float | None]:
        for v in array.array.__iter__(self):
            yield None if v != v else v

    def extend(self, values: Iterable[Any]) -> None:
        array.array.extend(self, [_NAN if v is None else v for v in values])

    def append(self, v: Any) -> None:
        array.array.append(self, _NAN if v is None else v)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, OptionalFloats)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None

    def __copy__(self) -> OptionalFloats:
        out = OptionalFloats()
        array.array.extend(out, self)
        return out

    def __deepcopy__(self, memo: Any) -> OptionalFloats:
        return self.__copy__()


_NAN_BYTES = array.array("d", [_NAN]).tobytes()


class RunState:
    """Everything a run knows, for the engine thread to write.

    Parameters
    ----------
    run_id, names, inputs
        The run's id, its mapped parameters and each item's values.
    backend, concurrency
        Where items run (its name) and how many tasks at most run at once.
    need
        How many items must succeed (from ``min_success_ratio``).
    cached
        Whether the run looks items up in the cache (the DataFrame then has a column).
    """

    def __init__(
        self,
        *,
        run_id: str,
        names: tuple[str, ...],
        inputs: Inputs,
        backend: str,
        concurrency: int,
        need: int,
        cached: bool = False,
        axes: list[list[Any]] | None = None,
        shapes: list[tuple[int, ...]] | None = None,
    ) -> None:
        n = len(inputs)
        self.run_id, self.names, self.inputs, self.n = run_id, names, inputs, n
        self.backend, self.concurrency, self.need, self.cached = backend, concurrency, need, cached
        self.need_rule = "min_success_ratio"  # or "min_successes": what ``need`` comes from
        self.status: list[Status] = [Status.QUEUED] * n
        # The same statuses as one byte each (STATUS_CODE), written with them: a face
        # finds what changed by comparing bytes, with no event object per item.
        self.codes = bytearray(n)
        self.outputs: list[Any] = [None] * n
        self.errors: list[ItemError | None] = [None] * n
        self.attempts = Ints(n)  # attempts that ran to an outcome
        self.durations = OptionalFloats(n)  # seconds, None until known
        self.logs = LogStore(n)
        # Reported metrics (mapnb.report): per item its latest attempt's history, step ->
        # {name: value} (the newest MAX_STEPS steps), and its last value of each metric.
        self.history: list[dict[int, dict[str, float]] | None] = [None] * n
        self.last_metrics: list[dict[str, float] | None] = [None] * n
        self.metric_attempt = Ints(n)
        self.metric_names: dict[str, None] = {}  # every name reported, in order of appearance
        self.pruned_why: list[str | None] = [None] * n
        self.prune_metric = ""  # the metric map_task(prune=...) watches ("": no pruning)
        self.counts: dict[Status, int] = dict.fromkeys(Status, 0)
        self.counts[Status.QUEUED] = n
        self.lifecycle = RunStatus.RUNNING
        self.first_failure: int | None = None
        self.started_at = time.monotonic()
        self.finished_at: float | None = None
        self.done = threading.Event()  # set once every item is final and the backend let go
        # A product's axes (the values of each parameter) and the axes' lengths after each
        # growth, which say where every item sits (see mapnb.sweep.coords).
        self.axes = axes
        if axes is not None and not shapes:
            shapes = [tuple(len(a) for a in axes)]
        self.shapes: list[tuple[int, ...]] = shapes or []

    def grow(self, inputs: Inputs, axes: list[list[Any]] | None = None) -> None:
        """Append queued items (and, for a product, take its new ``axes``): every list
        first, ``n`` last, so that a reader of the first ``n`` entries finds them all."""
        k = len(inputs)
        columns: tuple[tuple[Any, Any], ...] = (  # lists and arrays
            (self.status, Status.QUEUED), (self.outputs, None), (self.errors, None), (self.attempts, 0),
            (self.durations, None), (self.history, None), (self.last_metrics, None),
            (self.metric_attempt, 0), (self.pruned_why, None),
        )  # fmt: skip
        for values, fill in columns:
            values.extend([fill] * k)
        self.codes.extend(bytes(k))
        self.logs.grow(k)
        self.inputs.extend(inputs)
        if axes is not None:
            self.axes = axes
            self.shapes = [*self.shapes, tuple(len(a) for a in axes)]
        self.counts[Status.QUEUED] += k
        self.n += k

    def set(self, i: int, status: Status) -> None:
        """Move item ``i`` to ``status``, keeping the counts."""
        counts = self.counts
        counts[self.status[i]] -= 1
        counts[status] += 1
        self.status[i] = status
        self.codes[i] = STATUS_CODE[status]

    def succeeded(self) -> int:
        """Items that succeeded or came from the cache."""
        return self.counts[Status.SUCCEEDED] + self.counts[Status.CACHED]

    def add_metrics(self, i: int, attempt: int, steps: list[tuple[int, dict[str, float]]]) -> None:
        """Item ``i``'s attempt ``attempt`` reported ``steps``: a new attempt starts a new
        history; the last value of each metric is kept apart (it may be older than the
        latest step, when that step did not report it)."""
        history = self.history[i]
        if history is None or self.metric_attempt[i] != attempt:
            history = {}
            self.metric_attempt[i] = attempt
            self.last_metrics[i] = {}
        last = dict(self.last_metrics[i] or {})
        for step, values in steps:
            known = history.get(step)
            history[step] = {**known, **values} if known is not None else values
            last.update(values)
            for name in values:
                if name not in self.metric_names:
                    self.metric_names[name] = None
        while len(history) > MAX_STEPS:
            del history[next(iter(history))]
        self.history[i] = history
        self.last_metrics[i] = last  # a new dict: readers of the old one see it whole

    def resume_clock(self) -> None:
        """A re-run: the clock counts time spent running, not the idle time before it."""
        if self.finished_at is not None:
            self.started_at = time.monotonic() - (self.finished_at - self.started_at)
        self.finished_at = None


class Observer(Protocol):
    """Something that follows item outcomes on the engine thread (the journal does).

    ``item_final`` is called once an item's fields are set and its status is final;
    ``items_added`` when the run grew (items ``start`` to ``start + count - 1``);
    ``flush`` at each turn of the engine's loop; ``close`` when the run ends (it must not
    raise: a broken store warns and the run goes on).
    """

    def item_final(self, i: int, status: Status, state: RunState) -> None: ...

    def items_added(self, start: int, count: int, state: RunState) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class RunView:
    """A read-only view of a :class:`RunState`, safe to hold from any thread.

    The sequences are the run's own (not copies, so that a grid of 100,000 items costs
    nothing to read); treat them as read-only.
    """

    __slots__ = ("_s",)

    def __init__(self, state: RunState) -> None:
        self._s = state

    @property
    def run_id(self) -> str:
        return self._s.run_id

    @property
    def n(self) -> int:
        return self._s.n

    @property
    def names(self) -> tuple[str, ...]:
        return self._s.names

    @property
    def axes(self) -> list[list[Any]] | None:
        """A product's values of each parameter (None for an element-wise map)."""
        return self._s.axes

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """A product's axis lengths, as started and after each growth ([] otherwise)."""
        return self._s.shapes

    @property
    def inputs(self) -> Sequence[tuple[Any, ...]]:
        return self._s.inputs

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self._s.backend

    @property
    def concurrency(self) -> int:
        return self._s.concurrency

    @property
    def need(self) -> int:
        """How many items must succeed for the run to succeed."""
        return self._s.need

    @property
    def need_rule(self) -> str:
        """What ``need`` comes from: ``"min_success_ratio"`` or ``"min_successes"``."""
        return self._s.need_rule

    @property
    def cached(self) -> bool:
        """Whether the run uses the cache."""
        return self._s.cached

    @property
    def status(self) -> Sequence[Status]:
        return self._s.status

    @property
    def codes(self) -> bytearray:
        """Each item's status as one byte (:data:`STATUS_CODE`); do not write to it."""
        return self._s.codes

    @property
    def outputs(self) -> Sequence[Any]:
        return self._s.outputs

    @property
    def errors(self) -> Sequence[ItemError | None]:
        return self._s.errors

    @property
    def attempts(self) -> Sequence[int]:
        return self._s.attempts

    @property
    def durations(self) -> Sequence[float | None]:
        return self._s.durations

    @property
    def counts(self) -> Mapping[Status, int]:
        return self._s.counts

    def log_chunks(self, i: int) -> list[tuple[str, str]]:
        """Item ``i``'s output so far as ``(stream, text)`` pieces."""
        return self._s.logs.chunks(i)

    def log_text(self, i: int, stream: str | None = None) -> str:
        return self._s.logs.text(i, stream)

    @property
    def lifecycle(self) -> RunStatus:
        """The engine's word on the run (``running`` until it is done)."""
        return self._s.lifecycle

    @property
    def first_failure(self) -> int | None:
        return self._s.first_failure

    @property
    def started_at(self) -> float:
        """``time.monotonic()`` when the run started (moved on by a re-run's idle time)."""
        return self._s.started_at

    @property
    def finished_at(self) -> float | None:
        return self._s.finished_at

    @property
    def done(self) -> threading.Event:
        """Set once every item is final; wait on it, never set it."""
        return self._s.done

    def succeeded(self) -> int:
        return self._s.succeeded()

    @property
    def last_metrics(self) -> Sequence[dict[str, float] | None]:
        """Per item, the last reported value of each metric (None: it reported nothing)."""
        return self._s.last_metrics

    @property
    def metric_names(self) -> list[str]:
        """Every metric name reported in the run, in order of first appearance."""
        return list(self._s.metric_names)

    def metric_history(self, i: int) -> list[tuple[int, dict[str, float]]]:
        """Item ``i``'s reported ``(step, {name: value})`` (its latest attempt's, the
        newest 1,000 steps), in the order the steps were first reported."""
        history = self._s.history[i]
        return list(history.copy().items()) if history is not None else []

    @property
    def prune_metric(self) -> str:
        """The metric the run's pruner watches ("" without ``prune=``)."""
        return self._s.prune_metric

    @property
    def pruned_why(self) -> Sequence[str | None]:
        """Per pruned item, why ("pruned at step 3: loss 0.9 > median 0.5")."""
        return self._s.pruned_why

    def elapsed(self) -> float:
        """Seconds the run has been running (until it ended, once done)."""
        s = self._s
        return (s.finished_at or time.monotonic()) - s.started_at
