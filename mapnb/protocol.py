"""The wire protocol between backends and the engine: what a backend reports, typed.

A backend calls ``report(records)`` (from any thread) with lists of these records; the
engine thread is their only reader. Each record is a named tuple whose first field is its
one-letter kind: the engine dispatches on ``record[0]`` and unpacks each kind in one place,
by the layout declared here. Records cross processes as plain tuples (see ``_Record``), and
plain tuples of the same layout are accepted from any backend (optional trailing fields may
be left out); :func:`typed` gives one its names.

::

    Started(task_id, index, attempt, t0)              an attempt began (t0: its clock)
    Log(task_id, index, attempt, stream, text)        text it wrote to stdout or stderr
    Finished(task_id, index, attempt, ok, value, t0, t1, remote=None)
        ok: value is the output (pickled bytes on the way, loaded in the caller), else an
        ItemError. ``remote`` = (attempts, Status) from a backend that retries and caches
        itself (backend="flyte"): the item's final outcome as it saw it.
    Outcomes(task_id, rows)                           several outcomes of one task in one
        record (the local pool's workers send these): ``rows`` is a list of
        ``(index, attempt, ok, value, t0, t1)`` as in Finished, where ``ok`` is OK (value:
        the output), FAILED (value: an ItemError) or PICKLED on the way (value: the
        output's pickle, loaded in the caller, which then sees OK or FAILED)
    Ended(task_id, error=None, all_items=False, culprit=None)
        closes a task. With an error, the item that was running failed with it (a dead
        worker): item ``culprit`` where the backend knows it, else the first unfinished
        one; or every unfinished item when ``all_items`` (the batch could not load).
        Unfinished items without an error go back to the queue.
    Metrics(task_id, index, attempt, steps)           what the attempt reported with
                                                      mapnb.report(): ``steps`` is a list
                                                      of ``(step, {name: float})``, one
                                                      per step (its last values), in order
    Retiring()                                        local pool only: the worker exits by
                                                      itself; it never reaches the engine

The engine's own commands (:class:`Cancel`, :class:`Subscribe`, :class:`Unsubscribe`)
travel the same inbox as the lists of records, one command per message; the engine tells
them apart by type.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from .errors import ItemError

STARTED, LOG, FINISHED, ENDED, RETIRING, METRICS, OUTCOMES = "s", "l", "f", "e", "r", "m", "o"

FAILED, OK, PICKLED = 0, 1, 2
"""An Outcomes row's ``ok``: failed; succeeded; succeeded, its output still pickled."""

RAW_TYPES: frozenset[type] = frozenset({int, float, str, bool, type(None), complex})
"""Outputs of these (immutable) types travel as they are, pickled with their batch; other
outputs are pickled when their item ends, so a later item cannot change what was sent."""

MAX_STEPS = 1000
"""Steps of reported metrics kept per item: unsent where it runs, and in the caller."""

Item = tuple[int, int, tuple[Any, ...]]
"""One item of a task: ``(index, attempt, args)``; ``attempt`` counts from 1."""


class ItemRun(Sequence[Item]):
    """The items ``start`` to ``stop - 1`` of a run, all at one attempt, as a task's
    sequence of :data:`Item`: what the engine takes from a queue of fresh items.

    Their args are held as columns, one list per mapped parameter, and each item's tuple
    is made only when read (by the worker, as it runs them): a million items went to the
    workers without three million tuples made, tracked by the garbage collector and
    pickled in the caller. It pickles as its numbers and columns.
    """

    __slots__ = ("start", "stop", "attempt", "columns")

    def __init__(self, start: int, stop: int, attempt: int, columns: list[list[Any]]) -> None:
        self.start, self.stop, self.attempt, self.columns = start, stop, attempt, columns

    def __len__(self) -> int:
        return self.stop - self.start

    @overload
    def __getitem__(self, k: int) -> Item: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[Item]: ...

    def __getitem__(self, k: int | slice) -> Item | Sequence[Item]:
        n = self.stop - self.start
        if isinstance(k, slice):
            a, b, step = k.indices(n)
            if step != 1:
                return list(self)[k]
            b = max(a, b)
            return ItemRun(self.start + a, self.start + b, self.attempt, [c[a:b] for c in self.columns])
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("ItemRun index out of range")
        return (self.start + k, self.attempt, tuple([c[k] for c in self.columns]))

    def __iter__(self) -> Iterator[Item]:
        return zip(range(self.start, self.stop), itertools.repeat(self.attempt), zip(*self.columns))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, ItemRun)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ItemRun({self.start}, {self.stop}, attempt={self.attempt})"

    def __reduce__(self) -> tuple[Any, ...]:
        return ItemRun, (self.start, self.stop, self.attempt, self.columns)


class _Record:
    """Travels as a plain tuple: cheaper to load in the caller, and the garbage collector
    stops tracking tuples of plain values (it never does for tuple subclasses, which made
    collections of a busy run ~40% of the caller's time per item)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (tuple(self),))  # type: ignore[arg-type]


class Started(_Record, collections.namedtuple("Started", "kind task_id index attempt t0")):
    """Attempt ``attempt`` of item ``index`` began at ``t0`` (the backend's clock)."""

    __slots__ = ()

    def __new__(cls, task_id: int, index: int, attempt: int, t0: float) -> Started:
        return tuple.__new__(cls, (STARTED, task_id, index, attempt, t0))


class Log(_Record, collections.namedtuple("Log", "kind task_id index attempt stream text")):
    """Text an attempt wrote to ``stream`` (``"stdout"`` or ``"stderr"``)."""

    __slots__ = ()

    def __new__(cls, task_id: int, index: int, attempt: int, stream: str, text: str) -> Log:
        return tuple.__new__(cls, (LOG, task_id, index, attempt, stream, text))


class Finished(
    _Record, collections.namedtuple("Finished", "kind task_id index attempt ok value t0 t1 remote")
):
    """An attempt's outcome: ``value`` is the output when ``ok``, else an ItemError."""

    __slots__ = ()

    def __new__(
        cls,
        task_id: int,
        index: int,
        attempt: int,
        ok: bool,
        value: Any,
        t0: float,
        t1: float,
        remote: tuple[int, Any] | None = None,
    ) -> Finished:
        return tuple.__new__(cls, (FINISHED, task_id, index, attempt, ok, value, t0, t1, remote))


class Ended(_Record, collections.namedtuple("Ended", "kind task_id error all_items culprit")):
    """The task is over; see the module docstring for what ``error`` does to its items."""

    __slots__ = ()

    def __new__(
        cls,
        task_id: int,
        error: ItemError | None = None,
        all_items: bool = False,
        culprit: int | None = None,
    ) -> Ended:
        return tuple.__new__(cls, (ENDED, task_id, error, all_items, culprit))


class Metrics(_Record, collections.namedtuple("Metrics", "kind task_id index attempt steps")):
    """Metrics an attempt reported: ``steps`` is a list of ``(step, {name: float})``."""

    __slots__ = ()

    def __new__(
        cls, task_id: int, index: int, attempt: int, steps: list[tuple[int, dict[str, float]]]
    ) -> Metrics:
        return tuple.__new__(cls, (METRICS, task_id, index, attempt, steps))


class Outcomes(_Record, collections.namedtuple("Outcomes", "kind task_id rows")):
    """Outcomes of several attempts of one task, in the order they ran: ``rows`` of
    ``(index, attempt, ok, value, t0, t1)`` (see the module docstring for ``ok``)."""

    __slots__ = ()

    def __new__(cls, task_id: int, rows: list[tuple[int, int, int, Any, float, float]]) -> Outcomes:
        return tuple.__new__(cls, (OUTCOMES, task_id, rows))


class Retiring(_Record, collections.namedtuple("Retiring", "kind")):
    """A local worker's last record before it exits by itself: give it no more work."""

    __slots__ = ()

    def __new__(cls) -> Retiring:
        return tuple.__new__(cls, (RETIRING,))


Record = Started | Log | Metrics | Finished | Outcomes | Ended | Retiring
ReportFn = Callable[[list[Any]], None]
"""How a backend reports: ``report(records)``, callable from any thread."""

_TYPES: dict[str, Any] = {
    STARTED: Started, LOG: Log, METRICS: Metrics, FINISHED: Finished, ENDED: Ended, RETIRING: Retiring,
    OUTCOMES: Outcomes,
}  # fmt: skip


def typed(record: tuple[Any, ...]) -> Any:
    """A plain tuple of a record's layout (optional trailing fields may be left out) as
    its named record type, for code that reads records by name off the hot path."""
    return _TYPES[record[0]](*record[1:])


# -- the engine's commands (from the caller's threads to the engine thread) ---------------


@dataclasses.dataclass(frozen=True)
class Cancel:
    """Stop the run: queued items never start, running ones are killed."""


@dataclasses.dataclass(frozen=True)
class Subscribe:
    """Replay the run to ``callback``, then deliver every new batch of events to it
    (``statuses=False``: it needs no per-item status events, see :class:`~mapnb.events.EventBus`)."""

    callback: Callable[[list[Any]], None]
    statuses: bool = True


@dataclasses.dataclass(frozen=True)
class Unsubscribe:
    """Stop delivering events to ``callback``."""

    callback: Callable[[list[Any]], None]


Command = Cancel | Subscribe | Unsubscribe
