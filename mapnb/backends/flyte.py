"""A map run as one execution on a Flyte cluster (``backend="flyte"``), followed live.

The whole map is one flytekit ArrayNode map task (see :mod:`mapnb.flyte._translate`:
concurrency becomes its parallelism; min_success_ratio, retries, timeout, cache,
resources and bound inputs are Flyte's to apply), in a one-node workflow registered and
launched with ``FlyteRemote`` in interactive mode (code defined in a notebook travels
pickled, as flytekit does it). The execution is then read every ``poll_interval`` seconds
and each subtask's phase, attempts, cache status and log links become the item's status
and log panel (see :mod:`mapnb.flyte._follow`); the outputs come into the DataFrame when
the execution has ended, failed slots None. Cancelling the run terminates the execution.

Because Flyte applies the retries, timeout and cache, mapnb's engine follows the items
without applying its own: each item's end is reported with the attempts Flyte made and
its status (``cached`` for a Flyte cache hit); its log panel lists every attempt with its
log links.

The Flyte config is the user's: ``FLYTECTL_CONFIG``, else ``./flytekit.config``,
``~/.flyte/config`` or ``~/.flyte/config.yaml`` (as flytekit looks for it). Project and
domain: the arguments, else ``MAPNB_FLYTE_PROJECT``/``MAPNB_FLYTE_DOMAIN``, else
``flytesnacks``/``development`` (a sandbox's).

Nothing here has run against a live Flyte cluster: the translation and the following are
tested offline, on flytekit's own models (``tests/test_flyte_remote.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, ErrorKind, ItemError
from ..events import Status
from ..protocol import Ended, Finished, Log, Started
from .base import Backend, Job, ReportFn, Task

if TYPE_CHECKING:
    from ..flyte._follow import Change
    from ..flyte._translate import FlyteMap

log = logging.getLogger(__name__)

_READ_ATTEMPTS = 5  # reads of an execution that may fail in a row before its items fail
_STOPPED = "stopped from mapnb: the run was cancelled, or its min_success_ratio can no longer be met"
_NO_CONFIG = (
    "no Flyte config found: set FLYTECTL_CONFIG to your config file, or write ~/.flyte/config.yaml "
    "(`flytectl config init --host <your Flyte endpoint>` writes one)"
)


def config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The Flyte config file flytekit would use: ``explicit``, ``FLYTECTL_CONFIG``,
    ``./flytekit.config``, ``~/.flyte/config``, ``~/.flyte/config.yaml``; None if none exists."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        return path if path.exists() else None
    candidates = []
    env = os.environ.get("FLYTECTL_CONFIG")
    if env:
        candidates.append(Path(env))
    home = Path.home() / ".flyte"
    candidates += [Path("flytekit.config"), home / "config", home / "config.yaml"]
    return next((p for p in candidates if p.exists()), None)


class FlyteBackend(Backend):
    """Run a whole map as one execution on a Flyte cluster, and follow it.

    Parameters
    ----------
    config : str or path, optional
        The Flyte config file (default: as flytekit finds it; see the module's docs).
    project, domain : str, optional
        Where to register and run (default: ``MAPNB_FLYTE_PROJECT``/``MAPNB_FLYTE_DOMAIN``,
        else ``flytesnacks``/``development``).
    image : str, optional
        The container image the subtasks run in (default: flytekit's for this Python). It
        needs what the task imports; a ``%%map_task`` cell needs mapnb in it too.
    poll_interval : float
        Seconds between two reads of the execution.
    """

    name = "flyte"
    can_kill = True  # cancelling terminates the execution
    shares_clock = True  # report times are this process's

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        project: str | None = None,
        domain: str | None = None,
        image: str | None = None,
        poll_interval: float = 5.0,
    ) -> None:
        self._config = config
        self._project, self._domain = project, domain
        self.image = image
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}  # job id -> its execution
        self._ended: set[str] = set()  # job ids whose run has ended
        self._remote: Any = None

    @property
    def project(self) -> str:
        """Where maps are registered and run (read when used: the environment may change)."""
        return self._project or os.environ.get("MAPNB_FLYTE_PROJECT") or "flytesnacks"

    @property
    def domain(self) -> str:
        return self._domain or os.environ.get("MAPNB_FLYTE_DOMAIN") or "development"

    # -- what the caller's thread does --------------------------------------------------

    def prepare(self) -> None:
        try:
            import flytekit  # noqa: F401
        except ImportError:
            raise ModuleNotFoundError(
                "the flyte backend needs flytekit: pip install 'mapnb[flyte]'", name="flytekit"
            ) from None
        if config_file(self._config) is None:
            where = f"{self._config} does not exist; " if self._config is not None else ""
            raise BackendError(where + _NO_CONFIG)

    def take_map(self, mt: Any, job: Job, inputs: list[tuple[Any, ...]]) -> None:
        """The whole map, before the engine starts: translate it now (a clear error in the
        caller's thread for what Flyte cannot take), launch and follow it in a thread."""
        from ..flyte._translate import to_flyte

        lists = {name: [row[k] for row in inputs] for k, name in enumerate(job.names)}
        fm = to_flyte(mt, **lists)
        run = _Run(self, job, fm, len(inputs), overwrite_cache=bool(mt.cache.overwrite))
        with self._lock:
            self._runs[job.id] = run
        run.start()

    def default_concurrency(self) -> int:
        return 1  # unused: a map on Flyte is one execution, followed item by item

    @property
    def remote(self) -> Any:
        """The ``FlyteRemote`` (interactive mode), connected on first use."""
        if self._remote is None:
            from flytekit.configuration import Config
            from flytekit.remote import FlyteRemote

            path = config_file(self._config)
            if path is None:
                raise BackendError(_NO_CONFIG)
            self._remote = FlyteRemote(
                Config.auto(str(path)),
                default_project=self.project,
                default_domain=self.domain,
                interactive_mode_enabled=True,
            )
        return self._remote

    # -- what the engine calls ----------------------------------------------------------

    def submit(self, task: Task, report: ReportFn) -> None:
        run = self._runs.get(task.job.id)
        if run is None:
            why = "the flyte backend runs maps started with map_task(...)"
            if task.job.id in self._ended:
                why = (
                    "retry_failed() is not supported on backend='flyte': run the map again "
                    "(with cache=True, Flyte's cache keeps what succeeded)"
                )
            err = ItemError(ErrorKind.INTERNAL, "BackendError", why)
            report([Ended(task.id, err, all_items=True)])
            return
        run.attach(task, report)

    def kill(self, task_id: int) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.kill(task_id)

    def close(self) -> None:
        """After a run's last report: an execution mapnb no longer follows (the run was
        cancelled or aborted) is terminated."""
        with self._lock:
            done = [jid for jid, run in self._runs.items() if run.abandoned]
            finished = [self._runs.pop(jid) for jid in done]
            self._ended.update(done)
        for run in finished:
            run.stop(_STOPPED)

    def shutdown(self) -> None:
        with self._lock:
            runs, self._runs = list(self._runs.values()), {}
        for run in runs:
            run.stop("mapnb shut down")


class _Run:
    """One map's execution: launched, then read until every item's end is reported."""

    def __init__(self, backend: FlyteBackend, job: Job, fm: FlyteMap, n: int, overwrite_cache: bool) -> None:
        from ..flyte._follow import Follower

        self.overwrite_cache = overwrite_cache
        self.backend, self.job, self.fm, self.n = backend, job, fm, n
        self.follower = Follower(n, retries=fm.map_task.metadata.retries)
        self._lock = threading.Lock()
        self._tasks: dict[int, tuple[int, ReportFn]] = {}  # item -> (task id, report)
        self._open: set[int] = set()  # task ids not ended nor killed
        self._waiting: dict[int, list[Change]] = {}  # changes for items not submitted yet
        self._t0: dict[int, float] = {}
        self._outputs: list[Any] = [None] * n
        self._lost: str | None = None  # why the outputs of items that succeeded are missing
        self._stop = threading.Event()
        self.execution: Any = None
        self._thread = threading.Thread(target=self._main, name=f"mapnb-flyte-{job.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def abandoned(self) -> bool:
        with self._lock:
            return bool(self._tasks) and not self._open

    def attach(self, task: Task, report: ReportFn) -> None:
        with self._lock:
            self._open.add(task.id)
            for i, _attempt, _inputs in task.items:
                self._tasks[i] = (task.id, report)
            early = {i: self._waiting.pop(i) for i, _, _ in task.items if i in self._waiting}
        for changes in early.values():
            self._deliver(changes)

    def kill(self, task_id: int) -> None:
        with self._lock:
            self._open.discard(task_id)

    def stop(self, cause: str) -> None:
        self._stop.set()
        execution = self.execution
        if execution is not None and not getattr(execution, "is_done", True):
            try:
                self.backend.remote.terminate(execution, cause)
            except Exception:
                log.exception("could not terminate Flyte execution %s", getattr(execution, "id", "?"))

    # -- the following thread -------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._launch()
            misses = 0
            while not self._stop.is_set() and not self.follower.done:
                try:
                    self._read()
                    misses = 0
                except Exception:
                    # A read that fails now and then (the network, the admin service
                    # restarting) is retried; only several in a row fail the items.
                    misses += 1
                    if misses >= _READ_ATTEMPTS:
                        raise
                    log.warning(
                        "reading Flyte execution %s failed; retrying", self.execution.id, exc_info=True
                    )
                if self.follower.done:
                    break
                self._stop.wait(self.backend.poll_interval * (1 + misses))
        except Exception as e:  # the items fail with the reason; nothing hangs
            log.exception("following the Flyte execution failed")
            self._fail_all(f"the flyte backend failed: {type(e).__qualname__}: {e}")

    def _launch(self) -> None:
        from flytekit.configuration import ImageConfig

        remote = self.backend.remote
        image = ImageConfig.from_images(self.backend.image) if self.backend.image else None
        self.execution = remote.execute(
            self.fm.workflow,
            inputs=self.fm.inputs,
            project=self.backend.project,
            domain=self.backend.domain,
            image_config=image,
            overwrite_cache=self.overwrite_cache or None,
            wait=False,
        )
        url = getattr(remote, "generate_console_url", None)
        where = url(self.execution) if url is not None else str(self.execution.id)
        self._deliver(
            [_log(i, f"[flyte] execution {self.execution.id.name}: {where}\n") for i in range(self.n)]
        )
        if self._stop.is_set():  # cancelled while it was being registered
            self.stop(_STOPPED)

    def _read(self) -> None:
        remote = self.backend.remote
        ex = remote.sync_execution(self.execution, sync_nodes=True)
        self.execution = ex
        # The workflow has one node, the ArrayNode; only its task executions carry
        # ExternalResourceInfo (start and end nodes have none).
        task_executions = [te for ne in ex.node_executions.values() for te in ne.task_executions]
        ready = False
        if ex.is_done:
            ready = True
            name, kind = next(iter(self.fm.map_task.python_interface.outputs.items()), (None, None))
            if name is not None and ex.outputs is not None and ex.error is None:
                from ..flyte._follow import outputs_by_index

                self._outputs = outputs_by_index(ex.outputs.get(name, as_type=kind), self.n)
            elif name is not None:
                # A map that fails as a whole returns no outputs: what succeeded is lost.
                self._lost = (
                    "succeeded on Flyte, but the execution failed, so the map's outputs were not returned"
                )
        error = ex.error.message if ex.error is not None else None
        self._deliver(
            self.follower.update(
                task_executions, execution_phase=ex.closure.phase, execution_error=error, outputs_ready=ready
            )
        )

    def _deliver(self, changes: list[Change]) -> None:
        """The changes as the engine's reports, per item's task (held until it is submitted)."""
        batches: dict[int, tuple[ReportFn, list[tuple[Any, ...]]]] = {}
        for c in changes:
            with self._lock:
                target = self._tasks.get(c.index)
                if target is None:
                    self._waiting.setdefault(c.index, []).append(c)
                    continue
            tid, report = target
            records = batches.setdefault(tid, (report, []))[1]
            now = time.monotonic()
            if c.kind == "started":
                self._t0.setdefault(c.index, now)
                records.append(Started(tid, c.index, 1, self._t0[c.index]))
            elif c.kind == "log":
                records.append(Log(tid, c.index, 1, "stdout", c.text))
            elif c.kind == "finished":
                t0 = self._t0.setdefault(c.index, now)
                if c.error is None and self._lost:
                    c = dataclasses.replace(c, status=Status.ABORTED, error=self._lost)
                ok = c.error is None
                value = self._outputs[c.index] if ok else _error(c)
                # The ninth field: Flyte's attempts and status (cached, aborted...), final.
                end = (c.attempts, c.status)
                records += [Finished(tid, c.index, 1, ok, value, t0, now, end), Ended(tid)]
                with self._lock:
                    self._open.discard(tid)
        for report, records in batches.values():
            report(records)

    def _fail_all(self, why: str) -> None:
        """Every item not yet ended fails with ``why`` (items not submitted yet, when they are)."""
        from ..flyte._follow import Change

        changes = []
        for i in range(self.n):
            if not self.follower.reported[i]:
                self.follower.reported[i] = True
                changes.append(Change(i, "finished", status=Status.FAILED, error=why))
        self._deliver(changes)


def _log(i: int, text: str) -> Change:
    from ..flyte._follow import Change

    return Change(i, "log", text)


def _error(c: Change) -> ItemError:
    kind = {Status.ABORTED: ErrorKind.ABORTED, Status.CANCELLED: ErrorKind.CANCELLED}.get(
        c.status,  # type: ignore[arg-type]
        ErrorKind.EXCEPTION,
    )
    name = "FlyteError" if kind is ErrorKind.EXCEPTION else kind.value.capitalize()
    return ItemError(kind, name, c.error or "failed on Flyte")
