"""flytekit 1.x tasks in :func:`mapnb.map_task`: each item is one subtask, run as Flyte runs it.

What ``mapnb.map_task`` takes from flytekit's objects (explicit ``map_task`` arguments win):

- ``@flytekit.task`` ``t`` (a ``PythonFunctionTask``): its ``retries``, ``timeout``,
  ``cache`` (``True``, ``flytekit.Cache(version=, serialize=, ignored_inputs=)``, or the
  older ``cache_version``/``cache_serialize``/``cache_ignore_input_vars``) and its
  ``requests``/``limits`` (as :class:`mapnb.Resources`, Kubernetes units accepted).
- a ``PythonInstanceTask`` (``ShellTask``, ...): the same, its interface as signature.
- ``functools.partial(t, b=...)``: ``b`` is the same for every item.
- ``flytekit.map_task(t, concurrency=, min_success_ratio=, min_successes=, metadata=,
  run_all_sub_nodes=)``: those settings, and its bound inputs. ``mapnb.map_task`` takes
  ``min_successes=``, ``run_all_sub_nodes=`` and ``metadata=`` directly too.
- the older ``flytekit.core.legacy_map_task.map_task(t, concurrency=, min_success_ratio=,
  metadata=)`` (an array job on a cluster): the same way.

Each item runs the task's function between flytekit's own type conversions (an element
of the wrong type fails that item with flytekit's message), in a flytekit execution
context whose ``flytekit.current_context().checkpoint`` is the item's mapnb checkpoint: a
retry sees what the attempt before saved, as on a cluster. Outputs come back as flytekit
returns them locally: a ``FlyteFile``/``FlyteDirectory`` with a local path, a
``StructuredDataset`` (``.open(pd.DataFrame).all()``), or the DataFrame when the task is
annotated so.

What Flyte refuses in a map task is refused here before anything runs: tasks with more
than one output, ``@dynamic`` and ``@eager`` tasks, workflows and launch plans.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import inspect
import logging
import os
import signal
import threading
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import cloudpickle

from .._code import traceback_from
from ..cache import CacheSettings
from ..errors import InvalidMapError
from ..maptask import MapTask, map_function, task
from ..resources import Resources, from_flytekit
from . import _fast
from ._item import clean_up, lazy_checkpoint, sandbox

if TYPE_CHECKING:
    from flytekit.core.python_function_task import PythonFunctionTask

# flytekit is imported inside the functions: a worker that unpickles an item imports it,
# and then puts its own SIGINT handler back (importing flytekit replaces it; see
# FlyteItem.__reduce__).

log = logging.getLogger(__name__)

# with_overrides(...) settings that say which container a subtask runs in on a cluster:
# a local item runs in a worker process, so they have no meaning here (flytekit's own
# local run accepts and ignores them too; its tests override container_image so). They
# are kept for backend="flyte", which sets them on the ArrayNode (mapnb.flyte._translate).
_CONTAINER_ONLY = frozenset({"container_image", "pod_template"})

_MAP_HINT = (
    "map a @task over lists instead: mapnb.map_task(my_task)(x=[...]), "
    "and run the workflow's other steps before or after it"
)


def _refuse(obj: Any) -> None:
    """A clear error for the flytekit objects a map task cannot run (as Flyte refuses them)."""
    names = {c.__module__ + "." + c.__name__ for c in type(obj).__mro__}
    what = type(obj).__name__
    if "flytekit.core.workflow.WorkflowBase" in names:
        raise InvalidMapError(
            f"{getattr(obj, 'name', what)} is a flytekit workflow; mapnb maps tasks, not workflows: {_MAP_HINT}"
        )
    if "flytekit.core.launch_plan.LaunchPlan" in names:
        raise InvalidMapError(
            f"{getattr(obj, 'name', what)} is a flytekit launch plan; a launch plan is mapped on a Flyte "
            f"cluster (flytekit.map_task(launch_plan) in a workflow), not locally: {_MAP_HINT}"
        )
    if "flytekit.core.array_node.ArrayNode" in names:
        raise InvalidMapError(
            "this is flytekit.map_task over a launch plan or reference entity, which only a Flyte cluster runs; "
            "pass a @task to mapnb.map_task instead"
        )
    if any(n.startswith("flytekit.remote.") for n in names):
        raise InvalidMapError(f"{what} is a remote Flyte entity, which runs on its cluster; {_MAP_HINT}")
    if "flytekit.core.reference_entity.ReferenceEntity" in names:
        raise InvalidMapError(
            f"{what} is a reference to a registered Flyte entity; mapnb needs the @task's code"
        )
    raise InvalidMapError(
        f"mapnb.map_task takes a @flytekit.task, a functools.partial of one, or flytekit.map_task(...) "
        "(or the legacy map_task) of one; "
        f"got {what} {obj!r}"
    )


def _check_task(t: Any) -> PythonFunctionTask:
    from flytekit.core.python_function_task import PythonFunctionTask, PythonInstanceTask

    if isinstance(t, PythonInstanceTask):  # ShellTask and the like: flytekit maps them too
        _check_outputs(t)
        return t
    if not isinstance(t, PythonFunctionTask):
        _refuse(t)
    name = t.name
    mode = t.execution_mode
    if mode == PythonFunctionTask.ExecutionBehavior.DYNAMIC:
        raise InvalidMapError(
            f"{name} is a @dynamic task, which Flyte does not map (a map task's items are single tasks); "
            "map the @task(s) it calls instead, or call the dynamic task once"
        )
    eager = getattr(PythonFunctionTask.ExecutionBehavior, "EAGER", None)  # flytekit >= 1.11
    if (eager is not None and mode == eager) or getattr(t.metadata, "is_eager", False):
        raise InvalidMapError(
            f"{name} is an @eager workflow, which Flyte does not map; "
            "map the @task(s) it calls instead, or call it once (asyncio.run(...))"
        )
    if inspect.iscoroutinefunction(t.task_function):
        raise InvalidMapError(f"{name} is an async task; mapnb maps flytekit tasks defined with a plain def")
    _check_outputs(t)
    return t


def _check_outputs(t: Any) -> None:
    outputs = list(t.python_interface.outputs)
    if len(outputs) > 1:
        raise InvalidMapError(
            f"{t.name} has {len(outputs)} outputs ({', '.join(outputs)}); a Flyte map task needs one output: "
            "return a dataclass (mapnb splits it into columns) or a tuple annotated as one value"
        )


def _resources(r: Any) -> Resources | None:
    """flytekit's ``Resources`` (requests or limits) as mapnb's, or None when empty."""
    return None if r is None else from_flytekit(r)


def _settings(t: PythonFunctionTask, metadata: Any) -> dict[str, Any]:
    """The task's metadata as :func:`mapnb.task` settings."""
    spec = getattr(t, "resources", None)
    caching = bool(metadata.cache)
    return dict(
        retries=int(metadata.retries or 0),
        timeout=metadata.timeout or None,  # flytekit: 0 is "no timeout"
        cache=caching,
        # flytekit's "" means "not set": mapnb then versions by the function's source.
        cache_version=(metadata.cache_version or None) if caching else None,
        cache_serialize=bool(metadata.cache_serialize) if caching else False,
        cache_ignore_input_vars=tuple(metadata.cache_ignore_input_vars or ()) if caching else (),
        requests=_resources(getattr(spec, "requests", None)),
        limits=_resources(getattr(spec, "limits", None)),
    )


def _check_bound(t: PythonFunctionTask, bound: dict[str, Any]) -> None:
    """Bound inputs go through flytekit's type check once, before any item runs."""
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.promise import translate_inputs_to_literals

    inputs = t.interface.inputs
    unknown = [k for k in bound if k not in inputs]
    if unknown:
        raise InvalidMapError(
            f"{t.name} has no input {', '.join(map(repr, unknown))}; its inputs are {', '.join(inputs) or '(none)'}"
        )
    types_ = t.get_input_types()
    try:
        translate_inputs_to_literals(
            FlyteContextManager.current_context(),
            incoming_values=dict(bound),
            flyte_interface_types={k: inputs[k] for k in bound},
            native_types={k: types_[k] for k in bound},
        )
    except Exception as e:
        raise InvalidMapError(f"bound input of {t.name} has the wrong type: {e}") from None


def adapt(obj: Any, metadata: Any = None) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A flytekit object as what mapnb maps, and the map's own settings (when it is a
    ``flytekit.map_task``): ``concurrency``, ``min_success_ratio``, ``min_successes``,
    ``run_all_sub_nodes``. ``metadata`` (a ``TaskMetadata``) replaces the task's and the
    map's, as ``flytekit.map_task(t, metadata=...)`` does."""
    from flytekit.core.array_node_map_task import ArrayNodeMapTask
    from flytekit.core.base_task import TaskMetadata

    if metadata is not None and not isinstance(metadata, TaskMetadata):
        raise InvalidMapError(
            f"metadata must be a flytekit.TaskMetadata(retries=, timeout=, cache=, ...) or None; "
            f"got {type(metadata).__name__} {metadata!r}"
        )
    obj, bound = _unpartial(obj)
    defaults: dict[str, Any] = {}
    if isinstance(obj, ArrayNodeMapTask):
        defaults, bound = _map_settings(obj, bound)
        metadata = metadata or obj.metadata
        obj = obj.python_function_task
    elif _is_legacy_map(obj):
        defaults, bound = _legacy_map_settings(obj, bound)
        metadata = metadata or obj.metadata
        obj = obj.run_task
    t = _check_task(obj)
    if bound:
        _check_bound(t, bound)
    item = FlyteItem(t)
    # The map's own TaskMetadata replaces the task's on a cluster too (interruptible, ...):
    # backend="flyte" starts from it (mapnb.flyte._translate).
    item.map_metadata = metadata
    tf = task(item, **_settings(t, metadata or t.metadata))
    # functools.update_wrapper copied the item's attributes: the task (and the signature's
    # flytekit types, the map's TaskMetadata) would then travel outside FlyteItem's own
    # pickling, which keeps the worker's SIGINT handler. The signature is found through
    # __wrapped__.
    for name in ("_flyte_task", "__signature__", "map_metadata", "_run", "_positional"):
        tf.__dict__.pop(name, None)
    fn: Callable[..., Any] = tf
    if bound:
        fn = functools.partial(fn, **bound)
    return fn, defaults


def _unpartial(obj: Any) -> tuple[Any, dict[str, Any]]:
    """What a ``functools.partial`` (of a partial...) wraps, and the inputs it binds."""
    bound: dict[str, Any] = {}
    while isinstance(obj, functools.partial):
        if obj.args:
            raise InvalidMapError("bind a flytekit task's inputs by name: functools.partial(t, b=...)")
        bound = {**obj.keywords, **bound}
        obj = obj.func
    return obj, bound


def _map_settings(obj: Any, bound: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``flytekit.map_task``'s own settings for the map, and the inputs bound with its
    ``partial`` and ``bound_inputs`` added to ``bound``."""
    defaults: dict[str, Any] = {}
    # getattr: not every flytekit >= 1.10 has every setting.
    defaults["concurrency"] = obj.concurrency or None  # 0: unbounded on Flyte, the backend's limit here
    defaults["min_successes"] = getattr(obj, "min_successes", None)
    defaults["min_success_ratio"] = obj.min_success_ratio
    defaults["run_all_sub_nodes"] = bool(getattr(obj, "run_all_sub_nodes", False))
    partial = getattr(obj, "_partial", None)  # flytekit keeps a partial's inputs only here
    if partial is not None:
        bound = {**partial.keywords, **bound}
    # As flytekit: bound values win over partials.
    bound = {**bound, **(getattr(obj, "_bound_inputs_values", None) or {})}
    return defaults, bound


def _is_legacy_map(obj: Any) -> bool:
    """Whether ``obj`` is flytekit's older map task (``flytekit.core.legacy_map_task``'s
    ``MapPythonTask``, an array job on a cluster): mapped the same way as the ArrayNode one."""
    return any(
        c.__module__ == "flytekit.core.legacy_map_task" and c.__name__ == "MapPythonTask" for c in type(obj).__mro__
    )


def _legacy_map_settings(obj: Any, bound: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A legacy ``map_task``'s ``concurrency`` and ``min_success_ratio`` (it has no others),
    and the inputs its partial binds added to ``bound``."""
    defaults: dict[str, Any] = {
        "concurrency": getattr(obj, "_max_concurrency", None) or None,
        "min_success_ratio": getattr(obj, "_min_success_ratio", None),
        "min_successes": None,
        "run_all_sub_nodes": False,
    }
    partial = getattr(obj, "_partial", None)  # the legacy map keeps a partial's inputs here
    if partial is not None:
        bound = {**partial.keywords, **bound}
    return defaults, bound


class FlyteMapTask(MapTask):
    """A :class:`~mapnb.MapTask` of a flytekit task, with :meth:`with_overrides` as
    flytekit's nodes have it."""

    #: ``container_image``/``pod_template`` given to :meth:`with_overrides`: no meaning for a
    #: local run; ``backend="flyte"`` sets them on the ArrayNode.
    container_overrides: dict[str, Any]

    @classmethod
    def of(cls, mt: MapTask) -> FlyteMapTask:
        out = cls.__new__(cls)
        out.__dict__.update(mt.__dict__)
        out.__dict__.setdefault("container_overrides", {})
        return out

    def with_overrides(
        self,
        *,
        requests: Any = None,
        limits: Any = None,
        resources: Any = None,
        retries: int | None = None,
        timeout: float | datetime.timedelta | None = None,
        cache: Any = None,
        cache_version: str | None = None,
        cache_serialize: bool | None = None,
        **other: Any,
    ) -> FlyteMapTask:
        """A copy with other settings for every subtask, as flytekit's
        ``map_task(t)(...).with_overrides(...)`` on a cluster.

        ``requests``/``limits`` take ``mapnb.Resources`` or ``flytekit.Resources``;
        ``resources`` a ``flytekit.Resources`` whose values may be ``(request, limit)``
        pairs; ``cache`` a bool or ``flytekit.Cache``.
        """
        container = {k: other.pop(k) for k in sorted(_CONTAINER_ONLY.intersection(other))}
        if container:
            log.info("with_overrides(%s=...): ignored by a local map, kept for backend='flyte'", ", ".join(container))
        if other:
            raise InvalidMapError(
                f"with_overrides({', '.join(sorted(other))}=...) has no meaning for a local map; "
                "mapnb takes requests, limits, resources, retries, timeout, cache, cache_version, "
                "cache_serialize (and ignores container_image, pod_template)"
            )
        if resources is not None:
            req, lim = _split_resources(resources)
            requests = req if requests is None else requests
            limits = lim if limits is None else limits
        mt = MapTask.with_overrides(self, requests=requests, limits=limits)
        opts = self.options
        if retries is not None or timeout is not None:
            if isinstance(timeout, datetime.timedelta):
                timeout = timeout.total_seconds()
            opts = dataclasses.replace(
                opts,
                retries=opts.retries if retries is None else retries,
                timeout=opts.timeout if timeout is None else timeout,
            )
        mt.options = opts
        if cache is not None or cache_version is not None or cache_serialize is not None:
            base = self.cache
            ignore = base.ignore
            if cache is not None and not isinstance(cache, bool):  # flytekit.Cache
                cache_version = cache_version if cache_version is not None else cache.version
                cache_serialize = cache_serialize if cache_serialize is not None else cache.serialize
                ignore = tuple(cache.get_ignored_inputs()) or ignore
                cache = True
            enabled = base.enabled if cache is None else cache
            mt.cache = CacheSettings.make(
                enabled,
                (cache_version if cache_version is not None else base.version) if enabled else None,
                (base.serialize if cache_serialize is None else cache_serialize) if enabled else False,
                ignore if enabled else (),
                base.overwrite if enabled else False,
            )
        out = FlyteMapTask.of(mt)
        out.container_overrides = {**self.container_overrides, **container}
        return out


def _split_resources(r: Any) -> tuple[Resources | None, Resources | None]:
    """flytekit's ``resources=Resources(cpu=("1", "2"), mem="1Gi")`` as requests and limits,
    split by flytekit itself (a pair is (request, limit); a single value is the request)."""
    if not (hasattr(r, "requests") and hasattr(r, "limits")):  # not already a ResourceSpec
        from flytekit.core.resources import ResourceSpec

        r = ResourceSpec.from_multiple_resource(r)
    return _resources(r.requests), _resources(r.limits)


def map_flytekit(obj: Any, *, metadata: Any = None, **options: Any) -> FlyteMapTask:
    """:func:`mapnb.map_task` for a flytekit object: its settings, then the caller's.

    The caller's ``min_successes`` or ``min_success_ratio`` replace both of the map's
    (between the two, ``min_successes`` wins, as in flytekit and on Flyte)."""
    fn, defaults = adapt(obj, metadata)
    if options.get("min_successes") is not None or options.get("min_success_ratio") is not None:
        defaults.pop("min_successes", None)
        defaults.pop("min_success_ratio", None)
    for k, v in defaults.items():
        if options.get(k) is None:
            options[k] = v
    return FlyteMapTask.of(map_function(fn, **options))


# --------------------------------------------------------------------------------------
# What runs per item (in the worker).


@contextlib.contextmanager
def _keep_sigint() -> Iterator[None]:
    """Importing flytekit installs its own SIGINT handler; a worker keeps ignoring Ctrl-C
    (the caller cancels the run)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main and before is not None and signal.getsignal(signal.SIGINT) is not before:
            signal.signal(signal.SIGINT, before)


def _restore(blob: bytes) -> FlyteItem:
    """A FlyteItem as mapnb pickled it before 2026-11-28: its task nested as cloudpickle
    bytes (kept for the specs in older journals, which :func:`mapnb.recover` loads)."""
    with _keep_sigint():
        return FlyteItem(cloudpickle.loads(blob))


_INTERFACE_STATE = frozenset({"_inputs", "_outputs", "_output_tuple_name", "_output_tuple_class", "_docstring"})


class _Interface:
    """Stands for a flytekit ``Interface`` in a pickled task: rebuilt by its constructor
    where it is loaded. Its output class, which the constructor makes, would otherwise
    travel by value: two thirds of the time and bytes of pickling a task, every run."""

    def __init__(self, interface: Any) -> None:
        self.interface = interface

    def __reduce__(self) -> tuple[Any, ...]:
        i = self.interface
        return (type(i), (i._inputs, i._outputs, i._output_tuple_name, i._docstring))  # noqa: SLF001


def _rebuildable(value: Any) -> bool:
    """Whether ``value`` is a flytekit ``Interface`` that its constructor makes again as it is."""
    from flytekit.core.interface import Interface

    if type(value) is not Interface:
        return False
    state = set(vars(value))
    return state <= _INTERFACE_STATE and ("_output_tuple_class" in state) == bool(value._outputs)  # noqa: SLF001


class _OwnMethod:
    """Stands for a method of the task bound to the task itself (flytekit keeps one)."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Task:
    """Stands for a task in a pickled FlyteItem: its class and attributes, with what can
    be made again where it is loaded left out (see :class:`_Interface`)."""

    def __init__(self, cls: type, parts: dict[str, Any]) -> None:
        self.cls, self.parts = cls, parts

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task, (self.cls, self.parts))


def _task_parts(t: Any) -> Any:
    """Task ``t`` as it is pickled: a :class:`_Task`, or ``t`` itself when it is not
    pickled the default way (its class's own pickling, attributes in ``__slots__``)."""
    cls: Any = type(t)
    base: Any = object
    default = (
        cls.__reduce_ex__ is base.__reduce_ex__
        and cls.__reduce__ is base.__reduce__
        and getattr(cls, "__getstate__", None) is getattr(base, "__getstate__", 0)
        and not hasattr(cls, "__setstate__")
    )
    state = t.__getstate__() if default else None
    if not isinstance(state, dict):  # (a tuple: attributes in __slots__ too)
        return t
    parts: dict[str, Any] = {}
    stand_ins: dict[int, _Interface] = {}  # one for an interface held twice (native and python)
    for k, v in state.items():
        if _rebuildable(v):
            v = stand_ins.setdefault(id(v), _Interface(v))
        elif _own_method(t, v):
            v = _OwnMethod(v.__name__)
        parts[k] = v
    return _Task(cls, parts)


def _own_method(t: Any, v: Any) -> bool:
    """Whether ``v`` is ``t``'s own method bound to ``t`` (``t.get_default_command``)."""
    func = getattr(v, "__func__", None)
    return func is not None and getattr(v, "__self__", None) is t and getattr(type(t), v.__name__, None) is func


def _rebuild_task(cls: Any, parts: dict[str, Any]) -> Any:
    """The task from a :class:`_Task` (as pickle makes an object: no ``__init__``)."""
    t = cls.__new__(cls)
    t.__dict__.update({k: getattr(t, v.name) if isinstance(v, _OwnMethod) else v for k, v in parts.items()})
    return t


def _sigint_handler() -> Any:
    """The SIGINT handler in force (None off the main thread): unpickled before the task
    it travels with (pickle loads arguments in order), that is, before flytekit's import."""
    return signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None


class _SigintBefore:
    """Stands for :func:`_sigint_handler`'s value in a pickled FlyteItem."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_sigint_handler, ())


def _restored(before: Any, t: Any) -> FlyteItem:
    """A FlyteItem once its task is loaded: importing flytekit installed flytekit's SIGINT
    handler; a worker keeps ignoring Ctrl-C (the caller cancels the run)."""
    if before is not None and signal.getsignal(signal.SIGINT) is not before:
        signal.signal(signal.SIGINT, before)
    return FlyteItem(t)


class FlyteItem:
    """One item of a flytekit task: its function between flytekit's type conversions
    (checked without them, on the fast path, for simple types: :mod:`mapnb.flyte._fast`)."""

    def __init__(self, t: PythonFunctionTask) -> None:
        self._flyte_task = t
        self.map_metadata: Any = None  # a flytekit map's TaskMetadata (not the task's), if any
        self._run: _fast.Run | None = None  # how an item runs (see _runner), made on first call
        self._positional: tuple[str, ...] = ()  # the function's parameters that take a position
        fn = getattr(t, "task_function", None)
        if fn is not None:
            # target_function() follows __wrapped__ to the task's function: names, signature
            # and the source that versions cache entries are the user's.
            self.__mapnb_task__ = True
            self.__wrapped__ = fn
            self.__signature__ = inspect.signature(fn)
            kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            self._positional = tuple(n for n, p in self.__signature__.parameters.items() if p.kind in kinds)
            self.__name__, self.__qualname__ = fn.__name__, fn.__qualname__
            self.__module__, self.__doc__ = fn.__module__, fn.__doc__
            return
        # A PythonInstanceTask (ShellTask, ...) has no function: its interface is the
        # signature, its name the identity (cache entries need a cache_version to change).
        defaults = t.python_interface.default_inputs_as_kwargs
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    n, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(n, inspect.Parameter.empty)
                )
                for n in t.python_interface.inputs
            ]
        )
        self.__name__ = t.name.rsplit(".", 1)[-1]
        self.__qualname__ = t.name
        self.__module__ = type(t).__module__
        self.__doc__ = getattr(t, "__doc__", None)

    @property
    def __code__(self) -> types.CodeType:
        """The task function's code: what the engine knows a function by (it starts a map
        of the same code again from the item durations it measured; without it, every run
        of a flytekit task probed them anew), and what tells a worker that the items' inputs
        can be passed by position. AttributeError for a task without a function."""
        fn = self.__dict__.get("__wrapped__")
        if fn is None:
            raise AttributeError("__code__")
        return fn.__code__

    def __reduce__(self) -> tuple[Any, ...]:
        # The task whole (the pickler is cloudpickle's for a task defined in a notebook:
        # it travels by value), after the worker's SIGINT handler, which is put back once
        # the task is loaded. Not nested as cloudpickle bytes: mapnb pickles a job with the
        # standard pickler first, and the task was then pickled twice per run.
        return (_restored, (_SigintBefore(), _task_parts(self._flyte_task)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = self._run
        if run is None:  # decided on the first call (in the worker), kept for the next items
            run = self._run = self._runner()
        try:
            return run(args, kwargs)
        except Exception as e:
            # The item's traceback starts in the user's function, not in flytekit's plumbing
            # (its own __cause__, if any, is kept).
            fn = getattr(self._flyte_task, "task_function", None)
            if fn is None:
                raise
            raise e.with_traceback(traceback_from(e.__traceback__, fn.__code__))  # noqa: B904

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The inputs of a call, all by name (as flytekit's full path takes them)."""
        if not args:
            return kwargs
        if not kwargs and len(args) <= len(self._positional):  # how a worker calls it
            return dict(zip(self._positional, args))
        return dict(self.__signature__.bind_partial(*args, **kwargs).arguments)

    def _runner(self) -> _fast.Run:
        """How an item runs: on the fast path (:mod:`mapnb.flyte._fast`) for a task of
        simple types, else through flytekit's full path."""
        t, bind = self._flyte_task, self._bind
        plan = _fast.plan_for(t)
        if plan is not None:
            return _fast.runner(plan, t, _execute, bind)
        return lambda args, kwargs: _execute(t, bind(args, kwargs))

    def __repr__(self) -> str:
        return f"<flytekit task {self._flyte_task.name}>"


def _params(base: Any, workdir: str) -> Any:
    """flytekit's ``current_context()`` for this item: mapnb's run as the execution id,
    and the item's mapnb checkpoint (this attempt's folder; the last one that saved)."""
    from flytekit.core.checkpointer import SyncCheckpoint
    from flytekit.core.context_manager import ExecutionParameters
    from flytekit.interfaces.cli_identifiers import WorkflowExecutionIdentifier

    from ..context import current_context

    item = current_context()
    # Items on threads share flytekit's context stack: the base may be another item's
    # parameters, whose working folder copying must not make (it would outlive its item).
    base = getattr(base, "__dict__", {}).get("_mapnb_base", base)  # (its __getattr__ raises AssertionError)
    b = ExecutionParameters.new_builder(base)
    b.working_dir = None  # build() would make the folder: set below, made on first use
    cp = item.checkpoint
    dest = cp._dir(cp._attempt)  # noqa: SLF001 (mapnb's own checkpoint layout)
    prev = cp._prev  # noqa: SLF001
    b.checkpoint = lazy_checkpoint(SyncCheckpoint, str(dest), str(prev) if prev else None)
    if item.run_id is not None:
        b.execution_id = WorkflowExecutionIdentifier("local", "local", str(item.run_id))
        b.attrs = {
            **b.attrs,
            "ARRAY_INDEX": item.index,
            "ATTEMPT": item.attempt,
        }  # flytekit upper-cases names
    params = b.build()
    params.__class__ = _lazy_workdir_params()
    params._working_directory = workdir  # noqa: SLF001
    params._mapnb_base = base  # noqa: SLF001
    return params


@functools.cache
def _lazy_workdir_params() -> type:
    from flytekit.core.context_manager import ExecutionParameters

    class LazyWorkdirParams(ExecutionParameters):
        """flytekit's ``ExecutionParameters`` whose working folder is made when first asked
        for: most items never ask, and making and removing a folder per item was most of a
        trivial item's time in a worker (flytekit's own calls of a task do not read it)."""

        @property
        def working_directory(self) -> str:
            path = self._working_directory
            os.makedirs(path, exist_ok=True)
            return path

    return LazyWorkdirParams


def _execute(t: PythonFunctionTask, kwargs: dict[str, Any]) -> Any:
    """Run one item as flytekit's local execution of ``t`` does, less its local cache
    (mapnb caches per item) and with the item's checkpoint."""
    from flytekit.core.context_manager import ExecutionState, FlyteContextManager, OutputMetadataTracker
    from flytekit.core.promise import (
        Promise,
        create_native_named_tuple,
        create_task_output,
        translate_inputs_to_literals,
    )
    from flytekit.core.type_engine import TypeTransformerFailedError
    from flytekit.models.literals import LiteralMap

    ctx = FlyteContextManager.current_context()
    workdir, temporary = sandbox()
    ok = False
    try:
        es = ctx.new_execution_state().with_params(
            mode=ExecutionState.Mode.LOCAL_TASK_EXECUTION,
            user_space_params=_params(ctx.user_space_params, workdir),
        )
        with FlyteContextManager.with_context(
            ctx.with_execution_state(es).with_output_metadata_tracker(OutputMetadataTracker())
        ) as child:
            try:
                literals = translate_inputs_to_literals(
                    child,
                    incoming_values=kwargs,
                    flyte_interface_types=t.interface.inputs,
                    native_types=t.get_input_types(),
                )
            except TypeTransformerFailedError as exc:  # worded as flytekit's local_execute words it
                from ._errors import TypeTransformerFailedError as NotRetriedError

                # Not retried: the same inputs fail the same way on every attempt.
                raise NotRetriedError(f"Failed to convert inputs of task '{t.name}':\n  {exc.args[0]}") from None
            out = t.dispatch_execute(child, LiteralMap(literals=literals))
            names = list(t.interface.outputs)
            result = None
            if names:
                promises = create_task_output(
                    [Promise(n, out.literals[n]) for n in names], t.python_interface
                )
                result = create_native_named_tuple(child, promises, t.python_interface)
            ok = True
            return result
    finally:
        clean_up(workdir, temporary, ok)
