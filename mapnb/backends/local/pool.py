"""The default backend: a warm pool of worker processes on this machine.

One pool per process (per notebook kernel) is kept warm between runs. Workers are forked
by a clean fork server (see :mod:`mapnb.backends.local._zygote`), each in its own session, so

- a worker that crashes (``os._exit``, a segfault, the OOM killer) fails only the item it
  was running; the pool replaces it and its siblings carry on;
- a timed-out, aborted or cancelled item is stopped by killing its worker's process
  group, children included;
- idle workers exit after ``idle_timeout`` seconds, and every worker dies with the caller.

A supervisor thread reads the workers' report batches and forwards them to the engine.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import itertools
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import sendfds
from pathlib import Path
from typing import Any

from ...errors import ErrorKind, InvalidMapError, ItemError, PoolBrokenError, worker_died
from ...protocol import ENDED, RETIRING, Ended
from ...resources import format_memory
from .._wire import dump_items, dumps, job_unpicklable, load_outputs
from ..base import Backend, ReportFn, Task, usable_cpus
from .serve import FUNCTIONS_KEPT, Ledger, job_setting

log = logging.getLogger(__name__)

IDLE_TIMEOUT = float(os.environ.get("MAPNB_IDLE_TIMEOUT", "120"))
ZYGOTE_EXIT_TIMEOUT = 5.0  # seconds shutdown() waits for the fork server before killing it


JobBlob = tuple[str, bytes, bytes]
"""A job as it travels to workers: ``(function key, function bytes, job bytes)``. The job is
pickled without its function, which is pickled alone and keyed by a hash of its bytes:
a worker that loaded that very function for an earlier run (the same map run again)
reuses it instead of unpickling it again; a function whose code or captured values
changed (an edited cell) has other bytes, hence another key, and is loaded anew."""


def dump_job(task: Task, report: ReportFn) -> JobBlob | None:
    """``task``'s job as a :data:`JobBlob`; None (the task reported as failed) when it
    cannot be pickled."""
    job = task.job
    try:
        fn = dumps(job.fn)
        rest = dumps(dataclasses.replace(job, fn=None))  # type: ignore[arg-type]  # (sent apart)
    except Exception as e:
        job_unpicklable(task, report, "a worker process", e)
        return None
    key = hashlib.blake2b(fn, digest_size=16)
    if job.origin is not None:  # the same code from another cell: its tracebacks name that cell
        key.update(job.origin[0].encode(errors="replace"))
    return key.hexdigest(), fn, rest


class _Worker:
    __slots__ = (
        "wid",
        "conn",
        "pid",
        "task",
        "report",
        "jobs",
        "functions",
        "idle_since",
        "doomed",
        "eof",
        "status",
        "send_lock",
        "ledger",
        "limit",
        "mem_spec",
        "over",
    )

    def __init__(self, wid: int, conn: Connection, ledger: Ledger) -> None:
        self.wid, self.conn, self.ledger = wid, conn, ledger
        self.limit: int | None = None  # the memory limit the fork server holds it to
        self.mem_spec: Any = None  # ... as the user wrote it
        self.over: int | None = None  # bytes used, when the fork server killed it for that
        self.pid: int | None = None
        self.task: int | None = None  # the task id it runs
        self.report: ReportFn | None = None
        self.jobs: list[str] = []  # job ids it has loaded, newest last (it keeps 4)
        self.functions: list[str] = []  # keys of the functions it was sent, newest last
        self.idle_since = time.monotonic()
        self.doomed = False  # killed or told to stop: never given work again
        self.eof = False
        self.status: int | None | bool = False  # False until the fork server reports the exit
        self.send_lock = threading.Lock()


class Pool:
    """Worker processes forked on demand, reused across runs, retired when idle."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._gone = threading.Condition(self._lock)  # notified when a worker is removed
        self._workers: dict[int, _Worker] = {}
        self._by_task: dict[int, _Worker] = {}
        self._wids = itertools.count(1)
        self._closed = False
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[3])  # the folder mapnb/ is in
        code = f"import sys; sys.path.insert(0, {root!r}); from mapnb.backends.local._zygote import main; main({theirs.fileno()})"
        self._zygote = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the caller only
        )
        theirs.close()
        self._sock = ours
        self._control = Connection(os.dup(ours.fileno()))
        self._control_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._supervise, name="mapnb-pool", daemon=True)
        self._thread.start()

    # -- called by the engine's thread ---------------------------------------------------

    def submit(
        self,
        task: Task,
        report: ReportFn,
        job_blob: JobBlob,
        items_blob: bytes,
        env: dict[str, str] | None = None,
    ) -> None:
        """Run ``task`` on an idle worker (a new one if none is idle). ``job_blob``: its
        job as :func:`dump_job` makes it, sent with the job's first task to each worker."""
        with self._lock:
            if self._closed:
                raise PoolBrokenError("the local pool was shut down")
            worker = self._idle_worker(task.job.id, job_blob[0]) or self._spawn()
            worker.task, worker.report = task.id, report
            self._by_task[task.id] = worker
            known = task.job.id in worker.jobs
            if not known:
                worker.jobs = [*worker.jobs[-3:], task.job.id]
                others = [k for k in worker.functions if k != job_blob[0]]  # (as the worker keeps them)
                worker.functions = [*others[-(FUNCTIONS_KEPT - 1) :], job_blob[0]]
            limits = task.job.limits
            limit = limits.mem_bytes if limits is not None else None
            worker.mem_spec = limits.mem if limits is not None else None
            if limit is not None:  # held to it by the fork server from now until the task ends
                worker.limit = limit
                self._send_control(("limit", worker.wid, limit))
        # The function's bytes go along with every new job, even to a worker that has
        # loaded it already (it then skips the unpickling): what the worker keeps is then
        # never the pool's guess.
        job = None if known else (job_setting(task.job), *job_blob)
        msg = pickle.dumps(("task", task.id, task.job.id, job, items_blob, env or {}), protocol=5)
        with worker.send_lock:
            try:
                worker.conn.send_bytes(msg)
            except OSError:
                pass  # it died; the supervisor reports the task as ended with the cause

    def kill(self, task_id: int) -> None:
        with self._lock:
            worker = self._by_task.get(task_id)
            if worker is None or worker.doomed:
                return
            worker.doomed = True
        self._send_control(("kill", worker.wid))

    def join(self, task_ids: list[int], timeout: float) -> bool:
        """Wait until no worker runs any of ``task_ids``; False on timeout."""
        wanted = set(task_ids)
        with self._gone:
            return self._gone.wait_for(lambda: not wanted & self._by_task.keys(), timeout)

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        with self._lock:
            return [w.pid for w in self._workers.values() if w.pid is not None]

    @property
    def zygote_pid(self) -> int:
        return self._zygote.pid

    def shutdown(self) -> None:
        """Stop every worker and the fork server. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            # The fork server kills its workers and exits on EOF. shutdown(), not close()
            # alone: the supervisor thread's poll holds the socket open until it returns
            # (up to a second), and the fork server would see the EOF only then.
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._control.close()
        except OSError:
            pass
        self._sock.close()
        try:
            self._zygote.wait(timeout=ZYGOTE_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._zygote.kill()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- internals ----------------------------------------------------------------------

    def _idle_worker(self, job_id: str, function: str) -> _Worker | None:
        """An idle worker: one that has the job, else one that has its function, else any."""
        best = warm = None
        for w in self._workers.values():
            if w.task is None and not w.doomed and not w.eof:
                if job_id in w.jobs:
                    return w
                if warm is None and function in w.functions:
                    warm = w
                best = best or w
        return warm or best

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        ledger_fd = os.memfd_create("mapnb-ledger") if hasattr(os, "memfd_create") else _temp_fd()
        try:
            os.ftruncate(ledger_fd, Ledger.SIZE)
            worker = _Worker(next(self._wids), Connection(ours.detach()), Ledger(ledger_fd))
            self._workers[worker.wid] = worker
            self._send_control(("spawn", worker.wid), fds=[theirs.fileno(), ledger_fd])
        finally:
            theirs.close()
            os.close(ledger_fd)  # the mapping stays
        os.write(self._wake_w, b"x")  # the supervisor must watch the new connection
        return worker

    def _send_control(self, msg: tuple[Any, ...], fds: list[int] | None = None) -> None:
        with self._control_lock:
            try:
                self._control.send(msg)
                if fds is not None:
                    sendfds(self._sock, fds)
            except OSError as e:
                raise PoolBrokenError(f"the local pool's fork server is gone ({e})") from None

    def _supervise(self) -> None:
        try:
            while True:
                with self._lock:
                    conns: dict[Any, _Worker] = {w.conn: w for w in self._workers.values() if not w.eof}
                ready = wait([*conns, self._control, self._wake_r], timeout=1.0)
                if self._closed:
                    break
                for obj in ready:
                    self._on_ready(obj, conns)
                self._retire_idle()
        except (EOFError, OSError) as e:
            if not self._closed:
                log.warning("the local pool's fork server ended (%s); starting a new pool next run", e)
        except Exception:  # pragma: no cover - a bug here must not hang runs silently
            log.exception("the local pool's supervisor failed")
        finally:
            self._break()

    def _on_ready(self, obj: Any, conns: dict[Any, _Worker]) -> None:
        """One of the supervisor's inputs has something: the wake-up pipe (a new worker
        to watch), the fork server, or a worker's connection."""
        if obj is self._wake_r:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        elif obj is self._control:
            self._on_control()
        else:
            self._on_worker(conns[obj])

    def _on_control(self) -> None:
        while self._control.poll():
            msg = self._control.recv()
            with self._lock:
                worker = self._workers.get(msg[1])
            if worker is None:
                continue
            if msg[0] == "spawned":
                worker.pid = msg[2]
            elif msg[0] == "exit":
                worker.status = msg[2]
                worker.over = msg[3]
                self._maybe_gone(worker)

    def _on_worker(self, worker: _Worker) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            worker.eof = True
            self._maybe_gone(worker)
            return
        records = load_outputs(pickle.loads(data))
        ended = any(r[0] == ENDED for r in records)
        report = worker.report
        if records and records[-1][0] == RETIRING:  # it exits: give it no more work
            records.pop()
            worker.doomed = True
        if ended:
            with self._lock:
                self._by_task.pop(worker.task, None)  # type: ignore[arg-type]
                worker.task, worker.report = None, None
                worker.idle_since = time.monotonic()
                if worker.limit is not None:  # under the lock: before its next task's limit
                    worker.limit = None
                    try:
                        self._send_control(("limit", worker.wid, None))
                    except PoolBrokenError:
                        pass
                self._gone.notify_all()
        if report is not None:
            report(records)

    def _maybe_gone(self, worker: _Worker) -> None:
        """Once a dead worker's pipe is drained and its exit status known, end its task."""
        if not worker.eof or worker.status is False:
            return
        with self._lock:
            self._workers.pop(worker.wid, None)
            task, report = worker.task, worker.report
            if task is not None:
                self._by_task.pop(task, None)
            worker.task = worker.report = None
            self._gone.notify_all()
        worker.conn.close()
        culprit = None
        try:
            tid, index, _attempt = worker.ledger.read()
            if tid == task:  # the item it was running (else none had started yet)
                culprit = index
        except ValueError:
            pass
        worker.ledger.close()
        if task is not None and report is not None:
            if worker.over is not None:
                err = ItemError(
                    ErrorKind.MEMORY,
                    "MemoryLimitExceeded",
                    f"the item used {format_memory(worker.over)}, which exceeded its limit "
                    f"mem={worker.mem_spec}; its worker was stopped",
                )
            else:
                err = worker_died(worker.status if isinstance(worker.status, int) else None)
            report([Ended(task, err, False, culprit)])

    def _retire_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [
                w
                for w in self._workers.values()
                if w.task is None and not w.doomed and now - w.idle_since > self.idle_timeout
            ]
            for w in old:
                w.doomed = True
        for w in old:
            with w.send_lock:
                try:
                    w.conn.send_bytes(pickle.dumps(("stop",)))
                except OSError:
                    pass

    def _break(self) -> None:
        """The fork server is gone: end every task still running and refuse new ones."""
        with self._lock:
            orderly = self._closed  # shutdown() closed the control socket
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
            self._by_task.clear()
            self._gone.notify_all()
        if orderly:
            # The fork server stops and reaps its workers itself (letting them save their
            # coverage data under `make test`): killing them from here too would race it.
            try:
                self._zygote.wait(timeout=ZYGOTE_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        lost = ItemError(ErrorKind.WORKER_DIED, "PoolBroken", "the local pool shut down")
        for w in workers:
            if w.pid is not None:
                try:
                    os.killpg(w.pid, 9)
                except OSError:
                    pass
            if w.task is not None and w.report is not None:
                w.report([Ended(w.task, lost)])
            w.conn.close()


def _temp_fd() -> int:
    import tempfile

    fd, path = tempfile.mkstemp(prefix="mapnb-ledger-")
    os.unlink(path)
    return fd


_pool: Pool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> Pool:
    """The process-wide warm pool, started on first use (and again if it broke)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.closed:
            _pool = Pool()
        return _pool


@atexit.register
def _shutdown_shared_pool() -> None:
    if _pool is not None:
        _pool.shutdown()


class Budget:
    """The CPUs, memory and GPUs of this machine, shared by every run in this process.

    A task of a run with ``requests`` starts only when its request fits in what the
    running tasks of *all* runs (on any :class:`LocalBackend`) leave free; until then it
    waits here, first come first served. Runs without requests take nothing from it.
    The GPUs are looked up again whenever none is in use (``CUDA_VISIBLE_DEVICES`` may
    have changed between runs).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cpus = float(usable_cpus())
        self._mem: int | None = None
        self._gpus: list[str] | None = None
        self._free_cpus = self._cpus
        self._free_mem = 0
        self._free_gpus: list[str] = []
        self._held = 0  # tasks holding a share
        self._waiting: list[tuple[int, Any, Any]] = []  # (task id, requests, start(gpus))

    def gpus(self) -> list[str]:
        """The GPUs items may use (looked up now if none is in use)."""
        from ...resources import local_gpus

        with self._lock:
            if self._gpus is None or not self._held:
                self._gpus = local_gpus()
                self._free_gpus = list(self._gpus)
            return list(self._gpus)

    def acquire(self, task_id: int, requests: Any, start: Any) -> None:
        """Call ``start(gpus)`` (the GPUs handed to the task, [] if none) when ``requests``
        fit, now or once enough is released."""
        with self._lock:
            self._waiting.append((task_id, requests, start))
            ready = self._ready()
        for start_, gpus in ready:
            start_(gpus)

    def release(self, requests: Any, gpus: list[str]) -> None:
        with self._lock:
            self._held -= 1
            self._free_cpus = min(self._cpus, self._free_cpus + (requests.cpus or 0.0))
            self._free_mem += requests.mem_bytes or 0
            self._free_gpus += [g for g in gpus if g not in self._free_gpus]
            ready = self._ready()
        for start, given in ready:
            start(given)

    def withdraw(self, task_id: int) -> bool:
        """Forget a task still waiting; False if it is not waiting (it started)."""
        with self._lock:
            for k, (tid, _, _) in enumerate(self._waiting):
                if tid == task_id:
                    del self._waiting[k]
                    return True
        return False

    def _ready(self) -> list[tuple[Any, list[str]]]:
        """Take the shares of the waiting tasks that fit now, in order (lock held)."""
        from ...resources import local_gpus, total_memory

        if self._mem is None:
            self._mem = total_memory() or 0
            self._free_mem = self._mem
        out = []
        while self._waiting:
            _, req, start = self._waiting[0]
            cpus, mem, ngpu = req.cpus or 0.0, req.mem_bytes or 0, req.gpu or 0
            if ngpu and (self._gpus is None or not self._held):
                self._gpus = local_gpus()
                self._free_gpus = list(self._gpus)
            use_gpus = bool(ngpu and self._gpus)  # none here: passed through, not counted
            if (
                (self._held and cpus > self._free_cpus + 1e-9)
                or (self._held and self._mem and mem > self._free_mem)
                or (use_gpus and ngpu > len(self._free_gpus))
            ):
                break  # first come, first served: nothing overtakes the task in front
            self._waiting.pop(0)
            self._held += 1
            self._free_cpus -= cpus
            self._free_mem -= mem if self._mem else 0
            mine: list[str] = []
            if use_gpus:
                mine, self._free_gpus = self._free_gpus[:ngpu], self._free_gpus[ngpu:]
            out.append((start, mine))
        return out


_budget = Budget()


class LocalBackend(Backend):
    """Worker processes on this machine (the default backend).

    Parameters
    ----------
    pool : Pool, optional
        A pool of your own; by default the process-wide warm pool.

    Notes
    -----
    ``requests`` draw on one budget per process (see :class:`Budget`): two runs that each
    request the only GPU take turns, whichever backend instance they use. ``concurrency``
    is per run.
    """

    name = "local"
    can_kill = True
    quick_submit = True
    remembers = True

    def __init__(self, pool: Pool | None = None) -> None:
        self._own_pool = pool
        self._blobs: dict[str, JobBlob] = {}
        self._budget = _budget

    def fit(self, requests: Any, limits: Any) -> int | None:
        """Items at once that the usable CPUs, the memory and the GPUs can take."""
        from ...resources import format_memory, total_memory

        if not requests:
            return None
        bounds = []
        if requests.cpus is not None:
            cpus = usable_cpus()
            if requests.cpus > cpus:
                raise InvalidMapError(f"requests cpu={requests.cpu}, but this machine has {cpus} usable CPUs")
            bounds.append(int(cpus // requests.cpus))
        if requests.mem_bytes is not None and (total := total_memory()):
            if requests.mem_bytes > total:
                raise InvalidMapError(
                    f"requests mem={requests.mem}, but this machine has {format_memory(total)} of memory"
                )
            bounds.append(total // requests.mem_bytes)
        if requests.gpu:
            gpus = self._budget.gpus()
            if gpus:  # none here: the request is passed through, nothing to assign
                if requests.gpu > len(gpus):
                    raise InvalidMapError(f"requests gpu={requests.gpu}, but there are {len(gpus)} GPUs here")
                bounds.append(len(gpus) // requests.gpu)
        return min(bounds) if bounds else None

    @property
    def pool(self) -> Pool:
        if self._own_pool is not None:
            return self._own_pool
        return shared_pool()

    def submit(self, task: Task, report: ReportFn) -> None:
        blob = self._blobs.get(task.job.id)
        if blob is None:
            blob = dump_job(task, report)
            if blob is None:
                return
            self._blobs[task.job.id] = blob
            while len(self._blobs) > 8:
                self._blobs.pop(next(iter(self._blobs)))
        task, items_blob = dump_items(task, report, "a worker process")
        if items_blob is None:
            return
        requests = task.job.requests
        if not requests:
            self._start(task, report, blob, items_blob, {})
            return

        def start(gpus: list[str]) -> None:
            def give_back(records: list[Any]) -> None:
                if any(r[0] == ENDED for r in records):
                    self._budget.release(requests, gpus)
                report(records)

            env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else {}
            try:
                self._start(task, give_back, blob, items_blob, env)
            except Exception as e:  # called from another run's thread too: report, never raise
                err = ItemError(ErrorKind.INTERNAL, type(e).__qualname__, f"the local backend failed: {e}")
                give_back([Ended(task.id, err, all_items=True)])

        self._budget.acquire(task.id, requests, start)

    def _start(
        self, task: Task, report: ReportFn, blob: JobBlob, items_blob: bytes, env: dict[str, str]
    ) -> None:
        try:
            self.pool.submit(task, report, blob, items_blob, env)
        except PoolBrokenError:
            if self._own_pool is not None:
                raise
            self.pool.submit(task, report, blob, items_blob, env)  # a fresh shared pool

    def kill(self, task_id: int) -> None:
        if self._budget.withdraw(task_id):  # never started: nothing to stop
            return
        self.pool.kill(task_id)

    def join(self, task_ids: list[int], timeout: float) -> None:
        if task_ids and not self.pool.join(task_ids, timeout):
            log.warning("killed subtasks still running after %.0f s", timeout)

    def shutdown(self) -> None:
        if self._own_pool is not None:
            self._own_pool.shutdown()
