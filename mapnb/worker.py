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
import mmap
import os
import pickle
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ._code import restore_origin
from .errors import ItemError
from .logs import BoundedText
from .protocol import LOG, Ended, Finished, Item, Log, Retiring, Started

log = logging.getLogger(__name__)

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


def memory_error(spec: Any, cause: ItemError | None = None) -> ItemError:
    """The item's ``MemoryLimitExceeded`` when an allocation failed under its limit."""
    why = f" ({cause.one_line()})" if cause is not None else ""
    return ItemError(
        "memory",
        "MemoryLimitExceeded",
        f"the item exceeded its limit mem={spec}: an allocation failed{why}",
        cause.traceback if cause is not None else "",
    )


def _ours(globals_: dict[str, Any]) -> bool:
    name = globals_.get("__name__", "")
    return name == "mapnb" or name.startswith("mapnb.")


def run_items(
    job: Any,
    items: Iterable[Item],
    emit: Emitter,
    set_capture: Callable[[Capture | None], None],
    stop: Callable[[], bool] | None = None,
    mem_limit: Any = None,
) -> None:
    """Run each item of ``job`` (a backends.Job) in order, capturing its output and
    giving it its context (mapnb.current_context()); report everything, raise nothing.

    ``mem_limit`` (the item's ``limits.mem``, where a kernel limit enforces it) turns a
    ``MemoryError`` into the item's ``MemoryLimitExceeded``."""
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
            if mem_limit is not None and isinstance(e, MemoryError):
                error = memory_error(mem_limit, error)
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

    def __init__(
        self,
        conn: Any,
        interval: float = 0.05,
        on_tick: Callable[[], None] | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._conn = conn
        self._on_tick = on_tick
        self._ledger = ledger
        self.mem_limit: Any = None  # limits.mem of the running job, where a kernel limit holds it
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
            self._records.append(Started(self.task_id, cur[0], cur[1], cur[2]))
            cur[3] = True

    def started(self, index: int, attempt: int, t0: float) -> None:
        if self._ledger is not None:  # before the item runs: a crash is then known to be its
            self._ledger.write(self.task_id, index, attempt)
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
            except MemoryError as e:
                ok = False
                payload = exception_error(e)
                if self.mem_limit is not None:
                    payload = memory_error(self.mem_limit, payload)
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
            self._keep(Finished(self.task_id, index, attempt, ok, payload, t0, t1))

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
            self._records.append(Finished(self.task_id, cur[0], cur[1], False, error, cur[2], time.monotonic()))
        self.flush()
        return True

    def end_task(self, error: ItemError | None = None, all_items: bool = False, retire: bool = False) -> None:
        """Close the task; with ``retire``, tell the pool this worker takes no more work."""
        with self._lock:
            self._records.append(Ended(self.task_id, error, all_items))
            if retire:
                self._records.append(Retiring())
        self.flush()

    def flush(self) -> None:
        with self._send_lock:
            with self._lock:
                self._announce()
                recs, self._records = self._records, []
            if not recs:
                return
            for k, r in enumerate(recs):
                if type(r) is list:  # a Log record still collecting chunks
                    recs[k] = Log(*r[1:5], "".join(r[5]))
            self._conn.send_bytes(pickle.dumps(recs, protocol=pickle.HIGHEST_PROTOCOL))

    def _tick(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                if self._on_tick is not None:
                    self._on_tick()
                self.flush()
            except OSError:  # the parent went away; the main loop notices too
                return


class Ledger:
    """Which item a local worker runs, in memory its pool reads after the worker died.

    The worker writes ``(task_id, index, attempt)`` before each item starts; outcomes
    travel in batches and die with the worker, but the ledger says which item was
    running, so a crash fails that item and no other. A page of shared memory (a memfd
    created by the pool), written with one store: nothing to flush, nothing to lose.
    """

    SIZE = 4096
    _FORMAT = "<qqq"

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, self.SIZE)

    def write(self, task_id: int, index: int, attempt: int) -> None:
        struct.pack_into(self._FORMAT, self._map, 0, task_id, index, attempt)

    def read(self) -> tuple[int, int, int]:
        return struct.unpack_from(self._FORMAT, self._map, 0)  # type: ignore[return-value]

    def close(self) -> None:
        self._map.close()


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
                try:
                    size = os.fstat(store).st_size
                    if size <= pos:
                        continue
                    data = os.pread(store, size - pos, pos)
                except OSError:  # an item closed it: the worker retires after the item
                    continue
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

    def repair(self) -> bool:
        """Point fds 1 and 2 at their capture files again if an item closed or moved them.

        False when that cannot be done (the item closed the files themselves): the worker
        must then retire, or every later item on it would fail.
        """
        with self._lock:
            for name, store, _original, _pos, _decoder in self._streams:
                fd = 1 if name == "stdout" else 2
                try:
                    want = os.fstat(store)
                except OSError:
                    return False
                try:
                    have = os.fstat(fd)
                    if (have.st_dev, have.st_ino) == (want.st_dev, want.st_ino):
                        continue
                except OSError:
                    pass  # closed
                try:
                    os.dup2(store, fd)
                except OSError:
                    return False
        return True


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
    _apply_setting(job.cwd, job.sys_path, job.env)


def _apply_setting(cwd: str | None, sys_path: Any, env: dict[str, str] | None) -> None:
    if cwd and os.getcwd() != cwd:
        try:
            os.chdir(cwd)
        except OSError:
            log.warning("could not change to the caller's directory %s", cwd)
    if sys_path is not None and sys.path != list(sys_path):
        sys.path[:] = sys_path
    if env is not None and os.environ != env:
        os.environ.clear()
        os.environ.update(env)


def job_setting(job: Any) -> tuple[Any, ...]:
    """What a worker must apply before it can unpickle ``job``: a module on the caller's
    sys.path is imported by name, so the path must be there first."""
    return (job.cwd, job.sys_path, job.env)


def _load_job(blob: Any) -> Any:
    """The job from ``(setting, job_bytes)``, or the ItemError that every one of its
    tasks gets on this worker when it cannot be loaded."""
    try:
        setting, job_bytes = blob
        _apply_setting(*setting)
        job = pickle.loads(job_bytes)
        restore_origin(job.fn, job.origin)
        return job
    except BaseException as e:
        err = exception_error(e)
        return ItemError(
            "serialization", err.type, f"could not load the task function in the worker: {e}", err.traceback
        )


class _DataLimit:
    """limits.mem as a kernel limit too (``RLIMIT_DATA``), so that one big allocation
    fails at once with a ``MemoryError`` instead of outrunning the pool's RSS sampling.

    The soft limit is what the worker's data segment holds now plus *twice* the item's
    limit: a backstop against runaway allocations, while the sampling enforces the limit
    itself. The slack is there because the kernel counts address space reserved
    (``malloc``, private writable ``mmap``, thread stacks, BLAS buffers), not memory
    touched, so code that reserves far more than it uses could fail early; set
    ``MAPNB_RLIMIT_DATA=0`` to rely on the sampling alone. Child processes inherit it
    (each for itself).
    """

    def __init__(self) -> None:
        import resource

        self._resource = resource
        self._original = resource.getrlimit(resource.RLIMIT_DATA)
        self._set: int | None = None

    def apply(self, limit: int | None) -> bool:
        """Limit the data segment for a job with ``limit`` bytes (None: lift it); True
        if the kernel limit is in force. Call with the caller's environment applied."""
        res = self._resource
        hard = self._original[1]
        if limit is None or os.environ.get("MAPNB_RLIMIT_DATA", "1") == "0":
            if self._set is not None:
                self._set = None
                try:
                    res.setrlimit(res.RLIMIT_DATA, self._original)
                except (ValueError, OSError):
                    pass
            return False
        want = _data_size() + 2 * limit
        if hard != res.RLIM_INFINITY:
            want = min(want, hard)
        try:
            res.setrlimit(res.RLIMIT_DATA, (want, hard))
        except (ValueError, OSError):
            return False
        self._set = want
        return True


def _data_size() -> int:
    """This process's data segment (VmData) in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _become_subreaper() -> None:
    """Orphans of what the items start (a double fork, a daemon) become this worker's
    children instead of init's: they stay in its process tree, where the memory limit
    counts them and the worker kills them when it exits."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_descendants(pid: int) -> None:
    """SIGKILL every descendant of ``pid`` (Linux /proc), whatever its session or group."""
    from .resources import descendants

    for _ in range(3):  # what forks while we kill is found on the next pass
        found = descendants(pid)
        if not found:
            return
        for child in found:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass


def serve(conn: Any, ledger_fd: int | None = None) -> None:
    """The loop of a local worker process: run tasks until told to stop or orphaned.

    Messages in: ``("task", task_id, job_id, job | None, items_bytes, env)`` and
    ``("stop",)``. The job, ``(setting, job_bytes)`` (see :func:`job_setting`), comes with
    the first task of a job this worker has not seen; ``env`` is what this task adds to
    the environment (its GPUs). ``ledger_fd``: see :class:`Ledger`.

    On the way out the worker kills every process its items started and left running.
    """
    _become_subreaper()
    try:
        _serve(conn, Ledger(ledger_fd) if ledger_fd is not None else None)
    finally:
        kill_descendants(os.getpid())


def _serve(conn: Any, ledger: Ledger | None) -> None:
    # Process-wide, not per thread: text printed by threads an item starts belongs to it.
    current: list[Capture | None] = [None]
    fds = _FdCapture()

    def set_capture(cap: Capture | None) -> None:
        if cap is None:  # the item returned: what it wrote to fds 1 and 2 is in the files
            fds.drain(current[0])
        current[0] = cap

    outside = {n: open(fd, "w", buffering=1, closefd=False) for n, fd in fds.originals.items()}
    routers = (
        Router("stdout", outside["stdout"], lambda: current[0], fd=1),
        Router("stderr", outside["stderr"], lambda: current[0], fd=2),
    )
    sys.stdout, sys.stderr = routers
    data_limit = _DataLimit()
    outbox = Outbox(conn, on_tick=lambda: fds.drain(current[0]), ledger=ledger)
    jobs: dict[str, Any] = {}  # job id -> Job, or the ItemError its loading gave
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        _, task_id, job_id, job_blob, items_blob, env = msg
        outbox.task_id = task_id
        job = jobs.get(job_id)
        if job is None:
            if job_blob is None:  # cannot happen: the pool sends a job to a worker once
                job = ItemError("serialization", "LookupError", "the worker does not have the task function")
            else:
                job = _load_job(job_blob)
                if len(jobs) >= 4:
                    jobs.pop(next(iter(jobs)))
                jobs[job_id] = job
        if isinstance(job, ItemError):  # every task of a job that could not load says why
            outbox.end_task(job, all_items=True)
            continue
        try:
            _apply_environment(job)
            os.environ.update(env)  # this task's own (its GPUs)
            limit = job.limits.mem_bytes if job.limits is not None else None
            kernel = data_limit.apply(limit)
            outbox.mem_limit = job.limits.mem if kernel else None
            items = pickle.loads(items_blob)
        except BaseException as e:
            err = exception_error(e)
            err = ItemError(
                "serialization", err.type, f"could not load the inputs in the worker: {e}", err.traceback
            )
            outbox.end_task(err, all_items=True)
            continue
        outbox.first_of_task = True
        run_items(job, items, outbox, set_capture, mem_limit=outbox.mem_limit)
        # An item may have closed or redirected the standard streams: later items must
        # not inherit that. A worker that cannot be repaired takes no more work.
        sys.stdout, sys.stderr = routers
        if not fds.repair():
            outbox.end_task(retire=True)
            return
        outbox.end_task()
