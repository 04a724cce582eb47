"""What runs where the items run: log capture, timing, outcomes.

:func:`run_items` executes one task (a batch of items of one job) and reports through an
:class:`Emitter`; it never raises. In-process backends (sequential, threads) call it with
an emitter that reports straight to the engine; the local pool's worker loop
(:mod:`mapnb.backends.local.serve`) and Dask's workers use an :class:`Outbox`, which
batches reports into a pipe.
"""

from __future__ import annotations

import collections
import collections.abc
import functools
import io
import logging
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .errors import ErrorKind, ItemError, NotRetried
from .logs import BoundedText
from .protocol import (
    FAILED,
    LOG,
    MAX_STEPS,
    OK,
    PICKLED,
    RAW_TYPES,
    Ended,
    Finished,
    Item,
    Log,
    Metrics,
    Outcomes,
    Retiring,
    Started,
)

log = logging.getLogger(__name__)

class Emitter(Protocol):
    """Where :func:`run_items` reports to."""

    def started(self, index: int, attempt: int, t0: float) -> None: ...

    def log(self, index: int, attempt: int, stream: str, text: str) -> None: ...

    def metrics(self, index: int, attempt: int, step: int, values: dict[str, float]) -> None: ...

    def finished(
        self, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float, t1: float
    ) -> None: ...


class Lane(Protocol):
    """What :func:`run_items` calls around each item: two calls, so that a backend can fuse
    its per-item steps (a trivial item costs about a microsecond in all; each Python call
    here costs a tenth of that). :class:`Hooks` makes one from an emitter's own steps."""

    @property
    def emit(self) -> Emitter:
        """Where the item's logs and metrics go between the two calls."""
        ...

    def begin(self, cap: Capture, index: int, attempt: int, t0: float) -> bool:
        """Before item ``index`` runs: note it started and route its output to ``cap``;
        False to end the task here (its other items go back to the queue)."""
        ...

    def end(
        self, cap: Capture, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float
    ) -> None:
        """After it ran: collect what it wrote, close ``cap`` and report its outcome."""
        ...


class Hooks:
    """A :class:`Lane` made of an emitter's ``started`` and ``finished``, a
    ``set_capture(cap | None)`` that routes output to the running item's capture, and an
    optional ``stop()``, asked before each item, that ends the task when true."""

    __slots__ = ("emit", "_set_capture", "_stop")

    def __init__(
        self, emit: Emitter, set_capture: Callable[[Capture | None], None], stop: Callable[[], bool] | None = None
    ) -> None:
        self.emit, self._set_capture, self._stop = emit, set_capture, stop

    def begin(self, cap: Capture, index: int, attempt: int, t0: float) -> bool:
        if self._stop is not None and self._stop():
            return False
        self.emit.started(index, attempt, t0)
        self._set_capture(cap)
        return True

    def end(
        self, cap: Capture, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float
    ) -> None:
        self._set_capture(None)
        if cap._bound is not None:  # it printed: send the tail held back
            cap.close()
        self.emit.finished(index, attempt, ok, value, error, t0, time.monotonic())


class MetricBuffer:
    """Reported metrics waiting to be sent: per attempt, the last values of each step.

    A tight loop of ``mapnb.report`` calls costs a dict update each; what is sent is one
    :class:`~mapnb.protocol.Metrics` record per attempt per batch, holding at most
    :data:`MAX_STEPS` steps (the newest)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[tuple[int, int], dict[int, dict[str, float]]] = {}

    def add(self, index: int, attempt: int, step: int, values: dict[str, float]) -> None:
        steps = self._pending.setdefault((index, attempt), {})
        known = steps.get(step)
        if known is None:
            steps[step] = values
            if len(steps) > MAX_STEPS:  # the oldest step goes: only the newest are kept anyway
                del steps[next(iter(steps))]
        else:
            known.update(values)  # the same step again: its last value of each metric wins

    @property
    def pending(self) -> dict[tuple[int, int], dict[int, dict[str, float]]]:
        """What waits, by ``(index, attempt)``: empty when nothing does (a dict's own test,
        no method call: it runs after every item)."""
        return self._pending

    def take(self, task_id: int, only: tuple[int, int] | None = None) -> list[Metrics]:
        """The pending records (all, or those of attempt ``only``), removed from here."""
        if only is not None:
            steps = self._pending.pop(only, None)
            return [Metrics(task_id, only[0], only[1], list(steps.items()))] if steps else []
        out = [Metrics(task_id, i, a, list(steps.items())) for (i, a), steps in self._pending.items()]
        self._pending = {}
        return out


class ItemLedger(Protocol):
    """Where a worker notes the item it starts, for its pool to read if it dies (the
    local pool's :class:`mapnb.backends.local.serve.Ledger`)."""

    def write(self, task_id: int, index: int, attempt: int) -> None: ...


class Capture:
    """Collects what one attempt of one item writes, within the head/tail bound."""

    __slots__ = ("index", "attempt", "_emit", "_bound")

    def __init__(self, index: int, attempt: int, emit: Emitter) -> None:
        self.index, self.attempt, self._emit = index, attempt, emit
        self._bound: BoundedText | None = None  # made on the first write: most items print nothing

    def write(self, stream: str, text: str) -> None:
        bound = self._bound
        if bound is None:
            bound = self._bound = BoundedText()
        kept = bound.add(stream, text)
        if kept:
            self._emit.log(self.index, self.attempt, stream, kept)

    def close(self) -> None:
        """The item ended: send its held-back tail; the capture may then serve another item."""
        bound = self._bound
        if bound is None:
            return
        self._bound = None
        for stream, text in bound.tail_chunks():
            self._emit.log(self.index, self.attempt, stream, text)


class Router(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr``: text goes to the running item's capture.

    Text written when no item is running (or from a thread the item did not run on, in
    the in-process backends) goes to the stream that was there before.
    """

    def __init__(
        self, name: str, fallback: Any, current: Callable[[], Capture | None], fd: int | None = None
    ) -> None:
        super().__init__()
        self.name, self.fallback, self._current, self._fd = name, fallback, current, fd

    def write(self, text: str) -> int:
        cap = self._current()
        if cap is None:
            return self.fallback.write(text) if self.fallback is not None else len(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        cap.write(self.name, text)
        return len(text)

    def flush(self) -> None:
        if self._current() is None and self.fallback is not None:
            self.fallback.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.fallback, "encoding", None) or "utf-8"

    def fileno(self) -> int:
        # Code that needs a real descriptor (subprocess, faulthandler) gets ``fd`` where that
        # is captured too (local workers), else the original one, whose output is not.
        if self._fd is not None:
            return self._fd
        if self.fallback is None:
            raise io.UnsupportedOperation("fileno")
        return self.fallback.fileno()


def exception_error(exc: BaseException) -> ItemError:
    """An :class:`ItemError` for ``exc``, its traceback starting in the user's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _ours(tb.tb_frame.f_globals):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    final = isinstance(exc, NotRetried)
    return ItemError(ErrorKind.EXCEPTION, type(exc).__qualname__, str(exc), text, final=final)


def memory_error(spec: Any, cause: ItemError | None = None) -> ItemError:
    """The item's ``MemoryLimitExceeded`` when an allocation failed under its limit."""
    why = f" ({cause.one_line()})" if cause is not None else ""
    return ItemError(
        ErrorKind.MEMORY,
        "MemoryLimitExceeded",
        f"the item exceeded its limit mem={spec}: an allocation failed{why}",
        cause.traceback if cause is not None else "",
    )


def _ours(globals_: dict[str, Any]) -> bool:
    name = globals_.get("__name__", "")
    return name == "mapnb" or name.startswith("mapnb.")


def run_items(job: Any, items: Iterable[Item], lane: Lane, mem_limit: Any = None) -> None:
    """Run each item of ``job`` (a backends.Job) in order, capturing its output and
    giving it its context (mapnb.current_context()); report everything through ``lane``,
    raise nothing.

    ``mem_limit`` (the item's ``limits.mem``, where a kernel limit enforces it) turns a
    ``MemoryError`` into the item's ``MemoryLimitExceeded``.

    A trivial item costs about a microsecond here, so what can be made once per batch is:
    one context slot and one capture, re-pointed at each item (two stores each), instead
    of a context, a closure and a capture per item.
    """
    from .context import enter_items, leave_item

    fn, names, clock = job.fn, job.names, time.monotonic
    call = fn if _binds_in_order(fn, names) else functools.partial(_by_name, fn, names)
    begin, end = lane.begin, lane.end
    slot, token = enter_items(job.checkpoints, job.run_id, lane.emit.metrics)
    cap = Capture(0, 0, lane.emit)
    try:
        for index, attempt, args in items:
            slot.index = cap.index = index
            slot.attempt = cap.attempt = attempt
            t0 = clock()
            if not begin(cap, index, attempt, t0):
                return
            try:
                value = call(*args)
                if type(value) not in RAW_TYPES:  # (a plain value needs no settling: no call)
                    value = settle(value)
                error, ok = None, True
            except BaseException as e:  # the item's failure, whatever it is, is its own
                value, error, ok = None, exception_error(e), False
                if mem_limit is not None and isinstance(e, MemoryError):
                    error = memory_error(mem_limit, error)
            end(cap, index, attempt, ok, value, error, t0)
    finally:
        leave_item(token)


def _by_name(fn: Any, names: tuple[str, ...], *args: Any) -> Any:
    return fn(**dict(zip(names, args)))


def _binds_in_order(fn: Any, names: tuple[str, ...]) -> bool:
    """Whether ``fn(*args)`` binds ``args`` to ``names`` as ``fn(**dict(zip(names, args)))``
    does: a plain function whose first parameters are ``names``, in order (the keyword
    call cost a trivial item ~0.7 us more)."""
    code = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "__self__", None) is not None:  # not a function, or bound
        return False
    n = len(names)
    return code.co_posonlyargcount == 0 and code.co_argcount >= n and code.co_varnames[:n] == names


def settle(value: Any) -> Any:
    """The output of an item: what an ``async def`` task's coroutine returns, run to
    completion here in an event loop of its own; any other value as it is.

    Flyte 2 tasks are ``async def``; without this each item would return an unpicklable
    coroutine that was never awaited. The coroutine's exception is re-raised with the
    traceback from the task's own frame on, without asyncio's frames.
    """
    if type(value) in RAW_TYPES or not isinstance(value, collections.abc.Coroutine):
        return value

    code = getattr(value, "cr_code", None)
    try:
        return run_coroutine(value)
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        if tb is None:
            raise
        raise e.with_traceback(tb)  # noqa: B904 - the same exception, its traceback trimmed


def run_coroutine(coro: Any) -> Any:
    """Run ``coro`` to completion in an event loop of its own (in a thread of its own when
    a loop already runs in this one: an in-process backend called from async code)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop runs in this thread
        nested = False
    else:
        nested = True
    if not nested:  # (outside the except block: the item's error has no context of ours)
        return asyncio.run(coro)
    # A loop runs in this thread already (an in-process backend called from async code):
    # asyncio.run cannot nest, so the coroutine gets a thread of its own.
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, asyncio.run(coro)))
        except BaseException as e:  # noqa: BLE001 - handed to the item below
            box.append((False, e))

    thread = threading.Thread(target=run, name="mapnb-coroutine", daemon=True)
    thread.start()
    thread.join()
    ok, result = box[0]
    if not ok:
        raise result
    return result


def dumps_value(value: Any) -> bytes:
    """Pickle an output to send back: plain pickle first, cloudpickle for notebook classes."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class _OpenRows:
    """An Outcomes record still collecting rows, in an Outbox."""

    __slots__ = ("task_id", "rows")

    def __init__(self, task_id: int, rows: list[tuple[int, int, int, Any, float, float]]) -> None:
        self.task_id, self.rows = task_id, rows


class Outbox:
    """The worker's emitter: collects reports and sends them in batches.

    A background thread flushes every ``interval`` seconds so that logs and "started"
    stream while an item runs; the main thread flushes at the end of each task. An item
    that finishes between two flushes sends no "started" at all.
    """

    def __init__(
        self,
        conn: Any,
        interval: float = 0.05,
        on_tick: Callable[[], None] | None = None,
        ledger: ItemLedger | None = None,
    ) -> None:
        self._conn = conn
        self._on_tick = on_tick
        self._ledger = ledger
        self.mem_limit: Any = None  # limits.mem of the running job, where a kernel limit holds it
        self._lock = threading.Lock()  # guards _records and _current
        self._send_lock = threading.Lock()  # keeps batches in order on the wire
        self._records: list[Any] = []
        self._metrics = MetricBuffer()  # guarded by _lock too
        self._current: list[Any] | None = None  # [index, attempt, t0, announced]
        # The usual outcomes (succeeded, a plain value), newest last, appended without the
        # lock: a deque's append and popleft are atomic, and they are taken (under the
        # lock) into _records before anything that must follow them.
        self._done: collections.deque[tuple[int, int, int, Any, float, float]] = collections.deque()
        self.task_id = 0
        self.first_of_task = False
        self._interval = interval
        self._closed = threading.Event()
        threading.Thread(target=self._tick, name="mapnb-outbox", daemon=True).start()

    def close(self) -> None:
        """Send what is left and stop the flushing thread."""
        self._closed.set()
        self.flush()

    def _announce(self) -> None:  # call with _lock held
        cur = self._current
        if cur is not None and not cur[3]:
            self._records.append(Started(self.task_id, cur[0], cur[1], cur[2]))
            cur[3] = True

    def started(self, index: int, attempt: int, t0: float) -> None:
        if self._ledger is not None:  # before the item runs: a crash is then known to be its
            self._ledger.write(self.task_id, index, attempt)
        # Without the lock: the last item's finished() cleared _current under it, and the
        # tick's _announce sees either None or this whole list (one reference store).
        self._current = [index, attempt, t0, False]
        if self.first_of_task:  # the caller's timeout clock starts when the task really does
            self.first_of_task = False
            self.flush()

    def log(self, index: int, attempt: int, stream: str, text: str) -> None:
        with self._lock:
            self._announce()
            recs = self._records
            last = recs[-1] if recs else None
            if type(last) is list and last[2] == index and last[3] == attempt and last[4] == stream:
                last[5].append(text)
            else:
                recs.append([LOG, self.task_id, index, attempt, stream, [text]])

    def metrics(self, index: int, attempt: int, step: int, values: dict[str, float]) -> None:
        with self._lock:
            self._metrics.add(index, attempt, step, values)

    def finished(
        self, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float, t1: float
    ) -> None:
        if ok and type(value) in self.raw_types and not self._metrics._pending:
            # The usual case, without the lock (a trivial item costs ~1.5 us here).
            self._current = None
            done = self._done
            done.append((index, attempt, OK, value, t0, t1))
            if len(done) >= self.flush_rows:
                self.flush()
            return
        big = False
        if not ok:
            code, payload = FAILED, error
        elif type(value) in self.raw_types:
            code, payload = OK, value
        else:
            code, payload = self._pickled(value)
            big = code == PICKLED and len(payload) >= self.flush_bytes
        with self._lock:
            self._current = None
            self._take_done()
            if self._metrics._pending:  # what it reported arrives before its outcome
                self._records += self._metrics.take(self.task_id, (index, attempt))
            kept = self._keep(index, attempt, code, payload, t0, t1)
        if big or (kept is not None and kept >= self.flush_rows):
            self.flush()

    def _take_done(self) -> None:
        """Move the outcomes :meth:`finished` queued without the lock into ``_records``
        (called with the lock held, so that no other thread takes them meanwhile)."""
        done = self._done
        if done:
            popleft = done.popleft  # (only appends happen meanwhile: len(done) are there)
            self._open_rows().extend([popleft() for _ in range(len(done))])

    def _open_rows(self) -> list[tuple[int, int, int, Any, float, float]]:
        """The rows of the Outcomes record at the end of ``_records``, added if the last
        record is another (called with the lock held): consecutive outcomes share one
        record, so the caller settles them in one go."""
        recs = self._records
        last = recs[-1] if recs else None
        if type(last) is not _OpenRows:
            last = _OpenRows(self.task_id, [])
            recs.append(last)
        return last.rows

    flush_rows = 1024
    """Outcomes sent as soon as this many wait: the caller settles them while the next
    items run, instead of all of a long task's at its end (1,024 trivial items take ~2 ms
    here; every message costs the caller some tens of microseconds)."""

    flush_bytes = 1 << 20
    """An output pickled to this many bytes or more is sent at once, with what waits:
    a batch of large outputs is not held (and copied) in the worker first."""

    raw_types: frozenset[type] = RAW_TYPES
    """Outputs sent as they are, with their batch; others are pickled as their item ends."""

    def _pickled(self, value: Any) -> tuple[int, Any]:
        """``(PICKLED, bytes)``, or ``(FAILED, ItemError)`` when ``value`` cannot be pickled."""
        try:
            return PICKLED, dumps_value(value)
        except MemoryError as e:
            error = exception_error(e)
            return FAILED, memory_error(self.mem_limit, error) if self.mem_limit is not None else error
        except BaseException as e:
            return FAILED, ItemError(
                ErrorKind.SERIALIZATION,
                type(e).__qualname__,
                f"the output ({type(value).__name__}) could not be pickled to send back: {e}",
            )

    def _keep(self, index: int, attempt: int, code: int, payload: Any, t0: float, t1: float) -> int | None:
        """Queue an item's outcome to send (called with the lock held; see
        :meth:`_open_rows`). Returns how many that record holds now."""
        rows = self._open_rows()
        rows.append((index, attempt, code, payload, t0, t1))
        return len(rows)

    def fail_current(self, error: ItemError) -> bool:
        """Report the running item as failed with ``error`` now; False if none runs."""
        with self._lock:
            cur = self._current
            if cur is None:
                return False
            self._take_done()  # (the items before it first)
            self._announce()
            self._current = None
            if self._metrics.pending:
                self._records += self._metrics.take(self.task_id, (cur[0], cur[1]))
            self._records.append(Finished(self.task_id, cur[0], cur[1], False, error, cur[2], time.monotonic()))
        self.flush()
        return True

    def end_task(self, error: ItemError | None = None, all_items: bool = False, retire: bool = False) -> None:
        """Close the task; with ``retire``, tell the pool this worker takes no more work."""
        with self._lock:
            self._take_done()
            self._records.append(Ended(self.task_id, error, all_items))
            if retire:
                self._records.append(Retiring())
        self.flush()

    def flush(self) -> None:
        with self._send_lock:
            with self._lock:
                self._take_done()  # (the items that ended before the running one started)
                self._announce()
                recs, self._records = self._records, []
                if self._metrics.pending:  # the running item's, after its "started"
                    recs += self._metrics.take(self.task_id)
            if not recs:
                return
            for k, r in enumerate(recs):
                if type(r) is list:  # a Log record still collecting chunks
                    _, task_id, index, attempt, stream, chunks = r
                    recs[k] = Log(task_id, index, attempt, stream, "".join(chunks))
                elif type(r) is _OpenRows:
                    recs[k] = Outcomes(r.task_id, r.rows)
            self._conn.send_bytes(pickle.dumps(recs, protocol=pickle.HIGHEST_PROTOCOL))

    def _tick(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                if self._on_tick is not None:
                    self._on_tick()
                self.flush()
            except OSError:  # the parent went away; the main loop notices too
                return
