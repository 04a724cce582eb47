"""Validation of everything a user passes to ``map_task``: the one place clear errors live.

Every check names the argument, the value it got and what is allowed, and runs before
any item starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import inspect
import itertools
import math
import operator
import os
from collections.abc import Callable, Iterable, Mapping
from numbers import Real
from typing import Any

from .errors import InvalidMapError
from .prune import MedianStopping
from .state import Columns, Inputs


def describe(value: Any) -> str:
    """A value for an error message: its type and a short one-line repr."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and not isinstance(value, (str, bytes)):
        return f"{type(value).__name__} of shape {shape}"  # arrays, frames: no multi-line repr
    return f"{type(value).__name__} {short_repr(value)}"


def short_text(text: str, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters (headlines stay short)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__qualname__} object>"
    return short_text(text, limit)


def check_int(name: str, value: Any, *, minimum: int, none_ok: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (or None when ``none_ok``), else a clear error."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if none_ok else "")
        raise InvalidMapError(f"{name} must be {allowed}; got {describe(value)}")
    return int(value)


def check_seconds(name: str, value: Any) -> float | None:
    """A duration in seconds > 0 (a number or a ``datetime.timedelta``), or None."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, Real) or not (float(value) > 0) or math.isinf(value):
        raise InvalidMapError(f"{name} must be a number of seconds > 0 or None; got {describe(value)}")
    return float(value)


def check_ratio(name: str, value: Any) -> float:
    """A ratio in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (0.0 <= float(value) <= 1.0):
        raise InvalidMapError(f"{name} must be a number between 0 and 1; got {describe(value)}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Options:
    """The validated run options of a map task."""

    concurrency: int | None = None
    min_success_ratio: float = 1.0
    retries: int = 0
    timeout: float | None = None
    prune: MedianStopping | None = None
    # Flyte's ArrayNode settings (class attributes too: specs journaled before them load).
    min_successes: int | None = None  # an absolute count; wins over min_success_ratio, as in Flyte
    run_all_sub_nodes: bool = False  # run every item even once min_successes cannot be met

    def __post_init__(self) -> None:
        check_int("concurrency", self.concurrency, minimum=1, none_ok=True)
        check_ratio("min_success_ratio", self.min_success_ratio)
        check_int("retries", self.retries, minimum=0)
        check_seconds("timeout", self.timeout)
        check_int("min_successes", self.min_successes, minimum=0, none_ok=True)
        if not isinstance(self.run_all_sub_nodes, bool):
            raise InvalidMapError(f"run_all_sub_nodes must be True or False; got {describe(self.run_all_sub_nodes)}")
        if self.prune is not None and not isinstance(self.prune, MedianStopping):
            raise InvalidMapError(
                f"prune must be a mapnb.MedianStopping(...) or None; got {describe(self.prune)}"
            )


def needed(n: int, options: Options) -> int:
    """How many of ``n`` items must succeed: ``min_successes`` if set, else
    ``ceil(n * min_success_ratio)`` (Flyte's ArrayNode rule)."""
    if options.min_successes is not None:
        return options.min_successes
    return math.ceil(n * options.min_success_ratio - 1e-9)


def check_needed(n: int, options: Options) -> None:
    """A map that asks for more successes than it has items fails at once on Flyte: here it
    is refused before anything runs."""
    if options.min_successes is not None and options.min_successes > n:
        raise InvalidMapError(
            f"min_successes={options.min_successes} but the map has {n} item{'s' * (n != 1)}; "
            f"it must be at most the number of items"
        )


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """What a task or a map task says about caching (validated)."""

    enabled: bool = False
    version: str | None = None
    serialize: bool = False
    ignore: tuple[str, ...] = ()
    overwrite: bool = False

    @classmethod
    def make(
        cls,
        enabled: Any,
        version: Any = None,
        serialize: Any = False,
        ignore: Any = (),
        overwrite: Any = False,
    ) -> CacheSettings:
        for name, value in (
            ("cache", enabled),
            ("cache_serialize", serialize),
            ("cache_overwrite", overwrite),
        ):
            if not isinstance(value, bool):
                raise InvalidMapError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
        if version is not None and not isinstance(version, str):
            raise InvalidMapError(
                f"cache_version must be a string or None; got {type(version).__name__} {version!r}"
            )
        if isinstance(ignore, str) or not all(isinstance(n, str) for n in ignore):
            raise InvalidMapError(
                f"cache_ignore_input_vars must be a tuple of parameter names; got {ignore!r}"
            )
        if not enabled and (version is not None or serialize or ignore or overwrite):
            raise InvalidMapError(
                "cache_version, cache_serialize, cache_ignore_input_vars and cache_overwrite need cache=True"
            )
        return cls(enabled, version, serialize, tuple(ignore), overwrite)


@dataclasses.dataclass(frozen=True)
class MapSpec:
    """Everything a map task says about how its items run: validated once, then frozen.

    :func:`mapnb.map_task` builds it, a :class:`~mapnb.MapTask` holds it, each run derives
    its ``Job`` (what workers need) and its engine's settings from it, and the journal
    stores it so that :func:`mapnb.recover` can rebuild the map task. Variations are
    ``dataclasses.replace(spec, ...)`` (``with_overrides`` is one).

    Attributes
    ----------
    fn : callable
        The task function (a partial's bound inputs included).
    name : str
        How headlines and the grid name the task.
    options : Options
        concurrency, min_success_ratio, retries, timeout.
    cache : CacheSettings
        Subtask caching.
    requests, limits : mapnb.Resources or None
        What one item needs, and may use at most.
    backend : str or Backend
        Where items run: a registered name or a backend instance.
    progress : bool or None
        The live grid / progress bar (None: where one can be shown).
    """

    fn: Callable[..., Any]
    name: str
    options: Options = dataclasses.field(default_factory=lambda: Options())
    cache: CacheSettings = dataclasses.field(default_factory=lambda: CacheSettings())
    requests: Any = None
    limits: Any = None
    backend: Any = "local"
    progress: bool | None = None


def target_function(fn: Any) -> Callable[..., Any]:
    """The plain function behind a partial or a ``@task`` (for names and signatures)."""
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__mapnb_task__"):
            fn = fn.__wrapped__
        else:
            return fn


def check_function(fn: Any, what: str = "map_task") -> None:
    """Refuse, before anything runs, a task function whose outputs could never come back.

    A generator function's items would each return a generator, which cannot be pickled
    (nor kept in a DataFrame), so every item would fail after running.
    """
    if not callable(fn):
        raise InvalidMapError(f"{what} needs a function; got {describe(fn)}")
    target = target_function(fn)
    code_of = target if inspect.isroutine(target) else type(target).__call__  # noqa: B004 - the method's code, not callability
    if inspect.isgeneratorfunction(code_of) or inspect.isasyncgenfunction(code_of):
        kind = "an async generator" if inspect.isasyncgenfunction(code_of) else "a generator"
        raise InvalidMapError(
            f"{function_name(fn)} is {kind} function (it yields); an item must return its output: "
            "return a list instead (e.g. `return list(...)`, or collect the yields into a list)"
        )


def function_name(fn: Any) -> str:
    """A short readable name for the task function, for headlines and titles.

    The qualified name (``Model.predict``; what encloses a local function is left out),
    else a ``name`` attribute (a Flyte task's), else the start of its one-line repr: a
    callable object's repr can be thousands of characters, and it opens error messages.
    """
    target = target_function(fn)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not isinstance(name, str) or not name:
        name = getattr(target, "name", None)
    if isinstance(name, str) and name:
        return short_text(name.rpartition("<locals>.")[2])
    return short_repr(target)


@dataclasses.dataclass(frozen=True)
class Signature:
    """What map_task needs to know about the task's parameters."""

    required: tuple[str, ...]  # must be mapped: no default and not bound by a partial
    accepted: frozenset[str] | None  # None: takes **kwargs, so any name is accepted
    bound: frozenset[str]  # fixed by functools.partial keywords
    positional: tuple[str, ...] = ()  # positional-only parameters, in order (``len(obj, /)``)
    defaults: tuple[Any, ...] = ()  # their defaults (``_EMPTY``: none), for ``ByName``

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> Signature:
        bound = frozenset(fn.keywords) if isinstance(fn, functools.partial) else frozenset()
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins: nothing to check
            return cls((), None, bound)
        required, accepted, var_kw = [], set(), False
        positional, defaults = [], []
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                accepted.add(p.name)
                if p.default is p.empty and p.name not in bound:
                    required.append(p.name)
                if p.kind is p.POSITIONAL_ONLY:
                    positional.append(p.name)
                    defaults.append(_EMPTY if p.default is p.empty else p.default)
        return cls(
            tuple(required), None if var_kw else frozenset(accepted), bound, tuple(positional), tuple(defaults)
        )

    def describe_parameters(self) -> str:
        """The parameters for an error message, positional-only ones marked."""
        if not self.accepted:
            return "(none)"
        return ", ".join(
            f"{n} (positional-only)" if n in self.positional else n for n in sorted(self.accepted)
        )


_EMPTY = inspect.Parameter.empty


class ByName:
    """Calls a function whose mapped parameters include positional-only ones (``len(obj, /)``,
    ``str.upper(self, /)``): items pass every input by name, this passes those by position.

    Parameters
    ----------
    fn : callable
        The task function.
    positional : tuple of str
        Its positional-only parameters, in order, up to the last one that is mapped.
    defaults : tuple
        Their defaults (``inspect.Parameter.empty`` for none), used for the ones not mapped.
    """

    def __init__(self, fn: Callable[..., Any], positional: tuple[str, ...], defaults: tuple[Any, ...]) -> None:
        self.fn, self.positional, self.defaults = fn, positional, defaults

    def __call__(self, /, **kwargs: Any) -> Any:
        args = [kwargs.pop(n) if n in kwargs else d for n, d in zip(self.positional, self.defaults)]
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ByName({self.fn!r})"


def by_name(fn: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """``fn``, wrapped in :class:`ByName` when some of ``names`` are positional-only parameters."""
    sig = Signature.of(fn)
    mapped = [k for k, n in enumerate(sig.positional) if n in names]
    if not mapped:
        return fn
    last = mapped[-1] + 1
    return ByName(fn, sig.positional[:last], sig.defaults[:last])


def materialise(name: str, value: Any) -> list[Any]:
    """One mapped input as a list, rejecting the values that are almost always mistakes."""
    _refuse_non_lists(name, value)
    limit = max_items()
    try:
        size = len(value)
    except TypeError:  # not sized (a generator, say): count while taking, one past the bound
        size = None
    if size is not None and size > limit:
        raise _too_many(name, f"{size:,} items", limit)
    try:
        items = list(itertools.islice(value, limit + 1)) if size is None else list(value)
    except TypeError as e:  # e.g. a 0-d numpy array
        raise InvalidMapError(f"{name}= could not be iterated: {e}; got {describe(value)}") from None
    if len(items) > limit:
        raise _too_many(name, f"more than {limit:,} items (it may never end)", limit)
    return items


def _refuse_non_lists(name: str, value: Any) -> None:
    """A clear error for a value that is not a finite list of inputs (a string, a dict, a
    set, a DataFrame, an endless iterator...), saying what to pass instead."""
    hint = None
    cls = type(value)
    if isinstance(value, (str, bytes, bytearray)):
        hint = f"pass a list, e.g. {name}=[{value!r}]"
    elif isinstance(value, Mapping):
        hint = f"pass {name}=list(d.values()), list(d) or list(d.items())"
    elif isinstance(value, (set, frozenset)):
        hint = f"sets have no order; pass {name}=sorted(...)"
    elif cls.__name__ == "DataFrame" and cls.__module__.startswith("pandas"):
        hint = f"pass a column, {name}=df['col'], or rows, {name}=list(df.itertuples())"
    if hint:
        raise InvalidMapError(f"{name}= got {describe(value)}, which is not a list of inputs; {hint}")
    if not isinstance(value, Iterable):
        raise InvalidMapError(
            f"{name}= must be a finite iterable (list, tuple, range, numpy array, pandas Series); "
            f"got {describe(value)}"
        )
    if isinstance(value, (itertools.count, itertools.cycle)) or (
        isinstance(value, itertools.repeat) and _unsized(value)
    ):
        raise InvalidMapError(
            f"{name}= got {describe(value)}, which never ends; pass a finite list, "
            f"e.g. {name}=list(itertools.islice(it, 100)) or {name}=range(100)"
        )


_MAX_ITEMS_DEFAULT = 10_000_000


def max_items() -> int:
    """The most items one run may map: ``MAPNB_MAX_ITEMS``, default 10 million.

    The bound keeps an endless iterator from filling the caller's memory.
    """
    text = os.environ.get("MAPNB_MAX_ITEMS", "").strip().replace("_", "")
    if not text:
        return _MAX_ITEMS_DEFAULT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidMapError(
            f"MAPNB_MAX_ITEMS must be a whole number >= 1; got {os.environ['MAPNB_MAX_ITEMS']!r}"
        )
    return value


def _unsized(it: Any) -> bool:
    # repeat(x, times) knows how many are left; repeat(x) has no length hint at all.
    return operator.length_hint(it, -1) < 0


def _too_many(name: str, what: str, limit: int) -> InvalidMapError:
    return InvalidMapError(
        f"{name}= has {what}; a run maps at most {limit:,} (MAPNB_MAX_ITEMS): "
        "split the inputs into several runs, or raise MAPNB_MAX_ITEMS"
    )


def build_inputs(
    fn: Callable[..., Any], lists: dict[str, Any], *, product: bool
) -> tuple[tuple[str, ...], Inputs, list[list[Any]] | None]:
    """Check the mapped lists against ``fn``.

    Returns the names, each item's args (a :class:`~mapnb.state.Columns` for lists mapped
    element-wise, a list of tuples for a product) and, for a product, its axes (the lists).
    """
    fname = function_name(fn)
    if not lists:
        raise InvalidMapError(
            f"no inputs: pass one list per mapped parameter of {fname} by keyword, e.g. (x=[1, 2, 3])"
        )
    sig = Signature.of(fn)
    if sig.accepted is not None:
        unknown = [n for n in lists if n not in sig.accepted]
        if unknown:
            raise InvalidMapError(
                f"{fname} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are {sig.describe_parameters()}"
            )
    clash = [n for n in lists if n in sig.bound]
    if clash:
        raise InvalidMapError(
            f"{', '.join(map(repr, clash))} is fixed by functools.partial; map it or bind it, not both"
        )
    missing = [n for n in sig.required if n not in lists]
    if missing:
        raise InvalidMapError(
            f"{fname} needs {', '.join(map(repr, missing))}: map it (name=[...]) "
            "or bind it with functools.partial"
        )
    names = tuple(lists)
    columns = [materialise(n, v) for n, v in lists.items()]
    if product:
        total, limit = math.prod(len(c) for c in columns), max_items()
        if total > limit:
            sizes = " x ".join(f"{len(c):,}" for c in columns)
            raise InvalidMapError(
                f"the product of {', '.join(names)} has {sizes} = {total:,} items; a run maps at most "
                f"{limit:,} (MAPNB_MAX_ITEMS): sweep fewer values, or raise MAPNB_MAX_ITEMS"
            )
        return names, list(itertools.product(*columns)), columns
    lengths = {n: len(c) for n, c in zip(names, columns)}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n} has {k} item{'s' * (k != 1)}" for n, k in lengths.items())
        raise InvalidMapError(
            f"mapped lists must have the same length: {detail} "
            "(they map element-wise; use .product(...) for every combination)"
        )
    return names, Columns(columns), None  # (held as columns: no tuple per item)
