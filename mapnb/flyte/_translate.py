"""A mapnb map task as the flytekit ArrayNode map task a Flyte cluster runs.

:func:`to_flyte` builds, from a :class:`~mapnb.MapTask`, what a Flyte user would have
written by hand::

    @task(retries=..., timeout=..., cache=Cache(...))      # the item function
    def f(x: int, b: str) -> float: ...

    @workflow
    def mapnb_f(x: list[int]) -> list[float | None]:
        return map_task(functools.partial(f, b="fixed"), concurrency=..., min_success_ratio=...)(x=x)
        #  .with_overrides(requests=Resources(...), limits=Resources(...))

What goes where (checked by ``tests/test_flyte_remote.py`` on flytekit's own serialised
models, as ``pyflyte register`` would send them):

=================================  ========================================================
mapnb                              the ArrayNode
=================================  ========================================================
``concurrency``                    ``parallelism`` (None: the workflow's, as in flytekit)
``min_success_ratio``              ``min_success_ratio``
``min_successes``                  ``min_successes`` (instead of the ratio: Flyte keeps one)
``run_all_sub_nodes``              ``run_all_sub_nodes``
``retries``, ``timeout``           the sub-node's retry strategy and timeout
``cache`` (+ version, serialize,   the sub-task's ``discoverable``, ``discovery_version``,
ignored inputs)                    ``cache_serializable``, ``cache_ignore_input_vars``;
                                   without a version: mapnb's own (from the source)
``requests``, ``limits``           the sub-node's resource overrides
``container_image``,               the node's overrides (a local run ignores them)
``pod_template`` (with_overrides)
a ``functools.partial``'s values   bound inputs: scalar literals on the node, not lists
=================================  ========================================================

A plain function (or a ``%%map_task`` cell) becomes a ``PythonFunctionTask`` whose
interface comes from its annotations; an input without one takes the type its values
share (``int``, ``float``, ``str``, ``bool``), else this refuses it, asking for an
annotation. A cell's output has no annotation to read: it travels as ``typing.Any``
(flytekit pickles it). A flytekit task (``mapnb.map_task(my_task, backend="flyte")``) is
used as it is; mapnb's settings (its own by default) become the map's.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import inspect
import itertools
import linecache
import re
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidMapError
from ..spec import function_name

if TYPE_CHECKING:
    from flytekit.core.array_node_map_task import ArrayNodeMapTask
    from flytekit.core.python_function_task import PythonFunctionTask
    from flytekit.core.workflow import ImperativeWorkflow

    from ..maptask import MapTask
    from ..resources import Resources

# Types an unannotated input may take from its values (what Flyte has a literal for).
_INFERABLE = (bool, int, float, str)
_counter = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class FlyteMap:
    """A map task translated to flytekit: what :func:`to_flyte` returns.

    Attributes
    ----------
    task : flytekit PythonFunctionTask
        The task each item runs (the user's own flytekit task, or the function wrapped).
    map_task : flytekit ArrayNodeMapTask
        The map over ``task``, with the map's settings.
    workflow : flytekit ImperativeWorkflow
        A workflow with one input per mapped name (a list) running ``map_task``.
    inputs : dict
        The mapped lists, as the workflow's inputs (empty when none were given).
    bound : dict
        Inputs that are the same for every item (a ``functools.partial``'s).
    """

    task: PythonFunctionTask
    map_task: ArrayNodeMapTask
    workflow: ImperativeWorkflow
    inputs: dict[str, list[Any]]
    bound: dict[str, Any]

    def serialize(
        self, project: str = "flytesnacks", domain: str = "development", version: str = "mapnb"
    ) -> collections.OrderedDict[Any, Any]:
        """flytekit's serialised models of the workflow and what it needs, in registration
        order (``flytekit.tools.translator.get_serializable``): entity -> model."""
        from flytekit.configuration import ImageConfig, SerializationSettings
        from flytekit.tools.translator import get_serializable

        settings = SerializationSettings(
            image_config=ImageConfig.auto_default_image(), project=project, domain=domain, version=version
        )
        entities: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        get_serializable(entities, settings, self.workflow)
        return entities

    def workflow_spec(self, **settings: str) -> Any:
        """The workflow's serialised spec (``flytekit.models.admin.workflow.WorkflowSpec``)."""
        return self.serialize(**settings)[self.workflow]

    def array_node(self, **settings: str) -> Any:
        """The serialised ArrayNode (``flytekit.models.core.workflow.ArrayNode``)."""
        spec = self.workflow_spec(**settings)
        return next(n.array_node for n in spec.template.nodes if n.array_node is not None)

    def idl(self, **settings: str) -> str:
        """The serialised workflow and tasks as JSON text (Flyte's IDL), one block each,
        as ``pyflyte register`` would send them: ``print(mapnb.flyte.to_flyte(mt).idl())``."""
        from google.protobuf.json_format import MessageToJson

        blocks = []
        for entity, model in self.serialize(**settings).items():
            title = getattr(entity, "name", type(entity).__name__)
            blocks.append(f"# {type(model).__name__} {title}\n{MessageToJson(model.to_flyte_idl())}")
        return "\n\n".join(blocks)


def to_flyte(mt: MapTask, /, **lists: Any) -> FlyteMap:
    """The flytekit ArrayNode map task (and a workflow around it) that ``mt`` is on Flyte.

    Parameters
    ----------
    mt : MapTask
        What :func:`mapnb.map_task` returned (any backend).
    **lists
        The lists to map, as for ``mt(...)``: they become the workflow's inputs, and
        unannotated inputs take their values' type.

    Returns
    -------
    FlyteMap
        ``.map_task``, ``.workflow``, ``.inputs``; ``.idl()`` is the serialised text.

    Examples
    --------
    >>> def double(x: int) -> int:
    ...     return 2 * x
    >>> fm = to_flyte(mapnb.map_task(double, concurrency=4, retries=2), x=[1, 2])  # doctest: +SKIP
    >>> fm.array_node().to_flyte_idl().parallelism  # doctest: +SKIP
    4
    """
    from flytekit.core.array_node_map_task import ArrayNodeMapTask
    from flytekit.core.workflow import ImperativeWorkflow

    fn, bound, flyte_task = _unwrap(mt.fn)
    for name, values in lists.items():
        if not isinstance(values, (list, tuple)):
            raise InvalidMapError(f"{name} must be a list of values to map; got {type(values).__name__}")
    if flyte_task is None:
        flyte_task = _wrap(fn, bound, lists)
    missing = [n for n in lists if n not in flyte_task.python_interface.inputs]
    if missing:
        raise InvalidMapError(
            f"{flyte_task.name} has no input {', '.join(map(repr, missing))}; "
            f"its inputs are {', '.join(flyte_task.python_interface.inputs)}"
        )
    opts = mt.options
    min_successes = opts.min_successes
    target = functools.partial(flyte_task, **bound) if bound else flyte_task
    amt = ArrayNodeMapTask(
        target,
        concurrency=opts.concurrency,
        min_successes=min_successes,
        # One of the two: Flyte's IDL keeps one success criterion (a oneof).
        min_success_ratio=None if min_successes is not None else opts.min_success_ratio,
        metadata=_metadata(flyte_task, mt, fn),
        **_run_all(opts.run_all_sub_nodes),
    )
    wf = ImperativeWorkflow(name=f"mapnb.{_identifier(mt.name)}")
    list_type = amt.python_interface.inputs
    mapped = [n for n in flyte_task.python_interface.inputs if n not in bound]
    for n in mapped:
        default = n in flyte_task.python_interface.default_inputs_as_kwargs
        if n not in lists and default:
            continue  # the task's default for every item, as in flytekit
        wf.add_workflow_input(n, list_type[n])
    node = wf.add_entity(amt, **{n: wf.inputs[n] for n in mapped if n in wf.inputs})
    overrides = {k: _flytekit_resources(v) for k, v in (("requests", mt.requests), ("limits", mt.limits))}
    # with_overrides(container_image=, pod_template=) on a flytekit map (mapnb.flyte._flytekit).
    container = getattr(mt, "container_overrides", None) or {}
    if any(v is not None for v in overrides.values()) or container:
        node.with_overrides(**{k: v for k, v in overrides.items() if v is not None}, **container)
    for name, t in amt.python_interface.outputs.items():
        wf.add_workflow_output(name, node.outputs[name], python_type=t)
    return FlyteMap(flyte_task, amt, wf, {k: list(v) for k, v in lists.items()}, bound)


def _run_all(value: bool) -> dict[str, Any]:
    """``run_all_sub_nodes=`` for ArrayNodeMapTask: only when True (flytekit < 1.16 lacks it;
    asking for it there is an error, not a silent no)."""
    if not value:
        return {}
    from flytekit.core.array_node_map_task import ArrayNodeMapTask

    if "run_all_sub_nodes" not in inspect.signature(ArrayNodeMapTask.__init__).parameters:
        raise InvalidMapError("run_all_sub_nodes=True on a Flyte cluster needs flytekit >= 1.16")
    return {"run_all_sub_nodes": True}


def _identifier(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_") or "map"


def _unwrap(fn: Any) -> tuple[Callable[..., Any], dict[str, Any], Any]:
    """(the function, the inputs bound by partials, the user's flytekit task or None)."""
    bound: dict[str, Any] = {}
    while True:
        if isinstance(fn, functools.partial):
            if fn.args:
                raise InvalidMapError(
                    "backend='flyte' binds inputs by name: use functools.partial(f, b=...), not positional values"
                )
            bound = {**fn.keywords, **bound}
            fn = fn.func
        elif getattr(fn, "_flyte_task", None) is not None:  # mapnb.flyte's FlyteItem (or Flyte2Item)
            from . import is_flytekit

            if not is_flytekit(fn._flyte_task):
                raise InvalidMapError(
                    f"backend='flyte' sends flytekit 1.x map tasks (an ArrayNode); {fn._flyte_task.name} is a "
                    "Flyte 2 task, which a Flyte 2 cluster runs: use flyte.run(...) there, or map a "
                    "@flytekit.task (or a plain function)"
                )
            return fn, bound, fn._flyte_task
        elif getattr(fn, "__mapnb_task__", False) and not getattr(fn, "__mapnb_cell__", False):
            fn = fn.__wrapped__  # mapnb.task: its settings are the MapTask's already
        else:
            return fn, bound, None


def _wrap(fn: Callable[..., Any], bound: dict[str, Any], lists: dict[str, Any]) -> PythonFunctionTask:
    """``fn`` as a flytekit task, its interface from annotations (or its values' types)."""
    import flytekit

    from . import wrapped  # noqa: F401 - the made tasks' module must be importable

    cell = getattr(fn, "__mapnb_cell__", False)
    name = _identifier(function_name(fn))
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True) if not cell else {}
    except Exception:  # noqa: BLE001 - an unresolvable annotation: read them as written
        hints = dict(getattr(fn, "__annotations__", {}))
    params = []
    inferred = False
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if p.name in lists or p.name in bound:
                raise InvalidMapError(f"backend='flyte' maps named parameters; {name}(*{p.name}) has none")
            continue
        t = hints.get(p.name, p.annotation)
        if t is inspect.Parameter.empty:
            t = _inferred(name, p.name, lists.get(p.name), bound.get(p.name, p.default))
            inferred = True
        params.append(
            inspect.Parameter(
                p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=t
            )
        )
    if cell:
        out: Any = typing.Any  # a cell's last expression: nothing says its type
    else:
        out = hints.get("return", sig.return_annotation)
        if out is inspect.Signature.empty:
            raise InvalidMapError(
                f"backend='flyte' needs the return type of {name}: annotate it, "
                f"e.g. def {name}(...) -> float (or -> None when it returns nothing)"
            )
    if not (cell or inferred) and _importable(fn):
        return flytekit.task(fn)  # annotated and importable: the task is the function itself
    # Defaults after non-defaults, as a Python signature must be.
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)
    typed = _typed_function(fn, name, inspect.Signature(params, return_annotation=out))
    return flytekit.task(typed)


def _importable(fn: Any) -> bool:
    """Whether flytekit takes ``fn`` as a task's function as it is: a function, not
    nested in another, whose source it can read."""
    if not inspect.isfunction(fn) or fn.__code__.co_flags & inspect.CO_NESTED:
        return False
    try:
        inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return False
    return True


def _inferred(fn_name: str, param: str, values: Any, value: Any) -> Any:
    """The type an unannotated input's values share, or a clear error asking to annotate it."""
    seen = {type(v) for v in values} if values is not None else set()
    if value is not inspect.Parameter.empty and value is not None:
        seen.add(type(value))
    if len(seen) == 1 and (t := seen.pop()) in _INFERABLE:
        return t
    what = (
        f"its values have types {', '.join(sorted(t.__name__ for t in seen))}"
        if seen
        else "no value shows it"
    )
    raise InvalidMapError(
        f"backend='flyte' needs the type of {fn_name}'s input {param!r} ({what}): annotate it, "
        f"e.g. def {fn_name}({param}: int, ...) -> float"
    )


def _typed_function(fn: Callable[..., Any], name: str, sig: inspect.Signature) -> Callable[..., Any]:
    """A module-level-looking function calling ``fn``, with ``sig`` as its annotations.

    flytekit reads a task's interface from its function's signature and refuses nested
    functions (its default resolver imports tasks by module and name); this function is
    built with ``exec`` so that it is not nested. Its module is :mod:`mapnb.flyte.wrapped`
    (which defines nothing): the task is named ``mapnb.flyte.wrapped.<name>`` wherever the
    function was defined, and travels by value with cloudpickle (Flyte's interactive mode).
    """
    namespace: dict[str, Any] = {"__fn": fn, "__name__": "mapnb.flyte.wrapped"}
    source = f"def {name}(**kwargs):\n    return __fn(**kwargs)\n"
    # flytekit reads the function's source (to look for a return statement): linecache
    # holds it under a name of its own.
    filename = f"<mapnb-flyte-{name}-{next(_counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - a fixed template
    typed = namespace[name]
    typed.__signature__ = sig
    typed.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()}
    typed.__annotations__["return"] = sig.return_annotation
    typed.__doc__ = getattr(fn, "__doc__", None)
    return typed


def _metadata(flyte_task: Any, mt: MapTask, fn: Any) -> Any:
    """The map's TaskMetadata: the task's own (or the one given to ``flytekit.map_task(t,
    metadata=...)``, which replaces it, as flytekit does), with mapnb's retries, timeout
    and cache."""
    from flytekit.core.base_task import TaskMetadata

    from ..cache import _identity

    opts, cache = mt.options, mt.cache
    base = getattr(fn, "map_metadata", None) or (flyte_task.metadata if flyte_task is not None else TaskMetadata())
    version = ""
    if cache.enabled:
        # mapnb's own version when none is given: derived from the function's source, as
        # mapnb's local cache versions it (flytekit requires one).
        version = cache.version or base.cache_version or _identity(fn)[1]
    return dataclasses.replace(
        base,
        retries=opts.retries,
        timeout=datetime.timedelta(seconds=opts.timeout) if opts.timeout else None,
        cache=cache.enabled,
        cache_version=version,
        cache_serialize=cache.serialize if cache.enabled else False,
        cache_ignore_input_vars=tuple(cache.ignore) if cache.enabled else (),
    )


def _flytekit_resources(r: Resources | None) -> Any:
    """mapnb's Resources as flytekit's (Kubernetes quantities as strings), or None."""
    if r is None or not (r or r.ephemeral_storage is not None):
        return None
    from flytekit import Resources as FlyteResources

    def text(v: Any) -> str | None:
        return None if v is None else str(v)

    return FlyteResources(
        cpu=text(r.cpu), mem=text(r.mem), gpu=text(r.gpu) if r.gpu else None,
        ephemeral_storage=text(r.ephemeral_storage),
    )  # fmt: skip
