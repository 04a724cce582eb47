"""``mapnb.record(name, value)``: a value a notebook hands back to the run that executed it.

Inside a Jupyter kernel the value travels as a display output of its own MIME type
(:data:`MIME`), so it is saved in the executed notebook like any other output and read
back from there, as scrapbook does: no side channel, no files, nothing to clean up, and
the executed notebook stays the record of what it computed. The value is kept as JSON
when it is JSON (numbers, strings, lists, dicts); anything else is pickled (base64) under
:data:`MIME_PICKLE`. Outside a kernel (a plain script) the value is kept in this process,
in :func:`recorded`.

This module is imported by ``mapnb.record``: it must stay light (no IPython at import).
"""

from __future__ import annotations

import base64
import json
import math
import pickle
import sys
from typing import Any

MIME = "application/vnd.mapnb.record+json"
MIME_PICKLE = "application/vnd.mapnb.record-pickle+json"  # "+json": nbformat keeps it as a dict

_here: dict[str, Any] = {}


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data, or raise TypeError. numpy scalars become numbers."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError("NaN and infinity are not JSON")  # kept exact through pickle instead
    text = json.dumps(value, allow_nan=False)
    if json.loads(text) != value:  # tuples, int-keyed dicts: JSON would change them
        raise TypeError("not JSON round-trippable")
    return value


def record(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` for the run that executes this notebook.

    In a notebook run by :func:`mapnb.notebooks.run` (or ``mapnb notebooks``), each name
    becomes a column of the run's DataFrame, so a parameter sweep over a notebook yields
    a table of metrics. Recording a name again replaces the value.

    Parameters
    ----------
    name : str
        The column name.
    value : object
        JSON data (numbers, strings, lists, dicts) is kept as it is; any other picklable
        object is pickled.

    Examples
    --------
    >>> import mapnb
    >>> mapnb.record("accuracy", 0.93)  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"record() needs a non-empty string name; got {name!r}")
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    kernel = shell is not None and getattr(shell, "kernel", None) is not None
    if not kernel:
        _here[name] = value
        return
    try:
        bundle = {MIME: {"name": name, "value": _jsonable(value)}}
    except (TypeError, ValueError):
        try:
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            raise ValueError(f"record({name!r}, ...) needs JSON data or a picklable value: {e}") from None
        bundle = {MIME_PICKLE: {"name": name, "value": base64.b64encode(blob).decode("ascii")}}
    text = repr(value)
    bundle["text/plain"] = f"recorded {name} = {text if len(text) <= 200 else text[:197] + '...'}"
    from IPython.display import display

    display(bundle, raw=True)


def read(data: dict[str, Any]) -> tuple[str, Any] | None:
    """The (name, value) of a display output's ``data``, or None when it records nothing."""
    if MIME in data:
        entry = data[MIME]
        if isinstance(entry, str):  # some writers store JSON outputs as text
            entry = json.loads(entry)
        return entry["name"], entry["value"]
    if MIME_PICKLE in data:
        entry = data[MIME_PICKLE]
        if isinstance(entry, str):
            entry = json.loads(entry)
        return entry["name"], pickle.loads(base64.b64decode(entry["value"]))
    return None


def recorded() -> dict[str, Any]:
    """What :func:`record` kept in this process (outside a Jupyter kernel)."""
    return dict(_here)
