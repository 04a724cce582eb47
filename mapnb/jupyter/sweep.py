"""The data behind the sweep views, and their static picture, with no widget library involved.

A sweep (a ``.product(...)`` of two or more parameters, or a zipped map whose inputs are
all numbers) is described once, and again whenever it grows, as its *parameters* (name,
value labels, numeric values) and, per item, the position of its value on each axis
(columnar: one list per parameter). What the items produced travels as *columns*: each
numeric output field and each reported metric (its last value), one value per item.
The columns go whole (``sweep_cols``) when the run starts, when a new column or new items
appear, and once more when the run ends (so that the widget state a saved notebook keeps
is complete); in between, each message carries only the rows of the items that changed
since the last one (``sweep_patch``). A view that opens late asks for the whole columns
(the ``sweep_sync`` message) and then follows the patches. At 10,000 items a patch
folded into a cumulative base (as the statuses travel) sent ten times the bytes.

The front end (``assets/sweep.js``) draws the views; :func:`render_views_html` draws the
final views as inline HTML and SVG for the notebook saved with them.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..events import Status
from .look import _fmt_value as _fmt
from .look import _numeric_fields, _ramp, _rgb, text_on

if TYPE_CHECKING:
    from ..run import MapRun

SWEEP_MAX_ITEMS = 100_000  # a larger run gets no sweep views (the grid still shows it)
MAX_LABELS = 2_000  # a zipped run with more distinct values of a parameter is not a sweep
SEED_NAMES = ("seed", "rep", "repeat", "replicate", "trial", "run")
_LOWER_IS_BETTER = ("loss", "err", "mse", "mae", "rmse", "cost", "regret", "time", "perplexity", "latency")
METRIC_SUFFIX = " (reported)"


def lower_is_better(name: str) -> bool:
    """Whether a metric named ``name`` looks like one to minimise (loss, error, time ...);
    the views start sorted that way (the front end has the same list)."""
    low = name.lower()
    return any(w in low for w in _LOWER_IS_BETTER)


def _number(v: Any) -> float | None:
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        x = float(v)
        return x if math.isfinite(x) else None
    return None


def _key(v: Any) -> Any:
    """A dictionary key for a parameter value (its repr when it cannot be hashed)."""
    try:
        hash(v)
    except TypeError:
        return ("repr", repr(v))
    return (type(v).__name__, v)


def _label(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else v
    return text if len(text) <= 24 else text[:23] + "\u2026"


def _axes_of(run: MapRun) -> list[list[Any]] | None:
    """Each parameter's values: the product's axes (plus any value seen only in the inputs,
    after a growth), or, for a zipped map of numbers, the sorted distinct values."""
    names, inputs = run.names, run.view.inputs
    if len(names) < 2:
        return None
    axes = [list(a) for a in run.axes] if run.axes is not None and len(run.axes) == len(names) else None
    if axes is None:
        if not all(_number(v) is not None for row in inputs for v in row):
            return None
        axes = [sorted({row[k] for row in inputs}) for k in range(len(names))]
        if any(len(a) > MAX_LABELS for a in axes):
            return None
        return axes
    for k, axis in enumerate(axes):  # values added by run.extend that run.axes may not list yet
        seen = {_key(v) for v in axis}
        for row in inputs:
            if _key(row[k]) not in seen:
                seen.add(_key(row[k]))
                axis.append(row[k])
    return axes


def sweep_axes(run: MapRun) -> dict[str, Any]:
    """The sweep's parameters and each item's position on every axis ({} if not a sweep).

    Returns
    -------
    dict
        ``params``: per parameter ``{"name", "labels", "values"}`` (``values``: floats, or
        None when a value is not a number); ``idx``: per parameter, each item's position
        in ``labels``; ``seed``: the parameter that looks like a repetition ("" if none).
    """
    if not 0 < run.view.n <= SWEEP_MAX_ITEMS:
        return {}
    axes = _axes_of(run)
    if axes is None:
        return {}
    params: list[dict[str, Any]] = []
    idx: list[Any] = []
    inputs = run.view.inputs
    # A product's positions come from the run (fast, exact); else each value is looked up.
    coords = getattr(run, "coords", None) if run.axes is not None else None
    if coords and len(coords) != len(inputs):
        coords = None
    for k, (name, axis) in enumerate(zip(run.names, axes)):
        pos = {_key(v): j for j, v in enumerate(axis)}
        nums = [_number(v) for v in axis]
        params.append(
            {
                "name": name,
                "labels": [_label(v) for v in axis],
                "values": nums if all(x is not None for x in nums) else None,
            }
        )
        idx.append(None if coords else [pos[_key(row[k])] for row in inputs])
    if coords:
        idx = [list(col) for col in zip(*coords)]
    seed = next((n for n in run.names if n.lower() in SEED_NAMES), "")
    return {"params": params, "idx": idx, "seed": seed}


def _short(v: float) -> float:
    """``v`` to 7 significant digits: what a view can show or sort by, in half the JSON."""
    return float(f"{v:.7g}")


class SweepColumns:
    """Per item, the numeric output fields and last reported metrics, as columns.

    ``changes`` (one thread at a time) says what to send: ``sweep_cols`` (the base:
    ``{"keys": [...], "data": [column, ...]}``) when it must be sent whole, and
    ``sweep_patch`` (``{"seq": k, "keys": [...], "rows": {index: row}}``: only the items
    that changed since the last call; new keys are new columns, empty but for these rows)
    otherwise.
    """

    def __init__(self, run: MapRun) -> None:
        self._v = run.view
        self.keys: list[str] = []
        self._pos: dict[str, int] = {}
        self.data: list[list[float | None]] = []
        self.n = 0
        self.seq = 0

    def row(self, i: int) -> dict[str, float]:
        """Item ``i``'s values now: its numeric output fields (once it succeeded) and its
        last reported metrics (while it runs too, and when it was pruned)."""
        rv = self._v
        out: dict[str, float] = {}
        if rv.status[i] in (Status.SUCCEEDED, Status.CACHED):
            out.update({k: _short(v) for k, v in _numeric_fields(rv.outputs[i]).items() if math.isfinite(v)})
        last = rv.last_metrics[i]
        if last:
            out.update(
                {k + METRIC_SUFFIX: _short(v) for k, v in last.items() if isinstance(v, float) and math.isfinite(v)}
            )
        return out

    def has_values(self, i: int) -> bool:
        """Whether item ``i`` has any value in the columns (as last computed)."""
        return i < self.n and any(col[i] is not None for col in self.data)

    def _add_keys(self, names: Iterable[str]) -> bool:
        new = [k for k in names if k not in self._pos]
        for k in new:
            self._pos[k] = len(self.keys)
            self.keys.append(k)
            self.data.append([None] * self.n)
        return bool(new)

    def _grow(self) -> bool:
        n = self._v.n
        if n == self.n:
            return False
        for col in self.data:
            col.extend([None] * (n - self.n))
        self.n = n
        return True

    def base(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "data": [list(c) for c in self.data]}

    def changes(self, indices: Iterable[int], whole: bool = False) -> dict[str, Any]:
        """Fold items ``indices`` in; what to send (see the class docstring)."""
        whole = self._grow() or whole
        changed: dict[int, None] = {}  # ordered set
        for i in indices:
            if i >= self.n:
                continue
            row = self.row(i)
            self._add_keys(row)  # a new column: its name travels with the patch
            for k, col in zip(self.keys, self.data):
                v = row.get(k)
                if col[i] != v:
                    col[i] = v
                    changed[i] = None
        if whole:
            return {"sweep_cols": self.base()}
        if not changed:
            return {}
        self.seq += 1  # each patch differs from the last, so that it is always sent
        rows = {str(i): [col[i] for col in self.data] for i in changed}
        return {"sweep_patch": {"seq": self.seq, "keys": list(self.keys), "rows": rows}}


# -- the static picture -------------------------------------------------------------------


def _choices(snap: dict[str, Any]) -> tuple[str, bool, int, int]:
    """The metric, its order (True: lower is better), and the X and Y parameters: the
    front end's last choice (``sweep_view``), else the defaults it starts with."""
    keys = snap["sweep_cols"]["keys"]
    view = snap.get("sweep_view") or {}
    params = snap["sweep"]["params"]
    metric: str = view["metric"] if view.get("metric") in keys else ""
    if not metric and keys:
        prune = snap.get("prune_metric", "")
        metric = prune + METRIC_SUFFIX if prune and prune + METRIC_SUFFIX in keys else keys[0]
    order = view.get("order")
    asc = bool(order == "asc") if order in ("asc", "desc") else lower_is_better(metric)
    x, y = view.get("x", 1), view.get("y", 0)  # like the grid's sheet: Y the first parameter
    ok = isinstance(x, int) and isinstance(y, int) and 0 <= x < len(params) and 0 <= y < len(params) and x != y
    return metric, asc, (x if ok else 1), (y if ok else 0)


def best_items(values: Sequence[float | None], asc: bool, k: int) -> list[int]:
    """The ``k`` items with the best values (lowest with ``asc``), best first."""
    have = [i for i, v in enumerate(values) if v is not None]
    have.sort(key=lambda i: (values[i] if asc else -values[i], i))  # type: ignore[operator]
    return have[:k]


def render_views_html(snap: dict[str, Any], statuses: Sequence[str], top: int = 10) -> str:
    """The sweep views as the saved notebook keeps them: the heatmap of the metric over
    two parameters (the others reduced to their best), the best items, and the parallel
    coordinates (SVG). "" when there is nothing to draw yet."""
    sweep, cols = snap.get("sweep") or {}, snap.get("sweep_cols") or {}
    if not sweep or not cols.get("keys"):
        return ""
    metric, asc, x, y = _choices(snap)
    values = cols["data"][cols["keys"].index(metric)]
    esc = html.escape
    order = "lowest" if asc else "highest"
    parts = [
        f'<div class="mapnb-static-views" style="margin-top:8px"><b>Sweep views</b> '
        f"&middot; metric <b>{esc(metric)}</b> ({order} is best)"
    ]
    parts.append(_heatmap_html(sweep, values, asc, x, y, metric))
    parts.append(_best_html(sweep, values, asc, top, statuses, metric))
    parts.append(parallel_svg(sweep, cols, values, asc))
    return "".join(parts) + "</div>"


def _heatmap_html(sweep: dict[str, Any], values: Sequence[float | None], asc: bool, x: int, y: int, metric: str) -> str:
    params, idx = sweep["params"], sweep["idx"]
    xs, ys = params[x]["labels"], params[y]["labels"]
    if len(xs) * len(ys) > 2500:
        return ""
    best: dict[tuple[int, int], float] = {}
    for i, v in enumerate(values):
        if v is None:
            continue
        key = (idx[y][i], idx[x][i])
        if key not in best or (v < best[key] if asc else v > best[key]):
            best[key] = v
    if not best:
        return ""
    lo, hi = min(best.values()), max(best.values())
    esc = html.escape
    td = "padding:0 4px;text-align:center;font-size:11px;min-width:36px;height:22px"
    head = f'<tr><th style="{td}">{esc(params[y]["name"])} \\ {esc(params[x]["name"])}</th>'
    head += "".join(f'<th style="{td}">{esc(lab)}</th>' for lab in xs) + "</tr>"
    rows = [head]
    for r, ylab in enumerate(ys):
        cells = []
        for c in range(len(xs)):
            v = best.get((r, c))
            if v is None:
                cells.append(f'<td style="{td};border:1px dashed #757575"></td>')
                continue
            bg = _ramp(1 - (v - lo) / (hi - lo) if asc and hi > lo else (v - lo) / (hi - lo) if hi > lo else 0.5)
            cells.append(f'<td style="{td};background:{bg};color:{text_on(_rgb(bg))}">{esc(_fmt(v))}</td>')
        rows.append(f'<tr><th style="{td};text-align:right">{esc(ylab)}</th>{"".join(cells)}</tr>')
    others = [p["name"] for k, p in enumerate(params) if k not in (x, y)]
    note = f" (best over {', '.join(others)})" if others else ""
    return (
        f'<div style="margin-top:6px;font-size:12px">heatmap of {esc(metric)}{esc(note)}; brighter is better'
        f'<table style="border-collapse:separate;border-spacing:1px">{"".join(rows)}</table></div>'
    )


def _best_html(
    sweep: dict[str, Any], values: Sequence[float | None], asc: bool, top: int, statuses: Sequence[str], metric: str
) -> str:
    esc = html.escape
    params, idx = sweep["params"], sweep["idx"]
    td = "padding:1px 6px;font-size:12px;text-align:right"
    head = (
        f'<tr><th style="{td}">#</th><th style="{td}">item</th>'
        + "".join(f'<th style="{td}">{esc(p["name"])}</th>' for p in params)
        + f'<th style="{td}">{esc(metric)}</th><th style="{td}">status</th></tr>'
    )
    rows = [head]
    for rank, i in enumerate(best_items(values, asc, top), 1):
        v = values[i] or 0.0
        status = statuses[i] if i < len(statuses) else ""
        rows.append(
            f'<tr><td style="{td}">{rank}</td><td style="{td}">{i}</td>'
            + "".join(f'<td style="{td}">{esc(p["labels"][idx[k][i]])}</td>' for k, p in enumerate(params))
            + f'<td style="{td}"><b>{esc(_fmt(v))}</b></td><td style="{td}">{esc(status)}</td></tr>'
        )
    return (
        f'<div style="margin-top:6px;font-size:12px">best {min(top, len(rows) - 1)} by {esc(metric)}'
        f'<table class="mapnb-static-best" style="border-collapse:collapse">{"".join(rows)}</table></div>'
    )


def parallel_svg(
    sweep: dict[str, Any],
    cols: dict[str, Any],
    values: Sequence[float | None],
    asc: bool,
    width: int = 640,
    height: int = 220,
    max_lines: int = 1500,
) -> str:
    """Parallel coordinates as inline SVG: one axis per parameter and per output column,
    one line per item with a value, coloured by the metric (the best drawn last, on top)."""
    params, idx = sweep["params"], sweep["idx"]
    axes: list[tuple[str, list[float | None]]] = []
    for k, p in enumerate(params):
        span = max(1, len(p["labels"]) - 1)
        axes.append((p["name"], [j / span for j in idx[k]]))
    for key, col in zip(cols["keys"], cols["data"]):
        known = [v for v in col if v is not None]
        if not known:
            continue
        lo, hi = min(known), max(known)
        axes.append((key, [None if v is None else ((v - lo) / (hi - lo) if hi > lo else 0.5) for v in col]))
    lines = best_items(values, asc, max_lines)[::-1]  # worst first: the best end on top
    if not lines or len(axes) < 2:
        return ""
    known = [values[i] for i in lines]
    lo, hi = min(v for v in known if v is not None), max(v for v in known if v is not None)
    pad, top = 48, 16
    step = (width - 2 * pad) / (len(axes) - 1)
    esc = html.escape
    out = [
        f'<svg class="mapnb-static-parallel" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 2 * top}" '
        f'viewBox="0 0 {width} {height + 2 * top}" role="img" aria-label="parallel coordinates" '
        f'style="font-size:11px;font-family:sans-serif">'
    ]
    for i in lines:
        v = values[i] or 0.0
        t = (v - lo) / (hi - lo) if hi > lo else 0.5
        pts = []
        for a, (_, col) in enumerate(axes):
            c = col[i]
            if c is not None:
                pts.append(f"{pad + a * step:.1f},{top + height * (1 - c):.1f}")
        out.append(
            f'<polyline fill="none" stroke="{_ramp(1 - t if asc else t)}" stroke-opacity="0.6" points="{" ".join(pts)}"/>'
        )
    for a, (name, _) in enumerate(axes):
        xa = pad + a * step
        out.append(f'<line x1="{xa:.1f}" y1="{top}" x2="{xa:.1f}" y2="{top + height}" stroke="currentColor"/>')
        out.append(
            f'<text x="{xa:.1f}" y="{top - 4}" text-anchor="middle" fill="currentColor">{esc(name[:16])}</text>'
        )
    caption = '<div style="margin-top:6px;font-size:12px">parallel coordinates (brighter is better)</div>'
    return caption + "".join(out) + "</svg>"


def best_table_html(snap: dict[str, Any], statuses: Sequence[str], top: int = 10) -> str:
    """The best items as an HTML table (the core-ipywidgets face shows it live)."""
    sweep, cols = snap.get("sweep") or {}, snap.get("sweep_cols") or {}
    if not sweep or not cols.get("keys"):
        return ""
    metric, asc, _, _ = _choices(snap)
    values = cols["data"][cols["keys"].index(metric)]
    return _best_html(sweep, values, asc, top, statuses, metric)


def parse_indices(text: str, n: int) -> list[int]:
    """Item indices from ``"1, 4-7"`` (ranges inclusive), sorted and unique.

    Raises
    ------
    ValueError
        A part is not a number or a range ``a-b``, or an index is not in ``0 .. n-1``.
    """
    out: set[int] = set()
    for part in (p.strip() for p in text.replace(" ", ",").split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"{part!r} is not an item number or a range like 4-7")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a > b or b >= n:
            raise ValueError(f"{part!r}: items are 0 to {n - 1}")
        out.update(range(a, b + 1))
    return sorted(out)


def format_indices(indices: Sequence[int]) -> str:
    """``[1, 4, 5, 6, 7]`` as ``"1, 4-7"``."""
    parts: list[str] = []
    k = 0
    while k < len(indices):
        j = k
        while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
            j += 1
        parts.append(str(indices[k]) if j == k else f"{indices[k]}-{indices[j]}")
        k = j + 1
    return ", ".join(parts)
