"""The loop of a local worker process, and what keeps it safe to reuse.

A worker is forked by the fork server (:mod:`mapnb.backends.local._zygote`) and runs
:func:`serve`: it takes tasks from its pipe, runs them with :func:`mapnb.worker.run_items`
(outcomes batched back through an :class:`~mapnb.worker.Outbox`), captures what native
code writes to file descriptors 1 and 2, keeps a memory limit, writes which item it runs
to a :class:`Ledger` the pool reads if it dies, and kills what its items left running.
"""

from __future__ import annotations

import codecs
import dataclasses
import fcntl
import functools
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
from typing import Any

from ..._code import restore_origin
from ...errors import ErrorKind, ItemError
from ...worker import Capture, Outbox, Router, exception_error, run_items

log = logging.getLogger(__name__)


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
        # write(task_id, index, attempt), once per item: a call straight into C.
        self.write = functools.partial(struct.Struct(self._FORMAT).pack_into, self._map, 0)

    def read(self) -> tuple[int, int, int]:
        return struct.unpack_from(self._FORMAT, self._map, 0)

    def close(self) -> None:
        self._map.close()


class _FdCapture:
    """What native code and child processes write to file descriptors 1 and 2.

    Both descriptors point at in-memory files; :meth:`drain` hands the new bytes to the
    running item's capture (at the end of each item, and on every outbox tick while it
    runs), or passes them on to the original descriptors when no item runs.
    """

    _COMPACT = 1 << 20  # bytes consumed before the files are emptied between items
    # Where the capture files' text starts (a hole before it takes no memory): an fd an
    # item moved to a new, empty file (size 0) can then never pass for its capture file
    # in _quiet's size check.
    _ORIGIN = 1_000_003

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # [name, store fd, original fd, read position, decoder, fd (1 or 2), store's (dev, inode)]
        self._streams: list[list[Any]] = []
        self.originals: dict[str, int] = {}
        # Whether the last drain found fds 1 and 2 on their capture files: the repair
        # before the next item then has nothing to check (one fstat per stream per item,
        # not three: they were ~3.5 us of a trivial item's ~11 us in the worker).
        self._intact = False
        self._flags_due = 0.0  # when _quiet compares the fds' flags again
        for fd, name in ((1, "stdout"), (2, "stderr")):
            store = _anonymous_file(name)
            fcntl.fcntl(store, fcntl.F_SETFL, fcntl.fcntl(store, fcntl.F_GETFL) | os.O_APPEND | os.O_NONBLOCK)
            self._flags = fcntl.fcntl(store, fcntl.F_GETFL)  # (see _quiet)
            os.ftruncate(store, self._ORIGIN)
            original = os.dup(fd)
            os.dup2(store, fd)
            self.originals[name] = original
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            st = os.fstat(store)
            self._streams.append([name, store, original, self._ORIGIN, decoder, fd, (st.st_dev, st.st_ino)])

    def drain(self, cap: Capture | None, now: float | None = None) -> None:
        """Hand what was written to fds 1 and 2 to ``cap`` (or pass it on, with no item
        running). ``now``: the monotonic clock, if the caller has just read it."""
        # The usual case without the lock: a concurrent drain (the outbox's tick) that
        # read new bytes has moved the positions on by the time they equal the sizes.
        if self._quiet(now):
            self._intact = True
            return
        with self._lock:
            if self._quiet():
                self._intact = True
                return
            intact = True
            for s in self._streams:
                found, data = self._new_bytes(s)
                intact = intact and found
                if not data:
                    continue
                name, original, decoder = s[0], s[2], s[4]
                s[3] += len(data)
                if cap is not None:
                    text = decoder.decode(data)
                    if text:
                        cap.write(name, text)
                else:
                    _write_all(original, data)
                    if s[3] - self._ORIGIN > self._COMPACT:  # nothing runs, so nothing writes: start afresh
                        os.ftruncate(s[1], self._ORIGIN)
                        s[3] = self._ORIGIN
            self._intact = intact

    def _quiet(self, now: float | None = None) -> bool:
        """The usual case: fds 1 and 2 are still on their capture files and nothing was
        written to those since the last read. Checked with one ``lseek(SEEK_END)`` on each
        of fds 1 and 2 (0.2 us each; this runs after every item, and a trivial item costs
        about a microsecond): while an fd is its capture file's own open description, that
        gives the file's size, and a size equal to what was read means nothing new. An fd
        an item closed or moved to a pipe or terminal fails (EBADF, ESPIPE); one moved to
        another file gives that file's size, different but for a coincidence. For that
        coincidence, at most once a millisecond the fds' flags are compared as well: the
        capture files' open descriptions carry O_NONBLOCK (meaningless for a file) besides
        O_RDWR and O_APPEND, and an fd with other flags is no capture file. Anything else
        sends the caller to the thorough path. (Moving the shared offset is harmless:
        every write appends, every read is a pread.)"""
        out, err = self._streams
        try:
            if os.lseek(1, 0, os.SEEK_END) != out[3] or os.lseek(2, 0, os.SEEK_END) != err[3]:
                return False
            if now is None:
                now = time.monotonic()
            if now < self._flags_due:
                return True
            self._flags_due = now + 0.001
            flags, getfl = self._flags, fcntl.F_GETFL
            return fcntl.fcntl(1, getfl) == flags and fcntl.fcntl(2, getfl) == flags
        except OSError:
            return False

    @staticmethod
    def _new_bytes(s: list[Any]) -> tuple[bool, bytes]:
        """Whether fd 1 (or 2) is still on its capture file, and the bytes written to that
        file since the last read. One fstat of the fd says both (it shares the file's
        inode); the capture file's own descriptor is read only when the fd moved."""
        _name, store, _original, pos, _decoder, fd, ident = s
        try:
            st = os.fstat(fd)
            found = (st.st_dev, st.st_ino) == ident
        except OSError:  # closed
            found = False
        sources = (fd, store) if found else (store,)
        if found:
            size = st.st_size
        else:
            try:
                other = os.fstat(store)
            except OSError:  # an item closed it: the worker retires after the item
                return found, b""
            if (other.st_dev, other.st_ino) != ident:  # ... and its number went to another file
                return found, b""
            size = other.st_size
        if size <= pos:
            return found, b""
        for src in sources:
            try:
                return found, os.pread(src, size - pos, pos)
            except OSError:  # reopened write-only, say: the capture file's own fd can read it
                continue
        return found, b""

    def repair(self) -> bool:
        """Point fds 1 and 2 at their capture files again if an item closed or moved them.

        False when that cannot be done (the item closed the files themselves): the worker
        must then retire, or every later item on it would fail.
        """
        with self._lock:
            if self._intact:  # the drain after the last item found them in place
                self._intact = False
                return True
            for _name, store, _original, _pos, _decoder, fd, ident in self._streams:
                try:
                    want = os.fstat(store)
                except OSError:
                    return False
                if (want.st_dev, want.st_ino) != ident:  # closed, its number taken by another file
                    return False
                try:
                    have = os.fstat(fd)
                    if (have.st_dev, have.st_ino) == ident:
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


FUNCTIONS_KEPT = 4  # task functions a worker keeps loaded between runs (the latest used)

# Function key -> the unpickled task function (see pool.JobBlob), most recently used last.
# One per worker process: a worker runs one task at a time.
_functions: dict[str, Any] = {}
loads = 0  # functions this worker has unpickled (for tests: how often reuse failed)


def _load_job(blob: Any) -> Any:
    """The job from ``(setting, function key, function bytes, job bytes)``, or the
    ItemError that every one of its tasks gets on this worker when it cannot be loaded.

    The function is unpickled only when this worker does not have the function of that
    key already (the same map run again): unpickling a flytekit task took most of a short
    run's time. The job's other fields (run id, checkpoints, limits...) are this run's."""
    try:
        setting, key, fn_bytes, job_bytes = blob
        _apply_setting(*setting)
        job = pickle.loads(job_bytes)
        fn = _function(key, fn_bytes)
        restore_origin(fn, job.origin)
        return dataclasses.replace(job, fn=fn)
    except BaseException as e:
        err = exception_error(e)
        return ItemError(
            ErrorKind.SERIALIZATION, err.type, f"could not load the task function in the worker: {e}", err.traceback
        )


def _function(key: str, fn_bytes: bytes) -> Any:
    """The function of ``key``: the one loaded before, or ``fn_bytes`` unpickled (a
    failure is not kept: a later run, its setting fixed, tries again)."""
    global loads
    fn = _functions.pop(key, None)
    if fn is None:
        fn = pickle.loads(fn_bytes)
        loads += 1
        while len(_functions) >= FUNCTIONS_KEPT:
            _functions.pop(next(iter(_functions)))
    _functions[key] = fn
    return fn


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
    from ...resources import descendants

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
    ``("stop",)``. The job, ``(setting, function key, function bytes, job bytes)`` (see
    :func:`job_setting` and :func:`_load_job`), comes with the first task of a job this
    worker has not seen; ``env`` is what this task adds to
    the environment (its GPUs). ``ledger_fd``: see :class:`Ledger`.

    On the way out the worker kills every process its items started and left running.
    """
    _become_subreaper()
    try:
        _serve(conn, Ledger(ledger_fd) if ledger_fd is not None else None)
    finally:
        kill_descendants(os.getpid())


def _known_job(jobs: dict[str, Any], job_id: str, job_blob: Any) -> Any:
    """The job of a task: loaded from ``job_blob`` the first time (the four latest kept;
    its function maybe kept from an earlier job, see :func:`_load_job`), or the ItemError
    that loading it gave."""
    job = jobs.get(job_id)
    if job is not None:
        return job
    if job_blob is None:  # cannot happen: the pool sends a job to a worker once
        return ItemError(ErrorKind.SERIALIZATION, "LookupError", "the worker does not have the task function")
    job = _load_job(job_blob)
    if len(jobs) >= 4:
        jobs.pop(next(iter(jobs)))
    jobs[job_id] = job
    return job


def _prepare(job: Any, env: dict[str, str], items_blob: bytes, data_limit: _DataLimit, outbox: Outbox) -> Any:
    """Set up this process for a task of ``job`` (its environment, GPUs and memory limit);
    return the task's items."""
    _apply_environment(job)
    os.environ.update(env)  # this task's own (its GPUs)
    limit = job.limits.mem_bytes if job.limits is not None else None
    kernel = data_limit.apply(limit)
    outbox.mem_limit = job.limits.mem if kernel else None
    return pickle.loads(items_blob)


class _Repair:
    """Called before each item of a task: the item before may have closed or redirected
    the standard streams, which the next must not inherit. True once fds 1 and 2 cannot be
    repaired: the task then ends there (its other items go back to the queue, to another
    worker) and this worker retires."""

    def __init__(self, routers: tuple[Router, Router], fds: _FdCapture) -> None:
        self.routers, self.fds, self.broken = routers, fds, False

    def __call__(self) -> bool:
        out, err = self.routers
        if sys.stdout is not out or sys.stderr is not err:
            sys.stdout, sys.stderr = out, err
        if not self.broken and not self.fds.repair():
            self.broken = True
        return self.broken


class _Lane:
    """What :func:`~mapnb.worker.run_items` calls around each item on a local worker, in
    two calls (a trivial item costs about a microsecond here, each Python call a tenth of
    that): before it, the streams repaired if the item before broke them, the item noted
    in the ledger and the outbox, its output routed to its capture; after it, what it
    wrote to fds 1 and 2 collected and its outcome queued."""

    __slots__ = ("emit", "_current", "_fds", "_routers", "_repair", "_started", "_finished")

    def __init__(
        self, outbox: Outbox, current: list[Capture | None], fds: _FdCapture, routers: tuple[Router, Router]
    ) -> None:
        self.emit, self._current, self._fds, self._routers = outbox, current, fds, routers
        self._repair = _Repair(routers, fds)
        self._started, self._finished = outbox.started, outbox.finished

    def begin(self, cap: Capture, index: int, attempt: int, t0: float) -> bool:
        fds, (out, err) = self._fds, self._routers
        if fds._intact and sys.stdout is out and sys.stderr is err:
            fds._intact = False  # the usual case: the drain after the last item found all in place
        elif self._repair():
            return False
        self._started(index, attempt, t0)
        self._current[0] = cap
        return True

    def end(
        self, cap: Capture, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float
    ) -> None:
        t1 = time.monotonic()
        self._fds.drain(cap, t1)  # what it wrote to fds 1 and 2, if anything
        self._current[0] = None
        if cap._bound is not None:  # it printed: send the tail held back
            cap.close()
        self._finished(index, attempt, ok, value, error, t0, t1)


def _serve(conn: Any, ledger: Ledger | None) -> None:
    # Process-wide, not per thread: text printed by threads an item starts belongs to it.
    current: list[Capture | None] = [None]
    fds = _FdCapture()
    outside = {n: open(fd, "w", buffering=1, closefd=False) for n, fd in fds.originals.items()}
    routers = (
        Router("stdout", outside["stdout"], lambda: current[0], fd=1),
        Router("stderr", outside["stderr"], lambda: current[0], fd=2),
    )
    sys.stdout, sys.stderr = routers
    data_limit = _DataLimit()
    outbox = Outbox(conn, on_tick=lambda: fds.drain(current[0]), ledger=ledger)
    lane = _Lane(outbox, current, fds, routers)
    beyond_repair = lane._repair
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
        job = _known_job(jobs, job_id, job_blob)
        if isinstance(job, ItemError):  # every task of a job that could not load says why
            outbox.end_task(job, all_items=True)
            continue
        try:
            items = _prepare(job, env, items_blob, data_limit, outbox)
        except BaseException as e:
            err = exception_error(e)
            err = ItemError(
                ErrorKind.SERIALIZATION, err.type, f"could not load the inputs in the worker: {e}", err.traceback
            )
            outbox.end_task(err, all_items=True)
            continue
        outbox.first_of_task = True
        run_items(job, items, lane, mem_limit=outbox.mem_limit)
        if beyond_repair():  # a worker that cannot be repaired takes no more work
            outbox.end_task(retire=True)
            return
        outbox.end_task()
