"""What runs where the items run: log capture, timing, outcomes.

:func:`run_items` executes one task (a batch of items of one job) and reports through an
:class:`Emitter`; it never raises. In-process backends (sequential, threads) call it with
an emitter that reports straight to the engine; the local process pool calls :func:`serve`
in each worker process, whose emitter batches reports into a pipe.
"""

from __future__ import annotations

import codecs
import collections
import collections.abc
import fcntl
import io
import logging
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .errors import ItemError

log = logging.getLogger(__name__)

LOG_HEAD = 512 * 1024  # characters of an item's output kept from the start ...
LOG_TAIL = 512 * 1024  # ... and from the end; what lies between is dropped with a marker

# Report kinds, the first field of every report tuple a backend sends to the engine:
#   (STARTED, task_id, index, attempt, t0)
#   (LOG, task_id, index, attempt, stream, text)
#   (FINISHED, task_id, index, attempt, ok, value_or_ItemError, t0, t1)
#   (ENDED, task_id, error_or_None, all_items)
# ENDED closes a task. With an error, the first unfinished item failed with it (a dead
# worker), or every unfinished item did when all_items is true (the batch could not load);
# unfinished items without an error go back to the queue.
STARTED, LOG, FINISHED, ENDED = "s", "l", "f", "e"

Item = tuple[int, int, tuple[Any, ...]]  # (index, attempt, args)


class BoundedText:
    """Keeps the first ``head`` and the last ``tail`` characters of a stream of tagged text.

    ``add`` returns the part of the text that falls in the head (to keep or stream at
    once); later text waits in a rolling tail until :meth:`tail_chunks`.
    """

    __slots__ = ("_head_left", "_tail", "_tail_len", "_tail_limit", "dropped")

    def __init__(self, head: int = LOG_HEAD, tail: int = LOG_TAIL) -> None:
        self._head_left = head
        self._tail: collections.deque[list[str]] = collections.deque()
        self._tail_len = 0
        self._tail_limit = tail
        self.dropped = 0

    def add(self, tag: str, text: str) -> str:
        if self._head_left >= len(text):
            self._head_left -= len(text)
            return text
        kept, rest = text[: self._head_left], text[self._head_left :]
        self._head_left = 0
        self._tail.append([tag, rest])
        self._tail_len += len(rest)
        while self._tail_len > self._tail_limit:
            excess = self._tail_len - self._tail_limit
            first = self._tail[0]
            if len(first[1]) <= excess:
                self._tail.popleft()
                cut = len(first[1])
            else:
                first[1] = first[1][excess:]
                cut = excess
            self._tail_len -= cut
            self.dropped += cut
        return kept

    def tail_chunks(self) -> list[tuple[str, str]]:
        """The marker for dropped text (if any) and the tail, as (tag, text) chunks."""
        out = []
        if self.dropped:
            out.append(("stderr", f"\n[mapnb: {self.dropped:,} characters of output dropped here]\n"))
        out += [(tag, text) for tag, text in self._tail]
        return out


class Emitter(Protocol):
    """Where :func:`run_items` reports to."""

    def started(self, index: int, attempt: int, t0: float) -> None: ...

    def log(self, index: int, attempt: int, stream: str, text: str) -> None: ...

    def finished(
        self, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float, t1: float
    ) -> None: ...


class Capture:
    """Collects what one attempt of one item writes, within the head/tail bound."""

    __slots__ = ("index", "attempt", "_emit", "_bound")

    def __init__(self, index: int, attempt: int, emit: Emitter) -> None:
        self.index, self.attempt, self._emit = index, attempt, emit
        self._bound = BoundedText()

    def write(self, stream: str, text: str) -> None:
        kept = self._bound.add(stream, text)
        if kept:
            self._emit.log(self.index, self.attempt, stream, kept)

    def close(self) -> None:
        for stream, text in self._bound.tail_chunks():
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
    return ItemError("exception", type(exc).__qualname__, str(exc), text)


def _ours(globals_: dict[str, Any]) -> bool:
    name = globals_.get("__name__", "")
    return name == "mapnb" or name.startswith("mapnb.")


def run_items(
    job: Any,
    items: Iterable[Item],
    emit: Emitter,
    set_capture: Callable[[Capture | None], None],
    stop: Callable[[], bool] | None = None,
) -> None:
    """Run each item of ``job`` (a backends.Job) in order, capturing its output and
    giving it its context (mapnb.current_context()); report everything, raise nothing."""
    from .context import enter_item, leave_item

    fn, names, clock = job.fn, job.names, time.monotonic
    for index, attempt, args in items:
        if stop is not None and stop():
            return
        cap = Capture(index, attempt, emit)
        t0 = clock()
        emit.started(index, attempt, t0)
        set_capture(cap)
        token = enter_item(job.checkpoints, job.run_id, index, attempt)
        try:
            value, error, ok = settle(fn(**dict(zip(names, args)))), None, True
        except BaseException as e:  # the item's failure, whatever it is, is its own
            value, error, ok = None, exception_error(e), False
        finally:
            leave_item(token)
            set_capture(None)
        cap.close()
        emit.finished(index, attempt, ok, value, error, t0, clock())


def settle(value: Any) -> Any:
    """The output of an item: what an ``async def`` task's coroutine returns, run to
    completion here in an event loop of its own; any other value as it is.

    Flyte 2 tasks are ``async def``; without this each item would return an unpicklable
    coroutine that was never awaited. The coroutine's exception is re-raised with the
    traceback from the task's own frame on, without asyncio's frames.
    """
    if not isinstance(value, collections.abc.Coroutine):
        return value
    import asyncio

    code = getattr(value, "cr_code", None)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop runs in this thread
        nested = False
    else:
        nested = True
    try:
        if not nested:
            return asyncio.run(value)
        # A loop runs in this thread already (an in-process backend called from async
        # code): asyncio.run cannot nest, so the coroutine gets a thread of its own.
        box: list[Any] = []

        def run() -> None:
            try:
                box.append((True, asyncio.run(value)))
            except BaseException as e:  # noqa: BLE001 - handed to the item below
                box.append((False, e))

        thread = threading.Thread(target=run, name="mapnb-coroutine", daemon=True)
        thread.start()
        thread.join()
        ok, result = box[0]
        if not ok:
            raise result
        return result
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        if tb is None:
            raise
        raise e.with_traceback(tb)  # noqa: B904 - the same exception, its traceback trimmed


# --------------------------------------------------------------------------------------
# The worker process of the local backend.


def dumps_value(value: Any) -> bytes:
    """Pickle an output to send back: plain pickle first, cloudpickle for notebook classes."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class Outbox:
    """The worker's emitter: collects reports and sends them in batches.

    A background thread flushes every ``interval`` seconds so that logs and "started"
    stream while an item runs; the main thread flushes at the end of each task. An item
    that finishes between two flushes sends no "started" at all.
    """

    def __init__(self, conn: Any, interval: float = 0.05, on_tick: Callable[[], None] | None = None) -> None:
        self._conn = conn
        self._on_tick = on_tick
        self._lock = threading.Lock()  # guards _records and _current
        self._send_lock = threading.Lock()  # keeps batches in order on the wire
        self._records: list[Any] = []
        self._current: list[Any] | None = None  # [index, attempt, t0, announced]
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
            self._records.append((STARTED, self.task_id, cur[0], cur[1], cur[2]))
            cur[3] = True

    def started(self, index: int, attempt: int, t0: float) -> None:
        with self._lock:
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

    def finished(
        self, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float, t1: float
    ) -> None:
        payload: Any
        if ok:
            try:
                payload = dumps_value(value)
            except BaseException as e:
                ok = False
                payload = ItemError(
                    "serialization",
                    type(e).__qualname__,
                    f"the output ({type(value).__name__}) could not be pickled to send back: {e}",
                )
        else:
            payload = error
        with self._lock:
            self._current = None
            self._keep((FINISHED, self.task_id, index, attempt, ok, payload, t0, t1))

    def _keep(self, record: tuple[Any, ...]) -> None:
        """Queue an item's outcome to send (called with the lock held)."""
        self._records.append(record)

    def fail_current(self, error: ItemError) -> bool:
        """Report the running item as failed with ``error`` now; False if none runs."""
        with self._lock:
            cur = self._current
            if cur is None:
                return False
            self._announce()
            self._current = None
            self._records.append(
                (FINISHED, self.task_id, cur[0], cur[1], False, error, cur[2], time.monotonic())
            )
        self.flush()
        return True

    def end_task(self, error: ItemError | None = None, all_items: bool = False) -> None:
        with self._lock:
            self._records.append((ENDED, self.task_id, error, all_items))
        self.flush()

    def flush(self) -> None:
        with self._send_lock:
            with self._lock:
                self._announce()
                recs, self._records = self._records, []
            if not recs:
                return
            for k, r in enumerate(recs):
                if type(r) is list:  # a LOG record still collecting chunks
                    recs[k] = (*r[:5], "".join(r[5]))
            self._conn.send_bytes(pickle.dumps(recs, protocol=pickle.HIGHEST_PROTOCOL))

    def _tick(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                if self._on_tick is not None:
                    self._on_tick()
                self.flush()
            except OSError:  # the parent went away; the main loop notices too
                return


class _FdCapture:
    """What native code and child processes write to file descriptors 1 and 2.

    Both descriptors point at in-memory files; :meth:`drain` hands the new bytes to the
    running item's capture (at the end of each item, and on every outbox tick while it
    runs), or passes them on to the original descriptors when no item runs.
    """

    _COMPACT = 1 << 20  # bytes consumed before the files are emptied between items

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[list[Any]] = []  # [name, store fd, original fd, read position, decoder]
        self.originals: dict[str, int] = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            store = _anonymous_file(name)
            fcntl.fcntl(store, fcntl.F_SETFL, fcntl.fcntl(store, fcntl.F_GETFL) | os.O_APPEND)
            original = os.dup(fd)
            os.dup2(store, fd)
            self.originals[name] = original
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            self._streams.append([name, store, original, 0, decoder])

    def drain(self, cap: Capture | None) -> None:
        with self._lock:
            for s in self._streams:
                name, store, original, pos, decoder = s
                size = os.fstat(store).st_size
                if size <= pos:
                    continue
                data = os.pread(store, size - pos, pos)
                s[3] = pos + len(data)
                if cap is not None:
                    text = decoder.decode(data)
                    if text:
                        cap.write(name, text)
                else:
                    _write_all(original, data)
                    if s[3] > self._COMPACT:  # nothing runs, so nothing writes: start afresh
                        os.ftruncate(store, 0)
                        s[3] = 0


def _anonymous_file(name: str) -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create(f"mapnb-{name}")
    fd, path = tempfile.mkstemp(prefix=f"mapnb-{name}-")
    os.unlink(path)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:  # the terminal went away: drop it
            return


def _apply_environment(job: Any) -> None:
    """Make the worker see the caller's working directory, sys.path and environment."""
    if job.cwd and os.getcwd() != job.cwd:
        try:
            os.chdir(job.cwd)
        except OSError:
            log.warning("could not change to the caller's directory %s", job.cwd)
    if job.sys_path is not None and sys.path != list(job.sys_path):
        sys.path[:] = job.sys_path
    if job.env is not None and os.environ != job.env:
        os.environ.clear()
        os.environ.update(job.env)


class _MemoryGuard:
    """limits.mem, per item: a worker (and its children) grown past it fails the item
    that runs and stops itself, so that siblings on other workers go on unharmed."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self.spec: Any = None

    def check(self, outbox: Outbox) -> None:
        if self.limit is None:
            return
        from .resources import format_memory, rss_of_tree

        used = rss_of_tree(os.getpid())
        if used <= self.limit:
            return
        err = ItemError(
            "memory",
            "MemoryLimitExceeded",
            f"the item used {format_memory(used)}, which exceeded its limit mem={self.spec}; its worker was stopped",
        )
        if outbox.fail_current(err):
            os.killpg(os.getpgrp(), signal.SIGKILL)  # this worker and what it started


def serve(conn: Any) -> None:
    """The loop of a local worker process: run tasks until told to stop or orphaned.

    Messages in: ``("task", task_id, job_id, job_bytes | None, items_bytes, env)`` and
    ``("stop",)``. Job bytes come with the first task of a job this worker has not seen;
    ``env`` is what this task adds to the environment (its GPUs).
    """
    # Process-wide, not per thread: text printed by threads an item starts belongs to it.
    current: list[Capture | None] = [None]
    fds = _FdCapture()

    def set_capture(cap: Capture | None) -> None:
        if cap is None:  # the item returned: what it wrote to fds 1 and 2 is in the files
            fds.drain(current[0])
        current[0] = cap

    outside = {n: open(fd, "w", buffering=1, closefd=False) for n, fd in fds.originals.items()}
    sys.stdout = Router("stdout", outside["stdout"], lambda: current[0], fd=1)
    sys.stderr = Router("stderr", outside["stderr"], lambda: current[0], fd=2)
    guard = _MemoryGuard()

    def on_tick() -> None:
        fds.drain(current[0])
        guard.check(outbox)

    outbox = Outbox(conn, on_tick=on_tick)
    jobs: dict[str, Any] = {}
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        _, task_id, job_id, job_blob, items_blob, env = msg
        outbox.task_id = task_id
        try:
            job = jobs.get(job_id)
            if job is None:
                job = pickle.loads(job_blob)
                if len(jobs) >= 4:
                    jobs.pop(next(iter(jobs)))
                jobs[job_id] = job
            _apply_environment(job)
            os.environ.update(env)  # this task's own (its GPUs)
            guard.limit = job.limits.mem_bytes if job.limits is not None else None
            guard.spec = job.limits.mem if job.limits is not None else None
            items = pickle.loads(items_blob)
        except BaseException as e:
            what = "the task function" if job_id not in jobs else "the inputs"
            err = exception_error(e)
            err = ItemError(
                "serialization", err.type, f"could not load {what} in the worker: {e}", err.traceback
            )
            outbox.end_task(err, all_items=True)
            continue
        outbox.first_of_task = True
        run_items(job, items, outbox, set_capture)
        outbox.end_task()
