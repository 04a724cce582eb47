"""Growing a sweep, and where each of its items sits.

A product's items are first every combination of its axes in ``itertools.product``
order (the last axis varies fastest). ``run.extend(lr=[...])`` appends the combinations
that use at least one new value, in ``itertools.product`` order over the grown axes (old
values first on each axis, then the new ones), so that the old items keep their indices.
The axes' lengths after each growth (:attr:`RunView.shapes`) say where every item sits:
:func:`coords`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InvalidMapError
from .events import Status
from .spec import materialise, max_items, short_repr

if TYPE_CHECKING:
    from .state import RunView


def coords(shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Each item's position on every axis (its index into each axis's values), from the
    axes' lengths as the sweep started and after each growth."""
    if not shapes:
        return []
    out = list(itertools.product(*(range(k) for k in shapes[0])))
    for old, new in itertools.pairwise(shapes):
        out += [c for c in itertools.product(*(range(k) for k in new)) if any(p >= o for p, o in zip(c, old))]
    return out


def _same(a: Any, b: Any) -> bool:
    """Whether two axis values are the same value (arrays and odd ``==`` included)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # an array's elementwise ==, say: not one value
        return False


def grow_product(
    names: tuple[str, ...], axes: list[list[Any]], lists: dict[str, Any]
) -> tuple[list[list[Any]], list[tuple[Any, ...]]]:
    """The axes with the new values of ``lists`` appended, and the new items (see the
    module docstring for their order). Refuses unknown axes and repeated values."""
    unknown = [n for n in lists if n not in names]
    if unknown:
        raise InvalidMapError(
            f"run.extend(): the sweep has no axis {', '.join(map(repr, unknown))}; its axes are {', '.join(names)}"
        )
    grown = [list(a) for a in axes]
    for name, value in lists.items():
        axis = grown[names.index(name)]
        for v in materialise(name, value):
            if any(_same(v, w) for w in axis):
                raise InvalidMapError(
                    f"run.extend({name}=...): {short_repr(v)} is already a value of {name} "
                    f"(values: {short_repr(axis)}); pass only new values"
                )
            axis.append(v)
    total, limit = math.prod(len(a) for a in grown), max_items()
    if total > limit:
        raise InvalidMapError(
            f"run.extend(): the grown sweep has {total:,} items; a run maps at most {limit:,} (MAPNB_MAX_ITEMS)"
        )
    old = tuple(len(a) for a in axes)
    new_items = [
        tuple(a[p] for a, p in zip(grown, c))
        for c in itertools.product(*(range(len(a)) for a in grown))
        if any(p >= o for p, o in zip(c, old))
    ]
    return grown, new_items


def more_items(names: tuple[str, ...], args: tuple[Any, ...], lists: dict[str, Any]) -> list[tuple[Any, ...]]:
    """New items of an element-wise map: one list per mapped parameter (by position, in
    the run's order, or by name), all of one length."""
    if len(args) > len(names):
        raise InvalidMapError(
            f"run.extend_items(): {len(args)} positional lists for {len(names)} mapped parameters ({', '.join(names)})"
        )
    given = dict(zip(names, args))
    twice = [n for n in lists if n in given]
    if twice:
        raise InvalidMapError(
            f"run.extend_items(): {', '.join(map(repr, twice))} given by position and by name"
        )
    given.update(lists)
    unknown = [n for n in given if n not in names]
    missing = [n for n in names if n not in given]
    if unknown or missing:
        what = f"no mapped parameter {', '.join(map(repr, unknown))}" if unknown else ""
        what += ("; " if what else "") + (f"missing {', '.join(map(repr, missing))}" if missing else "")
        raise InvalidMapError(f"run.extend_items(): {what}; the run maps {', '.join(names)} (one list each)")
    columns = [materialise(n, given[n]) for n in names]
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        detail = ", ".join(f"{n} has {len(c)} item{'s' * (len(c) != 1)}" for n, c in zip(names, columns))
        raise InvalidMapError(f"run.extend_items(): the lists must have the same length: {detail}")
    return list(zip(*columns))


def not_a_product(what: str) -> InvalidMapError:
    return InvalidMapError(
        f"run.{what}(): this run maps its lists element-wise, it is not a sweep; "
        "use run.extend_items(...) to append items"
    )


def a_product() -> InvalidMapError:
    return InvalidMapError(
        "run.extend_items(): this run is a sweep (.product(...)); use run.extend(name=[new values]) "
        "to grow its axes"
    )


# -- Optuna -------------------------------------------------------------------------------

_NO_OPTUNA = "run.to_optuna() needs optuna, which is not installed: pip install 'mapnb[optuna]' (or pip install optuna)"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _field_value(output: Any, name: str) -> Any:
    """``output``'s field ``name`` (a dict key, a dataclass or NamedTuple field), else None."""
    if isinstance(output, Mapping):
        return output.get(name)
    if dataclasses.is_dataclass(output) or (isinstance(output, tuple) and hasattr(output, "_fields")):
        return getattr(output, name, None)
    return None


def _output_fields(output: Any) -> list[str]:
    if isinstance(output, Mapping):
        return [str(k) for k, v in output.items() if _is_number(v)]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return [f.name for f in dataclasses.fields(output) if _is_number(getattr(output, f.name))]
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return [f for f in output._fields if _is_number(getattr(output, f))]
    return []


def choose_metric(view: RunView, metric: str | None) -> str:
    """The metric to_optuna uses: ``metric`` if given (an output field or a reported
    metric), else the pruner's, else the first numeric output field, else the first
    reported metric, else "output" for numeric outputs."""
    ok = [i for i in range(view.n) if view.status[i] in (Status.SUCCEEDED, Status.CACHED)]
    if metric is not None:
        if not isinstance(metric, str) or not metric:
            raise InvalidMapError(f"run.to_optuna(metric=...) must be a name (a str); got {metric!r}")
        return metric
    if view.prune_metric:
        return view.prune_metric
    for i in ok:
        fields = _output_fields(view.outputs[i])
        if fields:
            return fields[0]
    if view.metric_names:
        return view.metric_names[0]
    if any(_is_number(view.outputs[i]) for i in ok):
        return "output"
    raise InvalidMapError(
        "run.to_optuna(): no metric to use: the outputs are not numbers (nor have numeric fields) and "
        "no item reported one; pass metric='name'"
    )


def _value(view: RunView, i: int, metric: str) -> float | None:
    """Item ``i``'s value of ``metric``: its output's field, the output itself for
    "output", else its last reported value."""
    out = view.outputs[i] if view.status[i] in (Status.SUCCEEDED, Status.CACHED) else None
    v = _field_value(out, metric)
    if v is None and metric == "output" and _is_number(out):
        v = out
    if v is None:
        v = (view.last_metrics[i] or {}).get(metric)
    if not _is_number(v) or math.isnan(float(v)):
        return None
    return float(v)


def _choice(v: Any) -> Any:
    """An axis value as Optuna can store it (None, bool, int, float, str; else its repr)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return short_repr(v, 200)


def _distributions(names: tuple[str, ...], columns: list[list[Any]]) -> dict[str, Any]:
    """One distribution per parameter: Int/Float ranges for numbers, else categorical."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, values in zip(names, columns):
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[name] = IntDistribution(min(values), max(values))
        elif values and all(_is_number(v) for v in values):
            out[name] = FloatDistribution(float(min(values)), float(max(values)))
        else:
            out[name] = CategoricalDistribution(list(dict.fromkeys(values)))
    return out


def to_optuna(
    view: RunView,
    axes: list[list[Any]] | None,
    metric: str | None,
    direction: str,
    study_name: str | None,
    storage: Any,
) -> Any:
    """See :meth:`mapnb.MapRun.to_optuna`."""
    try:
        import optuna
    except ImportError:
        raise ImportError(_NO_OPTUNA) from None
    if direction not in ("minimize", "maximize"):
        raise InvalidMapError(
            f"run.to_optuna(direction=...) must be 'minimize' or 'maximize'; got {direction!r}"
        )
    name = choose_metric(view, metric)
    n, names = view.n, view.names
    inputs = [tuple(_choice(v) for v in args) for args in view.inputs[:n]]
    columns = [[_choice(v) for v in a] for a in axes] if axes is not None else [list(c) for c in zip(*inputs)]
    distributions = _distributions(names, columns)
    states = {
        Status.SUCCEEDED: optuna.trial.TrialState.COMPLETE,
        Status.CACHED: optuna.trial.TrialState.COMPLETE,
        Status.PRUNED: optuna.trial.TrialState.PRUNED,
        Status.FAILED: optuna.trial.TrialState.FAIL,
    }
    trials = []
    for i in range(n):
        state = states.get(view.status[i])
        if state is None:  # not finished, or never evaluated (aborted, cancelled)
            continue
        steps = {s: float(v[name]) for s, v in view.metric_history(i) if _is_number(v.get(name))}
        value = _value(view, i, name)
        attrs: dict[str, Any] = {
            "mapnb_run": view.run_id,
            "mapnb_index": i,
            "mapnb_status": str(view.status[i]),
        }
        if state is optuna.trial.TrialState.COMPLETE and value is None:
            state = optuna.trial.TrialState.FAIL
            attrs["mapnb_error"] = f"no value of {name!r}"
        elif state is optuna.trial.TrialState.FAIL:
            err = view.errors[i]
            attrs["mapnb_error"] = err.one_line() if err is not None else "failed"
        if state is optuna.trial.TrialState.FAIL:
            value = None
        trials.append(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=dict(zip(names, inputs[i])),
                distributions=distributions,
                intermediate_values={s: v for s, v in steps.items() if math.isfinite(v)},
                user_attrs=attrs,
            )
        )
    way = (
        optuna.study.StudyDirection.MINIMIZE
        if direction == "minimize"
        else optuna.study.StudyDirection.MAXIMIZE
    )
    study = optuna.create_study(study_name=study_name, storage=storage, direction=way)
    study.set_user_attr("mapnb_metric", name)
    study.add_trials(trials)
    return study
