"""Flyte 2 tasks (the ``flyte`` SDK) in mapnb: each item runs the task's function, as
Flyte 2 runs a task called outside a run, with the task's settings honoured per item.

What ``mapnb.map_task(env_task)`` takes from an ``@env.task`` (explicit ``map_task``
arguments win):

- ``retries`` (an int or ``flyte.RetryStrategy(count=...)``);
- ``timeout`` (seconds, a ``timedelta`` or ``flyte.Timeout(max_runtime=...)``): each
  attempt's bound, as ``max_runtime`` is on a cluster;
- ``cache`` (``"auto"``, ``"override"`` or ``flyte.Cache(...)``): one entry per item,
  versioned by Flyte's own cache policies (the function body's hash by default, or
  ``version_override``), with ``serialize`` and ``ignored_inputs``;
- ``resources`` (``flyte.Resources``): a single value is the request, a ``(request,
  limit)`` pair both, as Flyte serialises them.

Not honoured locally, with a warning: ``RetryStrategy.backoff`` (retries follow at once),
``Timeout.deadline``/``max_queued_time`` and ``Cache.max_age``.

Each item calls ``task.forward(...)``, what Flyte 2 itself does when a task is called
outside a run: the function runs as written, a sync one directly, an ``async def`` one
to completion where the item runs. ``flyte.ctx()`` is Flyte's falsy null context there
(:func:`mapnb.current_context` has the item's index, attempt and checkpoint), and tasks it
calls run inline, as in any call of a task outside ``flyte.run``.

:func:`map` and :func:`map_aio` are ``flyte.map`` and ``flyte.map.aio`` running the items
in parallel on a mapnb backend.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from .._code import traceback_from
from ..errors import InvalidMapError, RemoteError
from ..events import Status
from ..maptask import MapTask, map_function, task
from ..resources import Resources
from ..run import MapRun
from ..spec import function_name, target_function

_WHAT = "mapnb maps a Flyte 2 task defined with @env.task (env = flyte.TaskEnvironment(...)), sync or async"


def _check_task(obj: Any) -> Any:
    """The Flyte 2 task behind ``obj``, or a clear error for what mapnb cannot run."""
    from flyte._task import AsyncFunctionTaskTemplate

    if isinstance(obj, AsyncFunctionTaskTemplate):
        return obj
    names = {c.__module__ + "." + c.__name__ for c in type(obj).__mro__}
    what = type(obj).__name__
    if any(n.startswith("flyte.remote.") for n in names):
        raise InvalidMapError(f"{what} is a remote Flyte 2 task, which runs on its cluster; {_WHAT}")
    if "flyte._environment.Environment" in names:
        raise InvalidMapError(
            f"{getattr(obj, 'name', what)!r} is a flyte.TaskEnvironment; pass one of its tasks: "
            "mapnb.map_task(my_task), where my_task is decorated with @env.task"
        )
    raise InvalidMapError(f"{what} {getattr(obj, 'name', obj)!r} has no Python function to run; {_WHAT}")


def _unwrap(obj: Any) -> tuple[Any, dict[str, Any]]:
    """The task behind ``functools.partial`` layers, and the inputs they bind, by name
    (positional ones by the task's parameter order, as ``flyte.map`` passes them)."""
    layers = []
    while isinstance(obj, functools.partial):
        layers.append(obj)
        obj = obj.func
    t = _check_task(obj)
    params = list(t.native_interface.inputs)
    bound: dict[str, Any] = {}
    for p in reversed(layers):  # innermost first: its positionals come first
        taken = [n for n in params if n not in bound]
        if len(p.args) > len(taken):
            raise InvalidMapError(
                f"functools.partial binds {len(p.args)} positional inputs of {t.name}, "
                f"which has {len(taken)} left ({', '.join(taken) or 'none'})"
            )
        bound.update(zip(taken, p.args))
        for k, v in p.keywords.items():
            if k not in params:
                raise InvalidMapError(
                    f"{t.name} has no input {k!r}; its inputs are {', '.join(params) or '(none)'}"
                )
            bound[k] = v
    return t, bound


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    return float(value) or None  # Flyte 2: 0 is "no bound"


def _timeout(t: Any) -> float | None:
    from flyte._timeout import Timeout

    timeout = t.timeout
    if not isinstance(timeout, Timeout):
        return _seconds(timeout)
    for name in ("deadline", "max_queued_time"):
        if _seconds(getattr(timeout, name)):
            warnings.warn(
                f"{t.name}: Timeout({name}=...) is not honoured locally; mapnb bounds each attempt "
                "by max_runtime",
                stacklevel=6,
            )
    return _seconds(timeout.max_runtime)


def _retries(t: Any) -> int:
    r = t.retries
    count = int(getattr(r, "count", r) or 0)
    if count and getattr(r, "backoff", None) is not None:
        warnings.warn(
            f"{t.name}: RetryStrategy(backoff=...) is not honoured locally; mapnb retries at once",
            stacklevel=6,
        )
    return count


def _cache(t: Any) -> dict[str, Any]:
    """The task's ``cache`` as :func:`mapnb.task` settings. Enabled for ``"auto"`` and
    ``"override"``, as on a cluster; the version is the one Flyte computes."""
    from flyte._cache.cache import VersionParameters, cache_from_request

    c = cache_from_request(t.cache)
    if not c.is_enabled():
        return dict(cache=False)
    try:
        version: str | None = c.get_version(VersionParameters(func=t.func, image=t.image))
    except (ValueError, OSError, TypeError):  # no source to hash (e.g. a function made by exec)
        version = None  # mapnb then versions by the compiled code
    if c.max_age:
        warnings.warn(
            f"{t.name}: Cache(max_age=...) is not honoured locally; mapnb's cache entries do not expire",
            stacklevel=6,
        )
    return dict(
        cache=True,
        cache_version=version,
        cache_serialize=bool(c.serialize),
        cache_ignore_input_vars=tuple(c.get_ignored_inputs()),
    )


def resources(r: Any) -> tuple[Resources | None, Resources | None]:
    """``flyte.Resources`` as mapnb's (requests, limits), split as Flyte 2 serialises them:
    a ``(request, limit)`` pair sets both, a single value the request only."""
    if r is None:
        return None, None
    req: dict[str, Any] = {}
    lim: dict[str, Any] = {}
    for ours, theirs in (("cpu", "cpu"), ("mem", "memory")):
        v = getattr(r, theirs, None)
        if isinstance(v, tuple):
            req[ours], lim[ours] = v
        elif v is not None:
            req[ours] = v
    device = r.get_device() if getattr(r, "gpu", None) is not None else None
    if device is not None:
        req["gpu"] = int(device.quantity)
    if getattr(r, "disk", None) is not None:
        req["ephemeral_storage"] = r.disk
    return (Resources(**req) if req else None), (Resources(**lim) if lim else None)


def _settings(t: Any) -> dict[str, Any]:
    requests, limits = resources(t.resources)
    return dict(retries=_retries(t), timeout=_timeout(t), requests=requests, limits=limits, **_cache(t))


def adapt(obj: Any) -> tuple[Callable[..., Any], str]:
    """A Flyte 2 task (or a partial of one) as what mapnb maps, and its short name."""
    t, bound = _unwrap(obj)
    tf = task(Flyte2Item(t), **_settings(t))
    # update_wrapper copied the item's attributes: the task travels inside the item only.
    for name in ("_flyte_task", "__signature__"):
        tf.__dict__.pop(name, None)
    fn: Callable[..., Any] = functools.partial(tf, **bound) if bound else tf
    return fn, t.short_name or t.name


def map_flyte2(obj: Any, **options: Any) -> MapTask:
    """:func:`mapnb.map_task` for a Flyte 2 task: its settings, then the caller's."""
    fn, short = adapt(obj)
    mt = map_function(fn, **options)
    mt.name = short
    return mt


class Flyte2Item:
    """One item of a Flyte 2 task: ``task.forward(**inputs)``, as Flyte 2 calls a task
    outside a run (an ``async def`` task's coroutine is run to completion by the worker)."""

    def __init__(self, t: Any) -> None:
        self._flyte_task = t
        fn = t.func
        # target_function() follows __wrapped__ to the user's function: its signature, and
        # the source that versions cache entries when Flyte's own version is unknown.
        self.__mapnb_task__ = True
        self.__wrapped__ = fn
        self.__signature__ = inspect.signature(fn)
        self.__name__, self.__qualname__ = fn.__name__, fn.__qualname__
        self.__module__, self.__doc__ = fn.__module__, fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t = self._flyte_task
        try:
            return t.forward(*args, **kwargs)
        except Exception as e:
            # The item's traceback starts in the task's function, not in Flyte's forward().
            raise e.with_traceback(traceback_from(e.__traceback__, t.func.__code__))  # noqa: B904

    def __repr__(self) -> str:
        return f"<Flyte 2 task {self._flyte_task.name}>"


# --------------------------------------------------------------------------------------
# flyte.map, in parallel.


def _bind_positional(func: Any, n: int) -> tuple[Any, tuple[str, ...], str]:
    """What mapnb maps for ``flyte.map(func, *n iterables)``: the callable, the inputs the
    iterables go to (the first ones a ``functools.partial`` leaves unbound, as ``flyte.map``
    passes them positionally) and a short name."""
    from . import is_flyte2

    layers = []
    inner = func
    while isinstance(inner, functools.partial):
        layers.append(inner)
        inner = inner.func
    if is_flyte2(inner):
        t = _check_task(inner)
        params = list(t.native_interface.inputs)
        fn, short = adapt(func)
    elif callable(inner):
        try:
            sig = inspect.signature(target_function(inner))
        except (TypeError, ValueError):
            raise InvalidMapError(f"map cannot tell the parameters of {function_name(inner)}") from None
        params = [p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        fn, short = func, function_name(inner)
    else:
        raise InvalidMapError(f"map needs a task or a function; got {type(func).__name__} {func!r}")
    bound: set[str] = set()
    for p in reversed(layers):  # innermost first: its positionals fill the first inputs
        taken = [name for name in params if name not in bound]
        bound.update(taken[: len(p.args)])
        bound.update(p.keywords)
    free = [name for name in params if name not in bound]
    if n > len(free):
        raise InvalidMapError(
            f"map got {n} iterables for {short}, whose unbound inputs are {', '.join(free) or '(none)'}"
        )
    return fn, tuple(free[:n]), short


def _check_map_args(concurrency: Any, return_exceptions: Any, min_success_ratio: Any) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 0:
        raise InvalidMapError(
            f"concurrency must be an integer >= 0 (0: as many at once as the backend runs); got {concurrency!r}"
        )
    if not isinstance(return_exceptions, bool):
        raise InvalidMapError(f"return_exceptions must be True or False; got {return_exceptions!r}")
    if min_success_ratio is not None and (
        isinstance(min_success_ratio, bool)
        or not isinstance(min_success_ratio, (int, float))
        or not 0 <= min_success_ratio <= 1
    ):
        raise InvalidMapError(
            f"min_success_ratio must be a number from 0 to 1, or None; got {min_success_ratio!r}"
        )


def _columns(iterables: tuple[Iterable[Any], ...], names: tuple[str, ...], what: str) -> dict[str, list[Any]]:
    """The iterables zipped, as ``flyte.map`` zips them (to the shortest), as mapnb's lists."""
    sized = [len(it) for it in iterables if hasattr(it, "__len__")]  # type: ignore[arg-type]
    if len(sized) == len(iterables) and len(set(sized)) > 1:
        warnings.warn(
            f"map of {what}: the iterables have different lengths ({', '.join(map(str, sized))}); "
            f"as flyte.map, the map stops at the shortest ({min(sized)} items)",
            stacklevel=5,
        )
    rows = list(zip(*iterables))
    return {n: [r[k] for r in rows] for k, n in enumerate(names)}


def _start(
    func: Any,
    iterables: tuple[Iterable[Any], ...],
    group_name: str | None,
    concurrency: int,
    return_exceptions: bool,
    min_success_ratio: float | None,
    backend: Any,
    progress: bool | None,
) -> Callable[[], MapRun | None]:
    """Check everything now; return what starts the run (None: nothing to map)."""
    _check_map_args(concurrency, return_exceptions, min_success_ratio)
    fn, names, short = _bind_positional(func, len(iterables))
    lists = _columns(iterables, names, short)
    # Every item runs, as in flyte.map: a failure is seen where the iteration reaches it.
    # min_success_ratio, when given, stops the run as soon as it cannot be reached.
    mt = map_function(
        fn,
        concurrency=concurrency or None,  # flyte.map's 0 is "no limit": the backend's own
        min_success_ratio=0.0 if min_success_ratio is None else float(min_success_ratio),
        backend=backend,
        progress=progress,
    )
    mt.name = group_name or short

    def start() -> MapRun | None:
        if not names or not lists[names[0]]:
            return None
        run = mt.submit(**lists)
        if progress is not False:
            run.show()  # the live grid, in a notebook only
        return run

    return start


def as_exception(run: MapRun, index: int) -> BaseException:
    """Item ``index``'s failure as the exception ``flyte.map`` yields or raises for it: a
    ``flyte.errors.RuntimeUserError`` whose ``code`` is the exception's type (as in a Flyte 2
    run), with the item's own traceback as ``__cause__``."""
    err = run.errors[index]
    assert err is not None
    try:
        from flyte import errors as fe
    except ImportError:  # a plain function mapped without flyte installed
        return RemoteError(err.traceback or err.one_line())
    exc: BaseException
    if err.kind == "timeout":
        exc = fe.MaxRuntimeExceededError(err.message)
    elif err.kind == "memory":
        exc = fe.OOMError(err.type, err.message)
    elif err.kind == "worker-died":
        exc = fe.RuntimeSystemError(err.type, err.message)
    else:
        exc = fe.RuntimeUserError(err.type, err.message)
    if err.traceback:
        exc.__cause__ = RemoteError(err.traceback)
    return exc


def _outcome(run: MapRun, i: int, return_exceptions: bool) -> Any:
    status = run.statuses[i]
    if status in (Status.SUCCEEDED, Status.CACHED):
        return run.outputs[i]
    if status is Status.FAILED:
        exc = as_exception(run, i)
        if return_exceptions:
            return exc
        raise exc
    # Aborted or cancelled: the run stopped short (min_success_ratio, or Cancel).
    run.wait()
    error = run.exception()
    raise error if error is not None else RuntimeError(f"item {i} of run {run.id} did not run")


def _check_ratio(run: MapRun) -> None:
    """Every item is done: the run may still have fallen short of its min_success_ratio."""
    run.wait()
    if run.state == "failed":
        error = run.exception()
        if error is not None:
            raise error


class _Watch:
    """Wakes a waiter whenever the run reports something."""

    def __init__(self, run: MapRun) -> None:
        self.changed = threading.Condition()
        self._unsubscribe = run.subscribe(self._notify)

    def _notify(self, events: list[Any]) -> None:
        with self.changed:
            self.changed.notify_all()

    def close(self) -> None:
        self._unsubscribe()


def map_sync(
    func: Any,
    *iterables: Iterable[Any],
    group_name: str | None = None,
    concurrency: int = 0,
    return_exceptions: bool = True,
    min_success_ratio: float | None = None,
    backend: Any = "local",
    progress: bool | None = None,
) -> Iterator[Any]:
    """See :data:`mapnb.flyte.map`."""
    if not iterables:
        return iter(())
    start = _start(
        func, iterables, group_name, concurrency, return_exceptions, min_success_ratio, backend, progress
    )
    return _results(start, return_exceptions)


def _results(start: Callable[[], MapRun | None], return_exceptions: bool) -> Iterator[Any]:
    run = start()  # on the first next(), as flyte.map's generator
    if run is None:
        return
    watch = _Watch(run)
    try:
        for i in range(len(run)):
            with watch.changed:
                while not run.statuses[i].final:
                    watch.changed.wait(0.5)  # a bound: a missed wake-up costs half a second
            yield _outcome(run, i, return_exceptions)
        _check_ratio(run)
    finally:
        watch.close()
        if not run.done():  # an early exit, an error, an interrupt: nothing keeps running
            run.cancel(wait=True)


def map_aio(
    func: Any,
    *iterables: Iterable[Any],
    group_name: str | None = None,
    concurrency: int = 0,
    return_exceptions: bool = True,
    min_success_ratio: float | None = None,
    backend: Any = "local",
    progress: bool | None = None,
) -> AsyncIterator[Any]:
    """See :data:`mapnb.flyte.map` (``.aio``)."""
    start = None
    if iterables:
        start = _start(
            func, iterables, group_name, concurrency, return_exceptions, min_success_ratio, backend, progress
        )
    return _results_aio(start, return_exceptions)


async def _results_aio(
    start: Callable[[], MapRun | None] | None, return_exceptions: bool
) -> AsyncIterator[Any]:
    run = start() if start is not None else None
    if run is None:
        return
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def notify(events: list[Any]) -> None:
        loop.call_soon_threadsafe(changed.set)

    unsubscribe = run.subscribe(notify)
    try:
        for i in range(len(run)):
            while not run.statuses[i].final:
                changed.clear()
                if run.statuses[i].final:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
            yield _outcome(run, i, return_exceptions)
        await asyncio.to_thread(run.wait)
        _check_ratio(run)  # done now; in the caller's thread, which brings a shown grid's picture up to date
    finally:
        unsubscribe()
        if not run.done():
            await asyncio.to_thread(run.cancel, True)
