"""Items run on a Dask distributed cluster, with live status and logs.

Each engine task (a batch of items) is one Dask task. On the worker, items run as on
the local backend (``worker.run_items``): ``print`` and logging are captured per item,
and "started", log text and small outputs stream back as they happen through a
distributed pub-sub topic (``Worker.log_event`` -> ``Client.subscribe_topic``), batched
every 50 ms. The task's result carries every item's outcome, so nothing depends on the
stream arriving first.

What Dask can and cannot stop: a queued task is cancelled; a running one finishes its
current item (a Python thread cannot be interrupted) and starts no further item. So a
timeout, an abort or a cancel frees the slot at once and the item's result is ignored,
as with the ``threads`` backend. A worker lost mid-item (its process killed, its
machine gone) fails the item that was running, which the engine retries if it may.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
import threading
import uuid
import warnings
from typing import Any

from .._code import restore_origin
from ..errors import BackendError, ErrorKind, ItemError
from ..protocol import FAILED, Ended, Finished
from ..worker import Hooks, Outbox, run_items
from ._wire import dump_items, dump_job, load_outputs
from .base import Backend, Job, ReportFn, Task

log = logging.getLogger(__name__)

_STREAM_LIMIT = 64 * 1024  # outputs up to this size (pickled) also travel with the live stream
_UNSTARTED_LOSSES = 3  # tasks of a job lost before they started, re-queued without blame
_INLINE_JOB = 1 << 20  # a pickled job (function and what it captures) up to this size rides with each task
_HINT = (
    "connect to a Dask cluster first: `from distributed import Client; client = Client()` starts "
    "a local one, `Client('tcp://scheduler:8786')` joins a remote one; or set MAPNB_DASK_ADDRESS, "
    "or pass backend=mapnb.backends.dask.DaskBackend(address)"
)


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ModuleNotFoundError(
            "the dask backend needs dask.distributed: pip install 'mapnb[dask]'", name="distributed"
        ) from None
    return distributed


class DaskBackend(Backend):
    """Run items on a Dask cluster.

    Parameters
    ----------
    client : distributed.Client or str, optional
        A client, or a scheduler address such as ``"tcp://10.0.0.5:8786"``. By default:
        the current client (the last one created in this process), else the address in
        ``MAPNB_DASK_ADDRESS``.

    Notes
    -----
    mapnb must be installed on the workers (the same version), like any library the
    tasks import. Workers keep their own working directory and environment.
    """

    name = "dask"
    can_kill = False
    shares_clock = False  # report times come from the workers' clocks

    def __init__(self, client: Any = None) -> None:
        _require_distributed()
        self._given = client
        self._own: Any = None  # a client this backend opened itself
        self._topic = f"mapnb-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._tasks: dict[int, _Running] = {}
        self._by_key: dict[str, int] = {}
        self._jobs: dict[str, Any] = {}  # job id -> the pickled job, or its scattered Future
        self._unstarted_losses: dict[str, int] = {}  # job id -> its tasks lost before they started
        self._subscribed_to: Any = None
        self._previous_all: Any = None

    _by_address: dict[str, DaskBackend] = {}

    @classmethod
    def for_address(cls, address: str) -> DaskBackend:
        """One backend (and one connection) per scheduler address, for this process."""
        backend = cls._by_address.get(address)
        if backend is None:
            backend = cls._by_address[address] = cls(address)
        return backend

    # -- the cluster --------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` this backend submits to (connecting if need be)."""
        distributed = _require_distributed()
        if isinstance(self._given, distributed.Client):
            return self._given
        address = self._given
        if address is None:
            try:
                return distributed.get_client()
            except ValueError:
                address = os.environ.get("MAPNB_DASK_ADDRESS")
                if not address:
                    raise BackendError(f"no Dask cluster to run on: {_HINT}") from None
        if self._own is None or self._own.status in ("closed", "closing"):
            try:
                self._own = distributed.Client(address, set_as_default=False, timeout="20s")
            except OSError as e:
                raise BackendError(f"could not reach the Dask scheduler at {address}: {e}") from None
        return self._own

    def prepare(self) -> None:
        self._subscribe(self.client)

    def default_concurrency(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def fit(self, requests: Any, limits: Any) -> int | None:
        """Requests become Dask worker resources; some worker must declare each of them."""
        wanted = _dask_resources(requests)
        if wanted:
            workers = self.client.scheduler_info().get("workers", {}).values()
            for name, amount in wanted.items():
                if not any(w.get("resources", {}).get(name, 0) >= amount for w in workers):
                    raise BackendError(
                        f"no worker of this Dask cluster declares {name}={amount:g}, which the items request; "
                        f'start workers with e.g. `dask worker ... --resources "{name}={amount:g}"`'
                    )
        return None  # Dask runs no more at once than the workers' resources allow

    def _subscribe(self, client: Any) -> None:
        with self._lock:
            if self._subscribed_to is client:
                return
            client.subscribe_topic(self._topic, self._on_stream)
            # Worker losses are announced on the scheduler's "all" topic; a handler the
            # user set there keeps working.
            self._previous_all = client._event_handlers.get("all")
            client.subscribe_topic("all", self._on_cluster_event)
            self._subscribed_to = client
        # Outside the lock: this waits for the client's event loop, whose handlers take it.
        _no_dask_reruns(client)

    # -- submitting ---------------------------------------------------------------------

    def submit(self, task: Task, report: ReportFn) -> None:
        client = self.client
        self._subscribe(client)
        job = self._jobs.get(task.job.id)
        if job is None:
            blob = dump_job(task, report, "the cluster")
            if blob is None:
                return
            # A small job travels inside each task (workers unpickle it once). A big one is
            # copied to every worker up front: as a dependency held by one worker, it would
            # draw every task to that worker.
            job = blob if len(blob) <= _INLINE_JOB else client.scatter(blob, broadcast=True, hash=False)
            self._jobs[task.job.id] = job
            while len(self._jobs) > 8:
                self._jobs.pop(next(iter(self._jobs)))
        task, items = dump_items(task, report, "the cluster")
        if items is None:
            return
        key = f"mapnb-{task.job.id}-{task.id}"
        running = _Running(report, key)
        with self._lock:
            self._tasks[task.id] = running
            self._by_key[key] = task.id
        running.future = client.submit(
            run_on_worker, task.job.id, job, items, task.id, self._topic,
            key=key, pure=False, retries=0, resources=_dask_resources(task.job.requests) or None,
        )  # fmt: skip
        running.future.add_done_callback(lambda fut, tid=task.id: self._on_done(tid, fut))

    def kill(self, task_id: int) -> None:
        with self._lock:
            running = self._tasks.get(task_id)
        if running is not None and running.future is not None:
            running.future.cancel()  # queued: never runs; running: stops after its item

    def close(self) -> None:
        """A run ended: let the cluster forget jobs no task is running (a later task of a
        run still going would send its job again)."""
        with self._lock:
            busy = {key.rsplit("-", 1)[0].removeprefix("mapnb-") for key in self._by_key}
            for job_id in [j for j in self._jobs if j not in busy]:
                del self._jobs[job_id]
            for job_id in [j for j in self._unstarted_losses if j not in busy]:
                del self._unstarted_losses[job_id]

    def shutdown(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    # -- what comes back ----------------------------------------------------------------

    def _end(self, tid: int) -> _Running | None:
        """Take the task off the books; None if it had ended already."""
        with self._lock:
            running = self._tasks.pop(tid, None)
            if running is not None:
                self._by_key.pop(running.key, None)
            return running

    def _on_stream(self, event: tuple[float, Any]) -> None:
        """Records a worker streamed (on the client's event loop: keep it quick)."""
        msg = event[1]
        with self._lock:
            running = self._tasks.get(msg["tid"])
        if running is None:
            return
        try:
            records = pickle.loads(msg["recs"])
        except Exception:
            log.exception("mapnb: a bad record batch from the cluster; ignored")
            return
        running.worker = msg.get("worker", running.worker)
        running.report(load_outputs(records))
        if msg.get("complete") and self._end(msg["tid"]) is running:
            # Every outcome came with the stream: free the slot now rather than after a
            # round trip to fetch the task's result, and let Dask forget the task, or
            # the loss of the worker holding its result would make Dask run it again.
            if running.future is not None:
                _cancel(running.future)
            running.report([Ended(msg["tid"])])

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        if self._previous_all is not None:
            try:
                self._previous_all(event)
            except Exception:
                log.exception("the previous handler of Dask's 'all' topic failed")
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        for key in msg.get("processing-tasks", ()):
            with self._lock:
                tid = self._by_key.get(key)
            if tid is not None:
                self._lost(tid, f"the Dask worker {msg.get('worker', '?')} running it was lost")

    def _lost(self, tid: int, why: str) -> None:
        running = self._end(tid)
        if running is None:
            return
        if running.future is not None:  # or Dask would run the whole batch again elsewhere
            _cancel(running.future)
        running.report([Ended(tid, self._lost_error(running, why))])

    def _lost_error(self, running: _Running, why: str) -> ItemError | None:
        """The error of a task whose worker was lost: None (its items go back to the
        queue, no attempt counted) when it never started there, which the worker says
        before it runs its first item. A job whose tasks keep dying before they start
        (its function kills the worker as it loads, say) is blamed after a few."""
        if not running.worker:
            job_id = running.key.removeprefix("mapnb-").rsplit("-", 1)[0]
            with self._lock:
                losses = self._unstarted_losses[job_id] = self._unstarted_losses.get(job_id, 0) + 1
            if losses <= _UNSTARTED_LOSSES:
                return None
            why += f" before the task started ({losses} times in this run)"
        return ItemError(ErrorKind.WORKER_DIED, "WorkerLost", why)

    def _on_done(self, tid: int, future: Any) -> None:
        """The Dask task is over (in a thread of the client's): every outcome, then the end."""
        running = self._end(tid)
        if running is None:
            return  # ended already: a lost worker, or killed by the engine
        try:
            blob = future.result()
        except BaseException as e:
            error = _task_error(e, running.worker)
            lost = self._lost_error(running, error.message) if error.kind is ErrorKind.WORKER_DIED else error
            running.report([Ended(tid, lost)])
            return
        running.report([*load_outputs(pickle.loads(blob)), Ended(tid)])


def _dask_resources(requests: Any) -> dict[str, float]:
    """mapnb.Resources requests as Dask worker resources: CPU, MEMORY (bytes), GPU."""
    if not requests:
        return {}
    out: dict[str, float] = {}
    if requests.cpus is not None:
        out["CPU"] = requests.cpus
    if requests.mem_bytes is not None:
        out["MEMORY"] = float(requests.mem_bytes)
    if requests.gpu:
        out["GPU"] = float(requests.gpu)
    return out


class _Running:
    __slots__ = ("report", "key", "future", "worker")

    def __init__(self, report: ReportFn, key: str) -> None:
        self.report, self.key = report, key
        self.future: Any = None
        self.worker = ""


def _cancel(future: Any) -> None:
    """Cancel ``future`` from any thread (on the client's event loop, cancel is a coroutine)."""
    pending = future.cancel()
    if inspect.isawaitable(pending):
        asyncio.ensure_future(pending)


_plugin_lock = threading.Lock()
_plugin_done: set[str] = set()  # schedulers (by address) that have the plugin


def _no_dask_reruns(client: Any) -> None:
    """Ask the scheduler never to run a mapnb task again after its worker died.

    mapnb owns retries: Dask's own (``allowed-failures``, 3 by default) would run a
    crashing item on the next worker and kill that one too, and run items mapnb has
    already failed or re-queued. A scheduler plugin marks every ``mapnb-*`` task as
    suspicious as often as Dask allows, so the first worker death fails it with
    ``KilledWorker``; other work on the cluster keeps Dask's behaviour. The plugin's class
    travels by value: the scheduler needs no mapnb.
    """
    address = getattr(client.scheduler, "address", "") or ""
    with _plugin_lock:
        if address and address in _plugin_done:
            return
        try:
            client.register_plugin(_plugin_class()(), name="mapnb-no-dask-reruns")
        except Exception as e:  # noqa: BLE001 - runs still work, with Dask's reruns
            warnings.warn(
                f"mapnb could not install its scheduler plugin ({type(e).__name__}: {e}); Dask may run "
                "an item again after its worker died, on another worker",
                RuntimeWarning,
                stacklevel=4,
            )
        _plugin_done.add(address)


_PLUGIN: Any = None


def _plugin_class() -> Any:
    """The scheduler plugin's class, made here so that it pickles by value."""
    global _PLUGIN
    if _PLUGIN is None:
        from distributed.diagnostics.plugin import SchedulerPlugin

        def update_graph(self: Any, scheduler: Any, *, keys: Any = (), **kwargs: Any) -> None:
            limit = scheduler.allowed_failures
            for key in keys:
                if isinstance(key, str) and key.startswith("mapnb-"):
                    ts = scheduler.tasks.get(key)
                    if ts is not None and ts.suspicious < limit:
                        ts.suspicious = limit

        _PLUGIN = type(
            "MapnbNoDaskReruns",
            (SchedulerPlugin,),
            {"update_graph": update_graph, "idempotent": True},
        )
    return _PLUGIN


def _task_error(e: BaseException, worker: str) -> ItemError:
    name = type(e).__qualname__
    if name == "KilledWorker":
        return ItemError(ErrorKind.WORKER_DIED, "WorkerLost", f"Dask workers running this task died: {e}")
    if name == "CancelledError":
        return ItemError(ErrorKind.CANCELLED, "CancelledError", "the Dask task was cancelled")
    where = f" on {worker}" if worker else ""
    return ItemError(ErrorKind.INTERNAL, name, f"the Dask task failed{where}: {e}")


# --------------------------------------------------------------------------------------
# On the worker.


class _StreamConn:
    """What an Outbox sends through: one Dask event per batch of records.

    The first batch (the task's first "started") goes straight to the scheduler, and the
    item waits until it is there: a worker that dies in that item is then known to have
    run it, and one that dies before has run nothing of the task (its items are re-queued
    without counting an attempt). Later batches ride the worker's batched stream.
    """

    def __init__(self, worker: Any, topic: str, tid: int) -> None:
        self._worker, self._topic, self._tid = worker, topic, tid
        self._confirmed = False

    def send_bytes(self, data: bytes, complete: bool = False) -> None:
        msg = {"tid": self._tid, "recs": data, "worker": self._worker.address}
        if complete:
            msg["complete"] = True
        if not self._confirmed:
            self._confirmed = True
            try:
                from distributed.utils import sync

                sync(self._worker.loop, self._worker.scheduler.log_event, topic=self._topic, msg=msg)
                return
            except Exception:  # noqa: BLE001 - the batched stream below still carries it
                log.debug("mapnb: a direct event to the scheduler failed", exc_info=True)
        self._worker.log_event(self._topic, msg)


class _TaskOutbox(Outbox):
    """Streams starts, logs and small outputs live; keeps every outcome for the result."""

    def __init__(self, conn: _StreamConn) -> None:
        super().__init__(conn)
        self._stream = conn
        self.outcomes: list[tuple[Any, ...]] = []
        self.withheld = 0  # outcomes too big for the stream

    raw_types: frozenset[type] = frozenset()  # every output pickled: the result holds Finished records

    def _keep(self, index: int, attempt: int, code: int, payload: Any, t0: float, t1: float) -> int | None:
        record = Finished(self.task_id, index, attempt, code != FAILED, payload, t0, t1)
        self.outcomes.append(record)
        if record.ok and len(record.value) > _STREAM_LIMIT:  # a big output waits for the result
            self.withheld += 1
        else:
            self._records.append(record)
        return None  # sent at the Outbox's cadence, as before

    def finish(self) -> None:
        """Flush the rest; say whether the stream carried every outcome."""
        self.close()
        if not self.withheld:
            self._stream.send_bytes(pickle.dumps([]), complete=True)


_jobs: dict[str, Any] = {}
_jobs_lock = threading.Lock()


def run_on_worker(job_id: str, job_blob: bytes, items_blob: bytes, tid: int, topic: str) -> bytes:
    """One mapnb task on a Dask worker: run its items, stream what happens, return outcomes."""
    from distributed import get_worker
    from distributed.worker import thread_state

    from .inprocess import routed_output

    worker = get_worker()
    key = thread_state.key
    with _jobs_lock:
        job = _jobs.get(job_id)
        if job is None:
            job = _jobs[job_id] = pickle.loads(job_blob)
            restore_origin(job.fn, job.origin)
            while len(_jobs) > 4:
                _jobs.pop(next(iter(_jobs)))
    assert isinstance(job, Job)
    items = pickle.loads(items_blob)

    def cancelled() -> bool:  # the client cancelled this task: start no further item
        ts = worker.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    outbox = _TaskOutbox(_StreamConn(worker, topic, tid))
    outbox.task_id = tid
    outbox.first_of_task = True
    with routed_output() as set_capture:
        run_items(job, items, Hooks(outbox, set_capture, stop=cancelled))
    outbox.finish()
    return pickle.dumps(outbox.outcomes, protocol=pickle.HIGHEST_PROTOCOL)
