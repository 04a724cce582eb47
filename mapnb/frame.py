"""A run's state as a pandas DataFrame: one row per item, in input order.

Columns: the mapped inputs by name; the output (one ``output`` column, or one column per
field when every successful output is a dict, a dataclass or a NamedTuple; a field whose
name is already taken becomes ``output.<field>``; flytekit's ``FlyteFile``,
``FlyteDirectory`` and ``StructuredDataset`` stay whole in ``output``); then ``status``, ``error``,
``attempts`` and ``duration_s``. Output columns hold ``None`` for every item that did not
succeed. Items that reported metrics (``mapnb.report``) add one column per metric, at
the end, with each item's last reported value (NaN where it reported none); a metric
whose name is taken becomes ``metric.<name>``. A pruned item's ``error`` says why it
was pruned ("pruned at step 3: loss 0.9 > median 0.5").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from .events import Status

if TYPE_CHECKING:
    from .state import RunView

META = ("status", "cached", "error", "attempts", "duration_s")


def _fields(outputs: list[Any]) -> list[str] | None:
    """The shared field names of structured outputs, or None for a single column."""
    if not outputs:
        return None
    if all(isinstance(o, Mapping) for o in outputs):
        names: dict[str, None] = {}
        for o in outputs:
            names.update(dict.fromkeys(map(str, o)))
        return list(names)
    first = type(outputs[0])
    if any(type(o) is not first for o in outputs):
        return None
    if first.__module__.split(".")[0] == "flytekit":
        return None  # FlyteFile, FlyteDirectory, StructuredDataset: one value each, kept whole
    if dataclasses.is_dataclass(first):
        return [f.name for f in dataclasses.fields(first)]
    if issubclass(first, tuple) and hasattr(first, "_fields"):
        return list(first._fields)
    return None


def _field(o: Any, name: str) -> Any:
    if isinstance(o, Mapping):
        return o.get(name)
    return getattr(o, name)


def _column(values: list[Any], has_gaps: bool) -> Any:
    # With gaps, keep None as None (pandas would turn ints into floats with NaN).
    return pd.Series(values, dtype=object) if has_gaps else values


def build_frame(view: RunView) -> pd.DataFrame:
    """The DataFrame of a run so far (see the module docstring for its columns); for a
    run that uses the cache, a ``cached`` column after ``status`` says which outputs came
    from it."""
    # One consistent copy of each column: the engine thread may move on while we build.
    # A run that grows lengthens its lists before its n: the first n entries are whole.
    n = view.n
    names, inputs = view.names, view.inputs[:n]
    statuses, outputs, errors = list(view.status[:n]), list(view.outputs[:n]), list(view.errors[:n])
    attempts, durations = list(view.attempts[:n]), list(view.durations[:n])
    good = [s is Status.SUCCEEDED or s is Status.CACHED for s in statuses]
    gaps = not all(good)
    data: dict[str, Any] = {}
    for k, name in enumerate(names):
        data[name] = [args[k] for args in inputs]
    fields = _fields([o for o, g in zip(outputs, good) if g])
    if fields is None:
        key = "output" if "output" not in data else "output.output"
        data[key] = _column([o if g else None for o, g in zip(outputs, good)], gaps)
    else:
        for f in fields:
            key = f if f not in data and f not in META else f"output.{f}"
            data[key] = _column([_field(o, f) if g else None for o, g in zip(outputs, good)], gaps)
    data["status"] = [s._value_ for s in statuses]  # (.value is a slow descriptor; this runs per item)
    if view.cached:
        data["cached"] = [s is Status.CACHED for s in statuses]
    why = list(view.pruned_why[:n])
    data["error"] = pd.Series(
        [
            why[k] if s is Status.PRUNED else e.one_line() if e is not None and not g else None
            for k, (e, g, s) in enumerate(zip(errors, good, statuses))
        ],
        dtype=object,
    )
    data["attempts"] = attempts
    data["duration_s"] = pd.Series(durations, dtype="float64")
    _add_metrics(data, view, n)
    return pd.DataFrame(data, index=pd.RangeIndex(n))


def _add_metrics(data: dict[str, Any], view: RunView, n: int) -> None:
    """One column per reported metric: each item's last value (NaN: none reported)."""
    names = view.metric_names
    if not names:
        return
    last = list(view.last_metrics[:n])
    nan = float("nan")
    for name in names:
        key = name if name not in data else f"metric.{name}"
        data[key] = pd.Series([m.get(name, nan) if m else nan for m in last], dtype="float64")
