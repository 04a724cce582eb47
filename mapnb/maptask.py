"""Map tasks of plain functions: ``task``, ``MapTask``, ``map_function`` and ``recover``.

:func:`mapnb.map_task` (in :mod:`mapnb.api`) hands Flyte's tasks to their adapters in
:mod:`mapnb.flyte`, which build on this module, and everything else to :func:`map_function`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib
import os
import sys
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from . import journal
from ._code import origin_of
from .backends import Backend, Job, get_backend
from .cache import CacheSettings, ItemCache
from .engine import Engine
from .errors import InvalidMapError, RunInterrupted
from .journal import Journal
from .prune import MedianStopping
from .resources import Resources
from .resources import check as check_resources
from .run import MapRun
from .spec import (
    MapSpec,
    Options,
    Signature,
    build_inputs,
    by_name,
    check_function,
    check_int,
    check_needed,
    check_seconds,
    describe,
    function_name,
)

if TYPE_CHECKING:
    import pandas as pd

    from .state import Inputs


class TaskFunction:
    """A function with task settings attached by :func:`task`. Calling it calls the function."""

    __mapnb_task__ = True

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        retries: int,
        timeout: float | None,
        cache: CacheSettings | None = None,
        requests: Resources | None = None,
        limits: Resources | None = None,
    ) -> None:
        if not callable(fn):
            raise InvalidMapError(f"task() needs a function; got {describe(fn)}")
        functools.update_wrapper(self, fn)
        self.__wrapped__ = fn
        self.retries = retries
        self.timeout = timeout
        self.cache = cache or CacheSettings()
        self.requests = requests
        self.limits = limits

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {function_name(self)} retries={self.retries} timeout={self.timeout}>"


# ``@task`` and ``@task(...)``: the overloads say which one returns the TaskFunction.
@overload
def task(
    fn: Callable[..., Any],
    *,
    retries: int = ...,
    timeout: float | datetime.timedelta | None = ...,
    cache: bool = ...,
    cache_version: str | None = ...,
    cache_serialize: bool = ...,
    cache_ignore_input_vars: tuple[str, ...] = ...,
    requests: Resources | None = ...,
    limits: Resources | None = ...,
) -> TaskFunction: ...
@overload
def task(
    fn: None = None,
    *,
    retries: int = ...,
    timeout: float | datetime.timedelta | None = ...,
    cache: bool = ...,
    cache_version: str | None = ...,
    cache_serialize: bool = ...,
    cache_ignore_input_vars: tuple[str, ...] = ...,
    requests: Resources | None = ...,
    limits: Resources | None = ...,
) -> Callable[[Callable[..., Any]], TaskFunction]: ...
def task(
    fn: Callable[..., Any] | None = None,
    *,
    retries: int = 0,
    timeout: float | datetime.timedelta | None = None,
    cache: bool = False,
    cache_version: str | None = None,
    cache_serialize: bool = False,
    cache_ignore_input_vars: tuple[str, ...] = (),
    requests: Resources | None = None,
    limits: Resources | None = None,
) -> TaskFunction | Callable[[Callable[..., Any]], TaskFunction]:
    """Attach task settings to a function, as flytekit's ``@task`` does.

    A plain function works in :func:`map_task` too; ``@task`` only sets defaults that
    ``map_task`` arguments may override.

    Parameters
    ----------
    retries : int
        Extra attempts for a failed item (an item runs at most ``1 + retries`` times).
    timeout : float or datetime.timedelta, optional
        Seconds each attempt may run before it is killed (and maybe retried).
    cache : bool
        Keep each item's output on disk (see :mod:`mapnb.cache`); an item whose inputs were
        seen before is not run again and shows as ``cached``.
    cache_version : str, optional
        Part of every key: change it to drop old entries. By default it is derived from the
        function's source, so editing the function starts afresh.
    cache_serialize : bool
        Identical items running at the same time (in one run, or in several processes on
        this machine) are computed once; the others wait for that output.
    cache_ignore_input_vars : tuple of str
        Inputs left out of the key (a ``verbose`` flag, say).
    requests, limits : Resources, optional
        What one item needs, and may use at most (see :mod:`mapnb.resources`).

    Examples
    --------
    >>> @task(retries=1, timeout=30)
    ... def double(x: int) -> int:
    ...     return 2 * x
    """
    retries = check_int("retries", retries, minimum=0)  # type: ignore[assignment]
    secs = check_seconds("timeout", timeout)
    caching = CacheSettings.make(cache, cache_version, cache_serialize, cache_ignore_input_vars)

    req, lim = check_resources(requests, "requests"), check_resources(limits, "limits")

    def wrap(f: Callable[..., Any]) -> TaskFunction:
        return TaskFunction(f, retries=retries, timeout=secs, cache=caching, requests=req, limits=lim)

    return wrap if fn is None else wrap(fn)


def _spec_field(name: str) -> Any:
    """A MapTask attribute that is a field of its spec; setting it replaces the spec."""

    def get(self: MapTask) -> Any:
        return getattr(self.spec, name)

    def set_(self: MapTask, value: Any) -> None:
        self.spec = dataclasses.replace(self.spec, **{name: value})

    return property(get, set_, doc=f"The spec's ``{name}`` (see :class:`~mapnb.spec.MapSpec`).")


def _task_settings(fn: Any) -> TaskFunction | None:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn if isinstance(fn, TaskFunction) else None


class MapTask:
    """A function mapped over lists. Call it to run and get a DataFrame; see :func:`map_task`.

    Its settings are one frozen :class:`~mapnb.spec.MapSpec`, :attr:`spec`.
    """

    def __init__(self, spec: MapSpec) -> None:
        self.spec = spec

    def with_overrides(
        self, *, requests: Resources | None = None, limits: Resources | None = None
    ) -> MapTask:
        """A copy of this map task whose items request, and are limited to, other resources.

        >>> map_task(train).with_overrides(requests=Resources(cpu=2, mem="4Gi"),
        ...                                limits=Resources(mem="6Gi"))  # doctest: +SKIP
        """
        req, lim = check_resources(requests, "requests"), check_resources(limits, "limits")
        spec = self.spec
        return MapTask(
            dataclasses.replace(
                spec,
                requests=req if req is not None else spec.requests,
                limits=lim if lim is not None else spec.limits,
            )
        )

    # The spec's fields, read (and, replacing the spec, written) as the map task's own
    # attributes, as they were before the spec held them.
    fn = _spec_field("fn")
    name = _spec_field("name")
    options = _spec_field("options")
    cache = _spec_field("cache")
    requests = _spec_field("requests")
    limits = _spec_field("limits")
    progress = _spec_field("progress")
    _backend = _spec_field("backend")

    @property
    def backend(self) -> Backend:
        """The backend instance the runs go to."""
        return get_backend(self.spec.backend)

    # mapnb's own arguments are positional-only (or, for ``recover``, yield to a task
    # parameter of that name), so that every name of the task can be mapped:
    # map_task(str.upper)(self=["a", "b"]) maps ``self``.

    def __call__(self, /, *args: Any, **lists: Any) -> pd.DataFrame:
        """Run the map and block until it is done; return the DataFrame.

        One keyword per mapped parameter; the lists map element-wise. A KeyboardInterrupt
        (the notebook's Interrupt button) cancels the run, kills its running subtasks and
        re-raises; the partial results stay in :func:`mapnb.last_run`.
        """
        return self._block(self._submit(args, lists, product=False))

    def submit(self, /, *args: Any, **lists: Any) -> MapRun:
        """Start the map and return a :class:`MapRun` at once.

        With ``recover=run_id``, continue that earlier run of the same items (even one
        whose process died): what succeeded comes from its journal, the rest runs again.
        A task with a parameter named ``recover`` maps it instead; such a run is
        continued with :func:`mapnb.recover`.
        """
        recover = self._take_recover(lists)
        return self._submit(args, lists, product=False, recover=recover)

    def product(self, /, *args: Any, **lists: Any) -> pd.DataFrame:
        """Run over every combination of the lists (a sweep); block and return the DataFrame."""
        return self._block(self._submit(args, lists, product=True))

    def submit_product(self, /, *args: Any, **lists: Any) -> MapRun:
        """Start a sweep over every combination of the lists; return a :class:`MapRun`.

        ``recover=run_id`` works as in :meth:`submit`.
        """
        recover = self._take_recover(lists)
        return self._submit(args, lists, product=True, recover=recover)

    def _take_recover(self, lists: dict[str, Any]) -> str | None:
        """mapnb's ``recover`` keyword, unless the task has a parameter of that name."""
        accepted = Signature.of(self.fn).accepted
        if "recover" in lists and (accepted is None or "recover" not in accepted):
            return lists.pop("recover")
        return None

    def _submit(
        self, args: tuple[Any, ...], lists: dict[str, Any], *, product: bool, recover: str | None = None
    ) -> MapRun:
        if args:
            raise InvalidMapError(
                f"pass the lists to map by keyword, one per mapped parameter of {self.name}, "
                "e.g. map_task(f)(x=[1, 2, 3]); "
                f"got {len(args)} positional argument{'s' * (len(args) != 1)}"
            )
        names, inputs, axes = build_inputs(self.fn, lists, product=product)
        recovered = None
        if recover is not None:
            recovered = _recovered(recover, names, inputs)
        return self._start(names, inputs, axes, recover, recovered)

    def _start(
        self,
        names: tuple[str, ...],
        inputs: Inputs,
        axes: list[list[Any]] | None,
        run_id: str | None = None,
        recovered: dict[int, tuple[Any, int, float | None]] | None = None,
    ) -> MapRun:
        spec = self.spec
        check_needed(len(inputs), spec.options)
        shapes = getattr(axes, "shapes", None)  # a recovered sweep that grew (see recover)
        axes = list(axes) if axes is not None else None
        backend = self.backend
        backend.prepare()
        run_id = run_id or uuid.uuid4().hex[:12]
        job = _job(spec, names, run_id)
        # The engine's settings: the spec's, with the concurrency the backend can give.
        concurrency = spec.options.concurrency or backend.default_concurrency()
        fits = backend.fit(spec.requests, spec.limits)
        if fits is not None:
            concurrency = max(1, min(concurrency, fits))
        opts = dataclasses.replace(spec.options, concurrency=concurrency)
        journaled = None
        if not _journal_off():  # what mapnb.recover() needs (a recovery has it already)
            # A backend instance is not stored: recover() uses "local".
            kept = spec if isinstance(spec.backend, str) else dataclasses.replace(spec, backend=None)
            stored = {"spec": kept, "names": names, "inputs": inputs, "axes": axes, "shapes": shapes}
            journaled = Journal(run_id, names, len(inputs), stored, new=recovered is None)
        item_cache = ItemCache(spec.fn, names, spec.cache) if spec.cache.enabled else None
        take_map = getattr(backend, "take_map", None)
        if take_map is not None:
            # A backend that runs the whole map as one unit (backend="flyte": one execution)
            # applies its concurrency, retries, timeout and cache there; the engine follows
            # every item at once and applies none of them again.
            take_map(self, job, inputs)
            item_cache = None
            opts = dataclasses.replace(opts, concurrency=max(1, len(inputs)), retries=0, timeout=None)
        engine = Engine(
            run_id=run_id, job=job, inputs=inputs, backend=backend, options=opts,
            cache=item_cache, journal=journaled, recovered=recovered, axes=axes, shapes=shapes,
        )  # fmt: skip
        run = MapRun(engine, self.name, axes=axes)
        engine.start()
        return run

    def _block(self, run: MapRun) -> pd.DataFrame:
        importer = None
        if "pandas" not in sys.modules:  # import it while the items run, not after
            importer = threading.Thread(target=_import_quietly, args=("pandas",), daemon=True)
            importer.start()
        try:
            run.show_until_done(self.progress)
        except (KeyboardInterrupt, SystemExit):  # SystemExit: Ctrl-C once flytekit is imported
            run.cancel(wait=True)
            # One line saying what happened, not a traceback through mapnb's waiting code.
            raise RunInterrupted(run) from None
        finally:
            # The import ends here, whatever happened: a script whose run failed fast would
            # otherwise reach interpreter shutdown mid-import, where the import's
            # atexit registrations fail and print a long traceback after the real error.
            if importer is not None:
                importer.join()
        return run.result()

    def __repr__(self) -> str:
        o = self.options
        need = f"min_successes={o.min_successes}" if o.min_successes is not None else f"min_success_ratio={o.min_success_ratio}"
        return (
            f"MapTask({self.name}, concurrency={o.concurrency}, {need}, "
            f"retries={o.retries}, timeout={o.timeout}, backend={self._backend!r})"
        )


def _job(spec: MapSpec, names: tuple[str, ...], run_id: str) -> Job:
    """What every item of a run shares, as workers need it: the function (positional-only
    parameters mapped by name through a small wrapper) and the caller's setting now."""
    return Job(
        id=uuid.uuid4().hex[:12],  # its own: a recovered run keeps its run id, maybe not its function
        fn=by_name(_callee(spec.fn), names),
        names=names,
        cwd=os.getcwd(),
        sys_path=tuple(sys.path),
        env=dict(os.environ),
        run_id=run_id,
        checkpoints=str(journal.run_dir(run_id) / "checkpoints"),
        requests=spec.requests,
        limits=spec.limits,
        origin=origin_of(spec.fn),
    )


def _callee(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What the items call: a :class:`TaskFunction`'s function (its settings are applied
    in the caller; the wrapper only added a call per item), bound inputs kept."""
    if isinstance(fn, functools.partial) and isinstance(fn.func, TaskFunction):
        return functools.partial(fn.func.__wrapped__, *fn.args, **fn.keywords)
    return fn.__wrapped__ if isinstance(fn, TaskFunction) else fn


def _import_quietly(module: str) -> None:
    """Import ``module`` ahead of need; a failure shows where it is really imported."""
    try:
        importlib.import_module(module)
    except BaseException:  # noqa: BLE001 - the real import later raises it properly
        pass


def _journal_off() -> bool:
    return os.environ.get("MAPNB_JOURNAL", "1").strip().lower() in ("0", "off", "false", "no")


def _recovered(run_id: str, names: tuple[str, ...], inputs: Inputs) -> dict[int, Any]:
    """The succeeded items of an earlier run, checked to be a run of these very items."""
    if not isinstance(run_id, str) or not run_id:
        raise InvalidMapError(f"recover must be a run id (a string such as run.id); got {run_id!r}")
    try:
        meta, done = journal.read(run_id)
    except FileNotFoundError as e:
        raise InvalidMapError(str(e)) from None
    if meta["names"] != ",".join(names) or meta["n"] != len(inputs):
        raise InvalidMapError(
            f"run {run_id} mapped {meta.get('n')} items over ({meta.get('names')}); "
            f"this map has {len(inputs)} items over ({','.join(names)}): recover needs the same items"
        )
    if meta["fingerprint"] is not None and not journal.same_items(meta["fingerprint"], names, inputs):
        raise InvalidMapError(f"run {run_id} mapped other input values; recover needs the same items")
    return done


def recover(run_id: str, *, backend: str | Backend | None = None) -> MapRun:
    """Rebuild run ``run_id`` from its journal and start what is left; return its :class:`MapRun`.

    Works in a new process after the one that ran it died: items that succeeded are
    taken from the journal (they are not computed again), failed and unfinished ones run
    again. ``backend`` overrides the run's own.

    Examples
    --------
    >>> run = mapnb.recover("3f9c0a1b2d4e")  # doctest: +SKIP
    >>> df = run.result()  # doctest: +SKIP
    """
    try:
        meta, done = journal.read(run_id)
        stored = journal.load_run(meta, run_id)
    except FileNotFoundError as e:
        raise InvalidMapError(str(e)) from None
    spec = stored.get("spec") or _spec_of_old_journal(stored)
    chosen = backend if backend is not None else spec.backend or "local"
    mt = MapTask(dataclasses.replace(spec, backend=chosen))
    axes = stored["axes"]
    if axes is not None and stored.get("shapes"):  # a sweep that grew: where each item sits
        axes = _GrownAxes(axes, stored["shapes"])
    return mt._start(stored["names"], stored["inputs"], axes, run_id, done)


class _GrownAxes(list):
    """A grown sweep's axes, carrying the axes' lengths after each growth to ``_start``
    (through subclasses whose ``_start`` passes the axes on as they are)."""

    def __init__(self, axes: list[list[Any]], shapes: list[tuple[int, ...]]) -> None:
        super().__init__(axes)
        self.shapes = shapes


def _spec_of_old_journal(stored: dict[str, Any]) -> MapSpec:
    """A journal entry written before runs stored their MapSpec (mapnb <= 0.1.0)."""
    return MapSpec(
        fn=stored["fn"], name=stored["name"], options=stored["options"], cache=stored["cache"],
        requests=stored["requests"], limits=stored["limits"], backend=stored["backend"],
        progress=stored["progress"],
    )  # fmt: skip


def map_function(
    fn: Callable[..., Any],
    *,
    concurrency: int | None = None,
    min_success_ratio: float | None = None,
    retries: int | None = None,
    timeout: float | datetime.timedelta | None = None,
    backend: str | Backend = "local",
    progress: bool | None = None,
    cache: bool | None = None,
    cache_version: str | None = None,
    cache_serialize: bool | None = None,
    cache_overwrite: bool = False,
    prune: MedianStopping | None = None,
    min_successes: int | None = None,
    run_all_sub_nodes: bool | None = None,
) -> MapTask:
    """:func:`mapnb.map_task` for a plain function, a :func:`task` or a partial of either
    (the parameters are :func:`mapnb.map_task`'s)."""
    if min_success_ratio is None:
        min_success_ratio = 1.0
    check_function(fn)
    settings = _task_settings(fn)
    if retries is None:
        retries = settings.retries if settings else 0
    secs = check_seconds("timeout", timeout)
    if secs is None and settings is not None:
        secs = settings.timeout
    options = Options(
        concurrency=concurrency, min_success_ratio=min_success_ratio, retries=retries, timeout=secs, prune=prune,
        min_successes=min_successes, run_all_sub_nodes=False if run_all_sub_nodes is None else run_all_sub_nodes,
    )  # fmt: skip
    base = settings.cache if settings is not None else CacheSettings()
    caching = CacheSettings.make(
        base.enabled if cache is None else cache,
        cache_version if cache_version is not None else base.version,
        base.serialize if cache_serialize is None else cache_serialize,
        base.ignore,
        cache_overwrite,
    )
    if not isinstance(backend, Backend):
        get_backend(backend)  # unknown names fail here, before anything runs
    if progress not in (None, True, False):
        raise InvalidMapError(f"progress must be True, False or None; got {progress!r}")
    return MapTask(
        MapSpec(
            fn=fn, name=function_name(fn), options=options, cache=caching,
            requests=settings.requests if settings else None, limits=settings.limits if settings else None,
            backend=backend, progress=progress,
        )
    )  # fmt: skip
