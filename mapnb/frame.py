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

import array
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .events import Status
from .state import Columns

if TYPE_CHECKING:
    from .state import RunView

META = ("status", "cached", "error", "attempts", "duration_s")


def _fields(outputs: Sequence[Any], types: set[type]) -> list[str] | None:
    """The shared field names of structured outputs (of these ``types``), or None for a
    single column.

    Decided per type, not per output (an ABC check per output cost ~0.3 s a million)."""
    if not outputs:
        return None
    if all(issubclass(t, Mapping) for t in types):
        names: dict[str, None] = {}
        for o in outputs:
            names.update(dict.fromkeys(map(str, o)))
        return list(names)
    if len(types) != 1:
        return None
    (first,) = types
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


def _column(values: Sequence[Any], has_gaps: bool, types: set[type] | None = None) -> Any:
    # With gaps, keep None as None (pandas would turn ints into floats with NaN).
    return pd.Series(values, dtype=object) if has_gaps else _plain(values, types)


_PLAIN = {int: np.int64, float: np.float64, bool: np.bool_}


def _plain(values: Sequence[Any], types: set[type] | None = None) -> Any:
    """Numbers of one plain type as the numpy array pandas would make of them, made
    directly (pandas' own inference took ~0.1 s a million per column); anything else as it
    is, for pandas to infer. ``types``: those of the values, if known."""
    if len(values) < 1000:
        return values
    if types is None:
        types = set(map(type, values))
    if len(types) != 1:
        return values
    dtype = _PLAIN.get(next(iter(types)))
    if dtype is None:
        return values
    try:  # (one type, so nothing is converted: fromiter is np.array's work without inference)
        return np.fromiter(values, dtype=dtype, count=len(values))
    except (OverflowError, ValueError):  # an int beyond 64 bits: pandas keeps objects
        return values


def _numbers(values: Any, dtype: str) -> Any:
    """A column from a run's array of numbers (``Ints``, ``OptionalFloats``: None is NaN),
    copied whole in one step; any other sequence item by item."""
    if isinstance(values, array.array):
        # tobytes: one copy made under the GIL, so the engine may grow the array meanwhile
        # (a buffer exported to numpy would forbid that).
        return np.frombuffer(values.tobytes(), dtype=f"{values.typecode}").astype(dtype)
    return pd.Series(list(values), dtype=dtype)


_STATUS_TEXT = {s: s._value_ for s in Status}  # (.value is a slow descriptor; this runs per item)


def _status_column(view: RunView, statuses: Sequence[Status], n: int) -> Any:
    """The ``status`` column. For a large finished run, made from the one-byte codes by
    pyarrow (the codes as a dictionary of the nine words, cast to strings: ~5 ms a
    million) when pandas keeps strings in pyarrow anyway; pandas converting a million
    words one by one took ~0.35 s."""
    if n >= 1000 and view.done.is_set() and _arrow_strings():
        import pyarrow as pa

        codes = pa.array(np.frombuffer(bytes(view.codes[:n]), dtype=np.uint8))
        return pa.DictionaryArray.from_arrays(codes, pa.array(_STATUS_WORDS)).cast(pa.string()).to_pandas()
    return list(map(_STATUS_TEXT.__getitem__, statuses))


_STATUS_WORDS = [s._value_ for s in Status]  # in code order (state.STATUS_CODE)


@functools.lru_cache(maxsize=1)
def _arrow_strings() -> bool:
    """Whether pyarrow is there and pandas makes a column of words with the dtype that
    pyarrow's own conversion gives (pandas 3's ``str``), so either way gives one frame."""
    try:
        import pyarrow as pa
    except ImportError:
        return False
    return bool(pa.array(["queued"]).to_pandas().dtype == pd.Series(["queued"]).dtype)


def build_frame(view: RunView) -> pd.DataFrame:
    """The DataFrame of a run so far (see the module docstring for its columns); for a
    run that uses the cache, a ``cached`` column after ``status`` says which outputs came
    from it."""
    # One consistent copy of each column: the engine thread may move on while we build
    # (once the run is done, nothing moves: the run's own lists are read, not copied). A
    # run that grows (run.extend) lengthens its lists before its n: the first n are whole.
    n = view.n
    names, inputs = view.names, view.inputs
    statuses, outputs, errors = view.status, view.outputs, view.errors
    whole = view.done.is_set() and len(inputs) == n
    if not whole:
        statuses, outputs, errors = list(statuses[:n]), list(outputs[:n]), list(errors[:n])
    ok = (Status.SUCCEEDED, Status.CACHED)
    all_good = statuses.count(Status.SUCCEEDED) + statuses.count(Status.CACHED) == n
    good = [True] * n if all_good else [s in ok for s in statuses]
    gaps = not all_good
    data: dict[str, Any] = {}
    if isinstance(inputs, Columns):  # (pandas copies them: the run's own lists may be read)
        columns = inputs.columns if whole else [c[:n] for c in inputs.columns]
    else:
        rows = inputs if whole else inputs[:n]
        columns = [[args[k] for args in rows] for k in range(len(names))]
    for name, column in zip(names, columns):
        data[name] = _plain(column)
    kept = outputs if all_good else [o for o, g in zip(outputs, good) if g]
    types = set(map(type, kept))
    fields = _fields(kept, types)
    if fields is None:
        key = "output" if "output" not in data else "output.output"
        data[key] = _column(
            outputs if all_good else [o if g else None for o, g in zip(outputs, good)], gaps, types
        )
    else:
        for f in fields:
            key = f if f not in data and f not in META else f"output.{f}"
            data[key] = _column([_field(o, f) if g else None for o, g in zip(outputs, good)], gaps)
    data["status"] = _status_column(view, statuses, n)
    if view.cached:
        data["cached"] = [s is Status.CACHED for s in statuses]
    data["error"] = pd.Series(_errors(view, statuses, errors, good), dtype=object)
    data["attempts"] = _numbers(view.attempts, "int64")[:n]
    data["duration_s"] = _numbers(view.durations, "float64")[:n]
    _add_metrics(data, view, n)
    # copy=False: each column stays the array built for it (no second copy into blocks).
    frame = pd.DataFrame(data, index=pd.RangeIndex(n), copy=False)
    del data
    if n >= _TRIM_ITEMS:
        _trim()
    return frame


_TRIM_ITEMS = 100_000


def _trim() -> None:
    """Hand the memory freed while building a large frame back to the system (glibc keeps
    it otherwise: the columns' temporary copies left ~100 bytes per item resident)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _errors(view: RunView, statuses: Any, errors: Any, good: list[bool]) -> list[str | None]:
    """The ``error`` column: why a pruned item was pruned, the error of the others that
    did not succeed, None for the rest (most runs: every item, found in one C-level count)."""
    n = len(statuses)
    if errors.count(None) == n and Status.PRUNED not in statuses:
        return [None] * n
    why = list(view.pruned_why[:n])
    return [
        why[k] if s is Status.PRUNED else e.one_line() if e is not None and not g else None
        for k, (e, g, s) in enumerate(zip(errors, good, statuses))
    ]


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
