"""The fast path for a flytekit task whose inputs and output are simple Python types.

flytekit's own call of a task (``dispatch_execute``) costs about 0.5 ms per item: a new
execution context (with a stack trace taken for it), and each input and output converted
to a Flyte literal and back through flytekit's background event loop. For ``int``,
``float``, ``str``, ``bool``, ``Optional[...]`` of those, and ``list[...]`` /
``dict[str, ...]`` of those, that round trip changes nothing: the value comes back equal
and of the same type, or the type engine refuses it. So here each input is checked as
flytekit's type engine checks it (the exact type, as its ``SimpleTransformer`` does: no
``bool`` for ``int``, no ``int`` for ``float``; lists and dicts element by element, copied
as the round trip copies them) and the task's function is called directly, inside one
flytekit execution context built once per thread and pushed for each item.

Whatever the check does not accept exactly goes the full way (:func:`._flytekit._execute`):
flytekit then converts it, or refuses it with its own exception and wording. An output the
check does not accept is handed to flytekit's own output conversion, which words the error
(or converts what the check was too strict for). Tasks with any other type (``FlyteFile``,
``StructuredDataset``, dataclasses, ``Annotated``, ``Union``...), a deck, a NamedTuple
output, or a class that changes how a task executes keep the full path for every item.

``flytekit.current_context()`` inside the function is the item's own: its ``checkpoint``
(the item's mapnb checkpoint, as on the full path), ``execution_id`` (the run) and
``ARRAY_INDEX``/``ATTEMPT`` are looked up, when asked for, from the item that runs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import threading
import types
import typing
from collections.abc import Callable
from typing import Any

from ..context import TaskContext, current_context
from ._item import clean_up, lazy_checkpoint, sandbox

Convert = Callable[[Any], Any]
"""Returns the value as the task receives it (a copy for lists and dicts), or raises _Miss."""


class _Miss(Exception):
    """A value the fast check does not accept as it is: flytekit decides."""


_EXACT = (int, float, str, bool)  # flytekit's SimpleTransformers: type(value) must be the type


@functools.cache
def _exact(tp: type) -> Convert:
    def convert(v: Any) -> Any:
        if type(v) is not tp:
            raise _Miss
        return v

    return convert


_EXACT_OF: dict[Convert | None, type] = {}  # the converter of an exact type -> that type


def converter(tp: Any) -> Convert | None:
    """How a value annotated ``tp`` is checked and passed on, or None when ``tp`` is not
    one of the simple types."""
    if tp in _EXACT:
        convert = _exact(tp)
        _EXACT_OF[convert] = tp
        return convert
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = converter(rest[0]) if len(args) == 2 and len(rest) == 1 else None
        return None if inner is None else _optional(inner)
    if origin is list and len(args) == 1:
        item = converter(args[0])
        return None if item is None else _list(item)
    if origin is dict and len(args) == 2 and args[0] is str:
        value = converter(args[1])
        return None if value is None else _dict(value)
    return None


def _optional(inner: Convert) -> Convert:
    def convert(v: Any) -> Any:
        return None if v is None else inner(v)

    return convert


def _list(item: Convert) -> Convert:
    def convert(v: Any) -> Any:
        if type(v) is not list:
            raise _Miss
        return [item(x) for x in v]

    return convert


def _dict(value: Convert) -> Convert:
    def convert(v: Any) -> Any:
        if type(v) is not dict:
            raise _Miss
        out = {}
        for k, x in v.items():
            if type(k) is not str:  # flytekit's map type takes string keys only
                raise _Miss
            out[k] = value(x)
        return out

    return convert


@dataclasses.dataclass(frozen=True)
class Plan:
    """A task's fast path: its function, a converter per input, and one for its output
    (None: the task has no output)."""

    fn: Callable[..., Any]
    inputs: dict[str, Convert]
    output: Convert | None


# What decides how a task executes: a class that changes any of these keeps the full path.
_EXECUTION = ("dispatch_execute", "pre_execute", "execute", "post_execute", "_output_to_literal_map")


@functools.cache
def _known_flytekit() -> bool:
    """Whether this flytekit executes a task as the fast path assumes (flytekit 1.16's
    ``dispatch_execute``: an async ``_output_to_literal_map`` run by ``run_sync``)."""
    from flytekit.core.python_function_task import PythonFunctionTask

    try:
        from flytekit.core.context_manager import flyte_context_Var  # noqa: F401 (the stack pushed onto)
        from flytekit.utils.asyn import run_sync  # noqa: F401
    except ImportError:
        return False
    methods = [getattr(PythonFunctionTask, m, None) for m in _EXECUTION]
    return all(methods) and inspect.iscoroutinefunction(PythonFunctionTask._output_to_literal_map)  # noqa: SLF001


def plan_for(t: Any) -> Plan | None:
    """The fast path of task ``t``, or None when ``t`` needs flytekit's full path."""
    from flytekit.core.python_function_task import PythonFunctionTask

    if not isinstance(t, PythonFunctionTask) or t.execution_mode != PythonFunctionTask.ExecutionBehavior.DEFAULT:
        return None
    if not _known_flytekit() or any(getattr(type(t), m) is not getattr(PythonFunctionTask, m) for m in _EXECUTION):
        return None
    iface = t.python_interface
    deck = getattr(t, "enable_deck", None)  # flytekit < 1.13: _disable_deck only
    if (not getattr(t, "_disable_deck", True) if deck is None else deck) or iface.output_tuple_name:
        return None
    inputs = {name: converter(tp) for name, tp in iface.inputs.items()}
    outputs = [converter(tp) for tp in iface.outputs.values()]
    if any(c is None for c in inputs.values()) or any(c is None for c in outputs):
        return None
    return Plan(t.task_function, typing.cast(dict[str, Convert], inputs), outputs[0] if outputs else None)


# --------------------------------------------------------------------------------------
# The running item, as flytekit's current_context() shows it.


class _Item:
    """The item that runs on this thread: its checkpoint, working folder and execution id,
    each made when the task first asks for it (most items never do)."""

    _ctx: TaskContext | None = None
    _checkpoint: Any = None
    _workdir: str | None = None
    _temporary = False
    _execution_id: Any = None

    @property
    def ctx(self) -> TaskContext:
        """mapnb's context of the item (made when first asked for: a worker makes an
        item's context only when something asks)."""
        if self._ctx is None:
            self._ctx = current_context()
        return self._ctx

    def checkpoint(self) -> Any:
        if self._checkpoint is None:
            from flytekit.core.checkpointer import SyncCheckpoint

            cp = self.ctx.checkpoint
            prev = cp._prev  # noqa: SLF001 (mapnb's own checkpoint layout)
            dest = cp._dir(cp._attempt)  # noqa: SLF001
            self._checkpoint = lazy_checkpoint(SyncCheckpoint, str(dest), str(prev) if prev else None)
        return self._checkpoint

    def workdir(self) -> str:
        if self._workdir is None:
            self._workdir, self._temporary = sandbox()
            os.makedirs(self._workdir, exist_ok=True)
        return self._workdir

    def execution_id(self, base: Any) -> Any:
        if self.ctx.run_id is None:
            return base
        if self._execution_id is None:
            from flytekit.interfaces.cli_identifiers import WorkflowExecutionIdentifier

            self._execution_id = WorkflowExecutionIdentifier("local", "local", str(self.ctx.run_id))
        return self._execution_id

    def attrs(self, base: dict[str, Any]) -> dict[str, Any]:
        if self.ctx.run_id is None:
            return base
        return {**base, "ARRAY_INDEX": self.ctx.index, "ATTEMPT": self.ctx.attempt}  # flytekit upper-cases

    def finish(self, ok: bool) -> None:
        if self._workdir is not None:
            clean_up(self._workdir, self._temporary, ok)


class _Running:
    """Whether an item runs in a session's context, and its :class:`_Item`, made when the
    task first asks for something of it (most items never do): set per item, read by the
    session's ``ItemParams``. (A context variable and an object per item cost more than
    the rest of the item's bookkeeping.) A session is never re-entered: an item that runs
    another map in-process does it in a context of its own, hence another session."""

    __slots__ = ("active", "item")

    def __init__(self) -> None:
        self.active = False
        self.item: _Item | None = None

    def current(self) -> _Item | None:
        """The running item (None between items)."""
        if not self.active:
            return None
        item = self.item
        if item is None:
            item = self.item = _Item()
        return item

    def end(self, ok: bool) -> None:
        """The item ended: what it made is cleaned up."""
        self.active = False
        item, self.item = self.item, None
        if item is not None:
            item.finish(ok)


@functools.cache
def _item_params_class() -> type:
    from flytekit.core.context_manager import ExecutionParameters

    class ItemParams(ExecutionParameters):
        """flytekit's ``ExecutionParameters``, made once per thread, whose per-item values
        (checkpoint, working folder, execution id, ARRAY_INDEX/ATTEMPT) are those of the
        item running in its session (``_mapnb_running``). Outside an item they are the base
        context's."""

        @property
        def _checkpoint(self) -> Any:
            item = self.__dict__["_mapnb_running"].current()
            return self.__dict__["_mapnb_checkpoint"] if item is None else item.checkpoint()

        @property
        def _working_directory(self) -> Any:
            item = self.__dict__["_mapnb_running"].current()
            return self.__dict__["_mapnb_working_directory"] if item is None else item.workdir()

        @property
        def _execution_id(self) -> Any:
            item = self.__dict__["_mapnb_running"].current()
            base = self.__dict__["_mapnb_execution_id"]
            return base if item is None else item.execution_id(base)

        @property
        def _attrs(self) -> dict[str, Any]:
            item = self.__dict__["_mapnb_running"].current()
            base = self.__dict__["_mapnb_attrs"]
            return base if item is None else item.attrs(base)

    return ItemParams


def _item_params(base: Any, running: _Running) -> Any:
    from flytekit.core.context_manager import ExecutionParameters

    # Inside another mapnb item (a task calling this one), build on that item's own base.
    base = getattr(base, "__dict__", {}).get("_mapnb_base", base)  # (its __getattr__ raises AssertionError)
    b = ExecutionParameters.new_builder(base)
    b.working_dir = None  # build() would make the folder
    built = b.build()
    cls: Any = _item_params_class()
    params = cls.__new__(cls)  # not __init__: the per-item attributes are properties here
    for name in ("_checkpoint", "_working_directory", "_execution_id", "_attrs"):
        params.__dict__["_mapnb" + name] = built.__dict__.pop(name)
    params.__dict__["_mapnb_working_directory"] = base.working_directory if base is not None else None
    params.__dict__.update(built.__dict__)
    params.__dict__["_mapnb_base"] = base
    params.__dict__["_mapnb_running"] = running
    return params


class _Session:
    """One flytekit execution context for a thread's items, built on the context that was
    current (``base``)."""

    __slots__ = ("base", "ctx", "metadata", "running")

    def __init__(self, base: Any) -> None:
        from flytekit.core.context_manager import ExecutionState, FlyteContextManager, OutputMetadataTracker

        self.base = base
        self.running = _Running()
        params = _item_params(base.user_space_params, self.running)
        es = base.new_execution_state().with_params(mode=ExecutionState.Mode.LOCAL_TASK_EXECUTION, user_space_params=params)
        self.ctx = base.with_execution_state(es).with_output_metadata_tracker(OutputMetadataTracker()).build()
        # Taken once, not per item: flytekit notes where a context was pushed from.
        self.ctx.set_stackframe(FlyteContextManager.get_origin_stackframe())
        self.metadata = self.ctx.output_metadata_tracker.output_metadata  # (keyed by id(): cleared per item)


# id(base context) -> the session on it. A thread starts a flytekit context of its own
# (flytekit's stack is a ContextVar), so this is one session per thread, and one per
# context items run inside (an item that runs a map in-process).
_sessions: dict[int, _Session] = {}
_sessions_lock = threading.Lock()


def _session(base: Any) -> _Session:
    """The session on flytekit context ``base``, made now (see :func:`_stacks`)."""
    with _sessions_lock:
        s = _sessions.get(id(base))
        if s is None or s.base is not base:
            if len(_sessions) >= 64:  # contexts come and go (threads end): keep a few
                _sessions.clear()
            s = _sessions[id(base)] = _Session(base)
        return s


def _stacks() -> Callable[[], tuple[list[Any], _Session]]:
    """What finds, for an item about to run, flytekit's stack of contexts (this thread's:
    what ``FlyteContextManager.push_context`` appends to) and the session on its top
    context. A thread starts a flytekit context of its own (the stack is a ContextVar), so
    that is one session per thread, and one per context items run inside (an item that
    runs a map in-process)."""
    from flytekit.core.context_manager import FlyteContextManager, flyte_context_Var

    get_stack, sessions = flyte_context_Var.get, _sessions
    last: tuple[list[Any], _Session] | None = None  # the usual answer (one tuple: read at once)

    def enter() -> tuple[list[Any], _Session]:
        nonlocal last
        stack = get_stack()
        if last is not None and last[0] is stack and stack and stack[-1] is last[1].base:
            return last
        if not stack:  # this thread has no flytekit context yet: flytekit sets one up
            FlyteContextManager.current_context()
            stack = get_stack()
        base = stack[-1]
        session = sessions.get(id(base))
        if session is None or session.base is not base:
            session = _session(base)
        last = stack, session
        return last

    return enter


Args = tuple[tuple[Any, ...], dict[str, Any]]  # an item's inputs: by position, by name
Bind = Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]  # ... all by name


def _checker(inputs: dict[str, Convert], positional: tuple[str, ...], bind: Bind) -> Callable[..., Args | None]:
    """What checks an item's inputs: returns them as the task gets them, or None (not
    exactly of their types, or not inputs of the task: flytekit decides)."""
    exact = {k: _EXACT_OF.get(c) for k, c in inputs.items()}
    if all(exact.values()):  # most tasks: checked in place, passed on as they are
        known = typing.cast(dict[str, type], exact)
        check = _exact_checker(known, positional)
        if len(known) == 1 and positional[:1] == tuple(known):  # one input (most maps)
            return _one_input(check, next(iter(known.values())))
        return check

    def convert(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args | None:
        try:
            return (), {k: inputs[k](v) for k, v in bind(args, kwargs).items()}
        except (_Miss, KeyError):
            return None

    return convert


def _one_input(check: Callable[..., Args | None], only: type) -> Callable[..., Args | None]:
    """``check`` for a task of one input, with the worker's call (one value by position)
    checked by one comparison."""

    def check_one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args | None:
        if len(args) == 1 and not kwargs:
            return (args, kwargs) if type(args[0]) is only else None
        return check(args, kwargs)

    return check_one


def _exact_checker(exact: dict[str, type], positional: tuple[str, ...]) -> Callable[..., Args | None]:
    """:func:`_checker` for inputs of the exact simple types: each value's type must be
    its input's (the loops are the cost of a trivial item: kept plain)."""
    at = tuple(exact.get(n) for n in positional)  # (None: not an input, flytekit decides)
    count = len(at)

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args | None:
        if len(args) > count:  # flytekit's binding refuses it
            return None
        for i, v in enumerate(args):
            if type(v) is not at[i]:
                return None
        if kwargs:  # (bound by a partial, say)
            taken = positional[: len(args)]
            for k, v in kwargs.items():
                if type(v) is not exact.get(k) or k in taken:
                    return None
        return args, kwargs

    return check


Run = Callable[[tuple[Any, ...], dict[str, Any]], Any]


def runner(plan: Plan, t: Any, full: Callable[[Any, dict[str, Any]], Any], bind: Bind | None = None) -> Run:
    """What runs one item of task ``t`` on its fast path, given the item's inputs (by
    position and by name): the checks and the context set up here once, per item only
    what must be. ``full(t, kwargs)`` (flytekit's whole way) takes an item whose inputs are
    not exactly of their simple types, all by name (``bind(args, kwargs)``; by default the
    function's signature binds them).

    Per item, flytekit's context is pushed onto (and popped from) its stack as
    ``FlyteContextManager.push_context`` does it, less its debug message: formatting that
    message was a third of the fast path's time per item."""
    sig = inspect.signature(plan.fn)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = tuple(n for n, p in sig.parameters.items() if p.kind in kinds)
    if bind is None:

        def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            return dict(sig.bind_partial(*args, **kwargs).arguments) if args else kwargs

    check, enter = _checker(plan.inputs, positional, bind), _stacks()
    fn, convert_out = plan.fn, plan.output
    out_type = _EXACT_OF.get(convert_out) if convert_out is not None else None
    name = t.name

    def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        given = check(args, kwargs)
        if given is None:  # flytekit converts them, or refuses them in its own words
            return full(t, bind(args, kwargs))
        stack, session = enter()
        running = session.running
        running.active = True
        depth = len(stack)
        stack.append(session.ctx)
        ok = False
        try:
            try:
                out = fn(*given[0], **given[1])
            except Exception as e:  # worded as flytekit's dispatch_execute words it locally
                e.args = (f"Error encountered while executing '{name}':\n  {e}",)
                raise
            if convert_out is not None and type(out) is not out_type:
                out = _output(convert_out, t, out, session.ctx)
            ok = True
            return None if convert_out is None else out
        finally:
            del stack[depth:]  # ours, and whatever the task pushed and left there
            if running.item is None:
                running.active = False
            else:  # the task asked for its checkpoint, folder...
                running.end(ok)
            if session.metadata:
                session.metadata.clear()

    return run


def run(plan: Plan, t: Any, kwargs: dict[str, Any], full: Callable[[Any, dict[str, Any]], Any]) -> Any:
    """One item of task ``t``, its inputs by name, on its fast path (see :func:`runner`,
    which a worker builds once per task)."""
    return runner(plan, t, full)((), kwargs)


def _output(convert: Convert, t: Any, value: Any, ctx: Any) -> Any:
    """The task's output as flytekit returns it locally."""
    try:
        return convert(value)
    except _Miss:
        pass
    # flytekit's own conversion: it raises its error for a wrong type, or converts what the
    # check was too strict for.
    from flytekit.core.promise import Promise, create_native_named_tuple, create_task_output
    from flytekit.utils.asyn import run_sync

    literals, _ = run_sync(t._output_to_literal_map, value, ctx)  # noqa: SLF001
    names = list(t.interface.outputs)
    promises = create_task_output([Promise(n, literals.literals[n]) for n in names], t.python_interface)
    return create_native_named_tuple(ctx, promises, t.python_interface)
