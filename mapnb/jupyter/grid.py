"""What the live grid shows, computed from a run, with no widget library involved.

:class:`GridModel` follows a :class:`~mapnb.MapRun` through its events and, when asked,
says what changed since it was last asked, as a plain dict of JSON-able values. The
widgets in :mod:`mapnb.widget` push those dicts to the front end at a throttled rate;
:func:`render_html` draws the same state as static HTML for saved notebooks.

Sizes stay bounded whatever the run does: item statuses travel as a cumulative patch
(index -> one letter) that is folded into one full string every ``PATCH_CAP`` changes
(fewer for a run under ten times that: once the patch would outweigh the string),
and only the selected item's log is ever sent, its last ``LOG_TAIL`` characters.
"""

from __future__ import annotations

import collections
import dataclasses
import html
import math
import reprlib
import threading
import time
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from ..events import (
    Event,
    ItemFinished,
    ItemLog,
    ItemMetrics,
    ItemRetrying,
    ItemsAdded,
    ItemStarted,
    RunFinished,
    RunStarted,
    Status,
)
from ..state import STATUS_CODE
from .look import (  # noqa: F401  (these lived here: still importable from here)
    _VIRIDIS,
    _fmt_value,
    _luminance,
    _numeric_fields,
    _ramp,
    _rgb,
    contrast,
    text_on,
)
from .sweep import SweepColumns, render_views_html, sweep_axes

if TYPE_CHECKING:
    from ..run import MapRun

CODES = {
    Status.QUEUED: "q",
    Status.RUNNING: "r",
    Status.RETRYING: "t",
    Status.SUCCEEDED: "s",
    Status.FAILED: "f",
    Status.CACHED: "c",
    Status.PRUNED: "p",
    Status.ABORTED: "a",
    Status.CANCELLED: "x",
}
# view.codes (one byte per item, mapnb.state.STATUS_CODE) to these letters, in one step.
_LETTERS = bytes.maketrans(bytes(STATUS_CODE[s] for s in CODES), "".join(CODES.values()).encode("ascii"))
# Status colours: a fill and the text drawn on it (chips, glyphs), each pair at least 4.5:1
# (WCAG AA; tests/test_contrast.py checks them and assets/grid.css, which repeats them).
COLORS = {
    "queued": "#e0e0e0",
    "running": "#1565c0",
    "retrying": "#ffa726",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cached": "#00796b",
    "pruned": "#6a1b9a",
    "aborted": "#6d4c41",
    "cancelled": "#616161",
}
TEXT_ON = {
    "queued": "#212121",
    "running": "#fff",
    "retrying": "#212121",
    "succeeded": "#fff",
    "failed": "#fff",
    "cached": "#fff",
    "pruned": "#fff",
    "aborted": "#fff",
    "cancelled": "#fff",
}
# Beyond hue: statuses that end badly carry a glyph (queued cells are drawn hollow), and so
# do pruned items (scissors: stopped on purpose, not failed).
GLYPHS = {"failed": "\u2715", "aborted": "!", "cancelled": "\u2298", "retrying": "\u21bb", "pruned": "\u2702"}
_BY_CODE = {c: s.value for s, c in CODES.items()}
_GLYPH_PREFIX = {k: g + " " for k, g in GLYPHS.items()}

PATCH_CAP = 2048  # status changes carried as a patch before they are folded into the full string
LOG_TAIL = 64 * 1024  # characters of the selected item's log sent to the front end
TEXT_CAP = 16 * 1024  # characters of a traceback or an input's repr
HEAT_MAX_CELLS = 40_000  # a larger sweep is drawn as a plain grid, without a heatmap
_labels = reprlib.Repr()
_labels.maxstring, _labels.maxother, _labels.maxlist = 24, 24, 4
_inputs = reprlib.Repr()
_inputs.maxstring, _inputs.maxother, _inputs.maxlist, _inputs.maxdict = 400, 400, 20, 20


def _output_fields(value: Any) -> list[list[str]]:
    """An output as the panel shows it: its fields (dict, dataclass, NamedTuple), each
    as ``[name, repr]``, or ``[["output", repr]]``."""
    if isinstance(value, dict):
        items: Any = list(value.items())[: _inputs.maxdict]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        items = zip(value._fields, value)
    else:
        return [["output", _inputs.repr(value)]]
    return [[str(k), _inputs.repr(v)] for k, v in items]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _nice_step(span: float, intervals: int = 5) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that splits ``span`` in at most
    about ``intervals`` parts."""
    raw = span / intervals
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag * (1 + 1e-9))


def _clean(x: float) -> float:
    return float(f"{x:.12g}")  # 0.30000000000000004 -> 0.3


def nice_scale(lo: float, hi: float, prev: tuple[float, float] | None = None) -> tuple[float, float]:
    """Round bounds for a colour scale holding ``lo`` .. ``hi``, that only ever widens.

    Parameters
    ----------
    lo, hi : float
        The smallest and largest value to show (finite, ``lo <= hi``).
    prev : tuple of float, optional
        The scale in use. It is returned unchanged when it already holds ``lo`` .. ``hi``;
        otherwise the new scale holds it as well, so that no cell coloured on it moves
        towards the middle of the scale.

    Returns
    -------
    tuple of float
        ``(low, high)``: multiples of a step of 1, 2, 2.5 or 5 times a power of ten,
        with ``low <= lo``, ``hi <= high`` and ``low < high``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"nice_scale needs finite lo <= hi; got lo={lo!r}, hi={hi!r}")
    if prev is not None:
        if prev[0] <= lo and hi <= prev[1]:
            return prev
        lo, hi = min(lo, prev[0]), max(hi, prev[1])
    if hi == lo:  # one value so far: the decade step around it
        step = 10.0 ** math.floor(math.log10(abs(lo))) if lo else 1.0
    else:
        step = _nice_step(hi - lo)
    low = _clean(math.floor(lo / step + 1e-9) * step)
    high = _clean(math.ceil(hi / step - 1e-9) * step)
    if high <= low:
        high = _clean(low + step)
    return min(low, lo), max(high, hi)


def nice_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a colour bar from ``lo`` to ``hi`` (bounds from :func:`nice_scale`)."""
    if not hi > lo:
        return [lo]
    step = _nice_step(hi - lo)
    first = math.ceil(lo / step - 1e-9)
    ticks = [_clean(k * step) for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return ticks if len(ticks) >= 2 else [lo, hi]


class GridModel:
    """The grid's state for one run, kept current from the run's events.

    ``on_events`` runs on the engine's thread and only notes what changed; ``changes``
    (any one thread at a time) turns that into the values to send.
    """

    def __init__(self, run: MapRun) -> None:
        self.run = run
        self._v = run.view
        self._lock = threading.Lock()
        self._dirty: set[int] = set()
        self._seen_codes = b""  # the run's status bytes as last compared (_changed_statuses)
        self._inputs_shown: tuple[int, list[list[str]]] = (-1, [])  # the panel's inputs, made once per item
        self._header_dirty = True
        self._grown = False  # the run grew (ItemsAdded): resend n, statuses and the sheet
        self.selected = -1
        self.heat_field = ""
        self._sent: dict[str, Any] = {}
        self._patch: dict[str, str] = {}
        self._fields: dict[str, None] = {}  # ordered set of numeric output fields seen
        self._heat: list[float | None] | None = None
        self._scale: tuple[float, float] | None = None  # the heatmap's colour scale, only widens
        self._was: tuple[float, float] | None = None  # the scale before it last widened
        self._rate: collections.deque[tuple[float, int]] = collections.deque(maxlen=50)  # (time, items done) samples for items/s
        self.finished = threading.Event()
        self.sheet = self._axes()
        self._sweep_init()

    # -- the engine thread --------------------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        with self._lock:
            for ev in events:
                t = type(ev)
                if t is ItemLog:  # the panel is compared whole instead (_detail_changes)
                    continue
                if t is ItemMetrics:  # the sweep views' columns
                    self._metric_dirty.add(ev.index)  # type: ignore[union-attr]
                elif t is ItemStarted or t is ItemFinished or t is ItemRetrying:
                    self._dirty.add(ev.index)  # type: ignore[union-attr]
                elif t is RunStarted:
                    self._header_dirty = True
                    self._rate.clear()  # a re-run's items/s starts afresh, idle time left out
                    self.finished.clear()
                elif t is RunFinished:
                    self._header_dirty = True
                    self.finished.set()
                elif t is ItemsAdded:
                    self._grown = self._header_dirty = True

    # -- any one thread -----------------------------------------------------------------

    def _axes(self) -> dict[str, Any]:
        axes = self.run.axes
        if axes is None or len(axes) != 2 or not 0 < self._v.n <= HEAT_MAX_CELLS:
            return {}
        names = self.run.names
        sheet: dict[str, Any] = {
            "y": {"name": names[0], "labels": [_labels.repr(v) for v in axes[0]]},
            "x": {"name": names[1], "labels": [_labels.repr(v) for v in axes[1]]},
        }
        if len(self._v.shapes) > 1:  # a grown sweep: cells[row * len(x) + col] is the item there
            cells = [-1] * (len(axes[0]) * len(axes[1]))
            for i, (r, c) in enumerate(self.run.coords or []):
                cells[r * len(axes[1]) + c] = i
            sheet["cells"] = cells
        return sheet

    def _changed_statuses(self, named: set[int]) -> tuple[_Changed, bytes]:
        """The items whose status changed since the last call, and every item's status
        letter now: the run's status bytes (``view.codes``) against those seen last,
        compared in C (the grid subscribes without per-item status events: at 100,000
        items those cost the kernel more than everything else the grid does). ``named``:
        items that events said changed too."""
        import numpy as np

        now = bytes(self._v.codes)  # one copy: the engine thread goes on writing
        seen, self._seen_codes = self._seen_codes, now
        m = min(len(seen), len(now))
        idx = np.arange(m, len(now))  # items added since (run.extend)
        if now[:m] != seen[:m]:
            diff = np.frombuffer(now, np.uint8, m) != np.frombuffer(seen, np.uint8, m)
            idx = np.concatenate([np.flatnonzero(diff), idx])
        extra = [i for i in named if i < len(now)]
        if extra:
            idx = np.union1d(idx, np.array(extra, dtype=idx.dtype))
        return _Changed(idx), now.translate(_LETTERS)

    def changes(self) -> dict[str, Any]:
        """The values that differ from what was last returned (all of them the first time)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            header, self._header_dirty = self._header_dirty, False
            grown, self._grown = self._grown, False
        # Outside the lock: on_events (the engine thread) need not wait for the comparison.
        changed, letters = self._changed_statuses(dirty)
        first = not self._sent
        out: dict[str, Any] = self._first_values(letters) if first else {}
        if first:
            changed = _Changed()
        elif grown:
            out.update(self._grown_values(letters))
        out.update(self._status_changes(changed, letters))
        if changed or header or first or self._v.done.is_set():
            out.update(self._header())
        if self.sheet and (changed or first):
            out.update(self._heat_changes(changed if not first else range(self._v.n)))
        out.update(self._sweep_changes(first, changed))
        out.update(self._detail_changes(first))
        return self._only_new(out)

    def _first_values(self, letters: bytes) -> dict[str, Any]:
        """What the front end needs once: the run's identity and every item's status."""
        rv = self._v
        return dict(
            run_id=self.run.id,
            title=self.run.name,
            names=list(self.run.names),
            n=rv.n,
            backend=rv.backend,
            concurrency=rv.concurrency,
            started=self.run.started,
            sheet=self.sheet,
            statuses=letters.decode("ascii"),
            patch={},
        )

    def _grown_values(self, letters: bytes) -> dict[str, Any]:
        """The run grew: its size, every status and the sheet's axes, anew."""
        self.sheet = self._axes()
        if self._heat is not None:
            self._heat += [None] * (self._v.n - len(self._heat))
        self._patch = {}
        return {"n": len(letters), "sheet": self.sheet, "statuses": letters.decode("ascii"), "patch": {}}

    def _status_changes(self, changed: _Changed, letters: bytes) -> dict[str, Any]:
        """The changed items' statuses, as a cumulative patch (or, past PATCH_CAP changes,
        folded into one full string: then no per-item work at all)."""
        if not changed:
            return {}
        # A patch entry ('"12345":"s",') weighs about ten letters of the full string, and
        # each of its entries costs the kernel's JSON and ipywidgets' buffer walk a step.
        if len(changed) + len(self._patch) > min(PATCH_CAP, max(16, len(letters) // 10)):
            self._patch = {}
            return {"statuses": letters.decode("ascii"), "patch": {}}
        for i in changed:
            self._patch[str(i)] = chr(letters[i])
        return {"patch": dict(self._patch)}

    def _detail_changes(self, first: bool) -> dict[str, Any]:
        """The selected item's panel, when it (or the selection) changed.

        Polled, not told: the panel is made again at each flush and sent when it differs
        from the last one sent, so that its log streams in without the grid handling an
        event per line written (tens of microseconds, one item, ten times a second).
        """
        sel, was = self.selected, self._sent.get("_sel", -1)
        if 0 <= sel < self._v.n:
            d = self.detail(sel)
            if first or was != sel or d != self._sent.get("_detail"):
                self._sent["_sel"], self._sent["_detail"] = sel, d
                return {"detail": d}
            return {}
        if sel < 0 and was >= 0:
            self._sent["_sel"] = -1
            return {"detail": {}}
        return {}

    def _only_new(self, out: dict[str, Any]) -> dict[str, Any]:
        """``out`` without the values the front end has already (patch and detail always go)."""
        for k in list(out):
            if k in ("patch", "detail", "sweep_patch"):
                continue
            if self._sent.get(k, _MISSING) == out[k]:
                del out[k]
            else:
                self._sent[k] = out[k]
        return out

    def _full_statuses(self) -> str:
        rv = self._v
        return bytes(rv.codes[: rv.n]).translate(_LETTERS).decode("ascii")

    def _header(self) -> dict[str, Any]:
        rv = self._v
        counts = {s.value: k for s, k in rv.counts.items()}
        done = sum(k for s, k in rv.counts.items() if s.final)
        ran = counts["succeeded"] + counts["failed"] + counts["cached"] + counts["pruned"]  # what the rate is about
        now = time.monotonic()
        self._rate.append((now, ran))
        t0, d0 = self._rate[0]
        for t, d in self._rate:  # the oldest sample of the last 10 s
            if now - t <= 10:
                t0, d0 = t, d
                break
        span = now - t0
        if span < 0.5:  # too short a window: use the whole run so far
            span, d0 = now - rv.started_at, 0
        rate = (ran - d0) / span if span > 0 else 0.0
        finished = rv.finished_at is not None and rv.done.is_set()
        if finished:  # the whole run's rate, which no longer changes
            rate = ran / max(rv.elapsed(), 1e-9)
        left = rv.n - done
        state = str(self.run.state)
        failures = counts["failed"] + counts["aborted"] + counts["cancelled"]
        return {
            "state": state,
            "started": self.run.started,  # moves on a re-run: the clock shows time spent running
            "counts": counts,
            "rate": round(rate, 2),
            "eta": round(left / rate, 1) if rate > 0 and left and not finished else None,
            "elapsed": round(self.run.elapsed, 2) if finished else None,
            # the kernel's own clock: the front end counts on from it, whatever its clock says
            "running_for": round(self.run.elapsed, 2),
            "can_retry": bool(finished and failures),
        }

    def _heat_changes(self, indices: Any) -> dict[str, Any]:
        rv = self._v
        out: dict[str, Any] = {}
        changed = False
        for i in indices:
            if rv.status[i] not in (Status.SUCCEEDED, Status.CACHED):
                continue
            fields = _numeric_fields(rv.outputs[i])
            new = [f for f in fields if f not in self._fields]
            if new:
                self._fields.update(dict.fromkeys(new))
                out["fields"] = list(self._fields)
                if not self.heat_field:
                    self.heat_field = new[0]
                    self._heat = None
                    out["heat_field"] = self.heat_field
            if self._heat is None:
                return {**out, **self.heat_values()}
            if self.heat_field in fields:
                self._heat[i] = _finite(fields[self.heat_field])
                changed = True
        if changed:
            out["heat"] = list(self._heat or [])
            out["heat_scale"] = self._rescale()
        return out

    def _rescale(self) -> dict[str, Any]:
        """The colour scale for the values so far: round bounds that widen as values
        arrive, never shrink, and say when they last widened (``was``)."""
        known = [v for v in self._heat or [] if v is not None]
        if not known:
            self._scale = self._was = None
            return {}
        new = nice_scale(min(known), max(known), self._scale)
        if self._scale is not None and new != self._scale:
            self._was = self._scale
        self._scale = new
        lo, hi = new
        return {
            "lo": lo,
            "hi": hi,
            "ticks": nice_ticks(lo, hi),
            "was": list(self._was) if self._was else None,
        }

    def heat_values(self) -> dict[str, Any]:
        """Every item's value of the selected numeric field (None where there is none)."""
        rv = self._v
        self._heat = [None] * rv.n
        self._scale = self._was = None  # another field: a scale of its own
        if self.heat_field:
            for i, s in enumerate(rv.status):
                if s in (Status.SUCCEEDED, Status.CACHED):
                    v = _numeric_fields(rv.outputs[i]).get(self.heat_field)
                    self._heat[i] = None if v is None else _finite(v)
        return {"heat": list(self._heat), "heat_scale": self._rescale()}

    def detail(self, i: int) -> dict[str, Any]:
        """What the panel shows for item ``i``: inputs, state, and the tail of its log."""
        rv = self._v
        chunks = rv.log_chunks(i)
        total = sum(len(t) for _, t in chunks)
        tail: list[list[str]] = []
        room = LOG_TAIL
        for stream, text in reversed(chunks):
            if room <= 0:
                break
            piece = text[-room:]
            room -= len(piece)
            tail.append([stream, piece])
        tail.reverse()
        err = rv.errors[i]
        error = ""
        if err is not None:
            error = (err.traceback or err.one_line())[-TEXT_CAP:]
        duration = rv.durations[i]
        status = rv.status[i]
        return {
            "index": i,
            "inputs": self._inputs_of(i),
            "output": _output_fields(rv.outputs[i]) if status in (Status.SUCCEEDED, Status.CACHED) else None,
            "finished": status.final,
            "status": status.value,
            "attempts": rv.attempts[i],
            "duration": None if duration is None else round(duration, 3),
            "error": error,
            "log": tail,
            "log_dropped": max(0, total - LOG_TAIL),
            "pruned": rv.pruned_why[i] or "",
            "metrics": self._metrics_detail(i),
        }

    def _inputs_of(self, i: int) -> list[list[str]]:
        """Item ``i``'s inputs as the panel shows them (their reprs, made once per item shown)."""
        if self._inputs_shown[0] != i:
            self._inputs_shown = (i, [[n, _inputs.repr(v)] for n, v in zip(self.run.names, self._v.inputs[i])])
        return [list(p) for p in self._inputs_shown[1]]

    def _metrics_detail(self, i: int) -> dict[str, Any]:
        """Item ``i``'s reported metrics for the panel: the last value of each, and a
        sparkline of the chosen one (the pruner's metric, else the first reported)."""
        rv = self._v
        last = rv.last_metrics[i]
        if not last:
            return {}
        names = rv.metric_names
        chosen = rv.prune_metric if rv.prune_metric in last else next((n for n in names if n in last), "")
        points = [(step, v[chosen]) for step, v in rv.metric_history(i) if chosen in v]
        return {
            "last": [[n, _fmt_value(last[n])] for n in names if n in last],
            "chosen": chosen,
            "steps": len(points),
            "spark": sparkline_svg(points),
        }

    # -- the sweep views (mapnb/jupyter/sweep.py) ----------------------------------------

    def _sweep_init(self) -> None:
        self._metric_dirty: set[int] = set()
        self.selection: list[int] = []  # the items selected in the views (run.selected)
        self.sweep_view: dict[str, Any] = {}  # the views' choices, set by the front end
        self.sweep = sweep_axes(self.run)
        self._sweep_n = self._v.n
        self._cols = SweepColumns(self.run)
        self._cols_final = False  # the whole columns went once the run ended

    def _sweep_changes(self, first: bool, dirty: Collection[int]) -> dict[str, Any]:
        """The sweep's axes (first, and when it grew), the columns of the items whose
        values changed, and the selection."""
        with self._lock:
            metrics, self._metric_dirty = self._metric_dirty, set()
        out: dict[str, Any] = {"selection": list(self.selection)}
        grew = self._v.n != self._sweep_n
        if grew:
            self._sweep_n = self._v.n
            self.sweep = sweep_axes(self.run)
        if first or grew:
            out["sweep"] = self.sweep
        if not self.sweep:
            return out
        # Whole at the start, on growth, and once at the end (a saved widget state is complete).
        end = self._v.done.is_set() and not self._cols_final
        self._cols_final = self._v.done.is_set()
        if first or grew or end:
            out.update(self._cols.changes(range(self._v.n), whole=True))
        elif dirty or metrics:
            # An item that just started has no values (unless it ran before): skip it.
            status, has = self._v.status, self._cols.has_values
            moved = {i for i in dirty if status[i].final or has(i)}
            out.update(self._cols.changes(sorted(moved | metrics)))
        return out

    def sweep_sync(self) -> dict[str, Any]:
        """The sweep's axes and whole columns now, for a view that opens late."""
        return {"sweep": self.sweep, "cols": self._cols.base()}

    def sweep_snapshot(self) -> dict[str, Any]:
        """What the static picture of the sweep views needs (the columns brought up to date)."""
        if not self.sweep:
            return {}
        fresh = SweepColumns(self.run)  # not self._cols: what it holds is what was sent
        return {
            "sweep": self.sweep,
            "sweep_cols": fresh.changes(range(self._v.n), whole=True)["sweep_cols"],
            "sweep_view": dict(self.sweep_view),
            "prune_metric": self._v.prune_metric,
        }

    def snapshot(self) -> dict[str, Any]:
        """The whole state now, for the static picture."""
        rv = self._v
        return {
            **self.sweep_snapshot(),
            "run_id": self.run.id,
            "title": self.run.name,
            "n": rv.n,
            "statuses": self._full_statuses(),
            **self._header(),
            "elapsed": round(self.run.elapsed, 2),
            "sheet": self.sheet,
            "heat_field": self.heat_field,
            "heat": list(self._heat) if self.sheet and self._heat is not None else [],
            "heat_scale": self._rescale() if self.sheet and self._heat is not None else {},
        }


_MISSING = object()


class _Changed:
    """Indices of the items whose status changed, as a sorted array (from comparing
    status bytes), read as a set is: ``in``, iteration, ``len``, truth. At 100,000 items
    no Python int is made unless something iterates it (a sweep's columns, a heatmap)."""

    def __init__(self, idx: Any = ()) -> None:
        self.idx = idx

    def __len__(self) -> int:
        return len(self.idx)

    def __iter__(self) -> Iterator[int]:
        return iter(self.idx.tolist() if hasattr(self.idx, "tolist") else self.idx)

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int) or not len(self.idx):
            return False
        import numpy as np

        k = int(np.searchsorted(self.idx, i))
        return k < len(self.idx) and int(self.idx[k]) == i
SPARK_POINTS = 200  # a sparkline's points at most: longer histories are thinned evenly


def sparkline_svg(points: list[tuple[int, float]], width: int = 160, height: int = 32) -> str:
    """A small inline SVG line of ``(step, value)`` points (no script, no external
    reference: safe to set as HTML, and kept in a saved notebook); "" for none."""
    pts = [(s, v) for s, v in points if math.isfinite(v)]
    if not pts:
        return ""
    if len(pts) > SPARK_POINTS:
        k = len(pts) / SPARK_POINTS
        pts = [pts[int(j * k)] for j in range(SPARK_POINTS - 1)] + [pts[-1]]
    s0, s1 = pts[0][0], pts[-1][0]
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    pad = 2

    def xy(s: int, v: float) -> str:
        x = pad + (width - 2 * pad) * ((s - s0) / (s1 - s0) if s1 > s0 else 0.5)
        y = pad + (height - 2 * pad) * ((hi - v) / (hi - lo) if hi > lo else 0.5)
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(s, v) for s, v in pts)
    end = xy(*pts[-1]).split(",")
    return (
        f'<svg class="mapnb-spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="sparkline of {len(pts)} steps">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{line}"/>'
        f'<circle cx="{end[0]}" cy="{end[1]}" r="2.5" fill="currentColor"/></svg>'
    )


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return ""
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m} min {s} s" if m < 60 else f"{m // 60} h {m % 60} min"


def static_bundle(run: MapRun) -> dict[str, Any]:
    """The run drawn without a live widget: its repr and the grid as static HTML."""
    return {"text/plain": repr(run), "text/html": render_html(GridModel(run).snapshot())}


def render_html(snap: dict[str, Any], max_cells: int = 2000) -> str:
    """A self-contained picture of the grid (inline styles, no script).

    With more than ``max_cells`` items, each square stands for a block of consecutive
    items and takes the colour of its most telling status (failed before running before
    queued before done).
    """
    n = snap["n"]
    codes = snap["statuses"]
    counts = snap["counts"]
    esc = html.escape
    chips = " ".join(
        f'<span style="display:inline-block;padding:0 6px;margin-right:4px;border-radius:8px;'
        f'background:{COLORS[k]};color:{TEXT_ON[k]}">{esc(_GLYPH_PREFIX.get(k, ""))}{esc(k)} {v}</span>'
        for k, v in counts.items()
        if v
    )
    head = (
        f'<div style="font-family:var(--jp-ui-font-family,sans-serif);font-size:12px">'
        f"<b>{esc(snap['title'])}</b> &middot; {n} item{'s' * (n != 1)} &middot; "
        f"{esc(snap['state'])} &middot; {_fmt_seconds(snap.get('elapsed'))} "
        f'<span style="color:var(--jp-ui-font-color2,#666)">run {esc(snap["run_id"])}</span><div style="margin:4px 0">{chips}</div>'
    )
    sheet = snap.get("sheet") or {}
    if snap.get("sweep"):  # the sweep views' final picture, inside the grid's box, under it
        views = render_views_html(snap, [_BY_CODE[c] for c in codes])
        if views:
            grid = render_html({**snap, "sweep": {}}, max_cells)
            return grid[: -len("</div>")] + views + "</div>"
    if sheet and n <= max_cells:
        return (
            head
            + _render_sheet(
                sheet, codes, snap.get("heat_field", ""), snap.get("heat") or [], snap.get("heat_scale") or {}
            )
            + "</div>"
        )
    per = max(1, math.ceil(n / max_cells))
    rank = "frtqxapcs"  # which status a block of items shows: the first of these present
    blocks = []
    for start in range(0, n, per):
        block = codes[start : start + per]
        blocks.append((start, start + len(block) - 1, next((c for c in rank if c in block), "q")))
    if n <= 500:  # a square per item, each with its tooltip
        cells = "".join(
            f'<span title="{a}: {_BY_CODE[c]}" style="display:inline-block;width:10px;height:10px;'
            f'margin:1px;vertical-align:top;{_square_style(_BY_CODE[c])}"></span>'
            for a, _, c in blocks
        )
        return f'{head}<div style="line-height:0;max-width:900px">{cells}</div></div>'
    # Many items: rows of 100 squares, each row drawn as runs of one colour, so that the
    # picture saved in the notebook stays small.
    rows = []
    for r in range(0, len(blocks), 100):
        runs, row = [], blocks[r : r + 100]
        k = 0
        while k < len(row):
            j = k
            while j + 1 < len(row) and row[j + 1][2] == row[k][2]:
                j += 1
            status = _BY_CODE[row[k][2]]
            runs.append(
                f'<span title="{row[k][0]}-{row[j][1]}: {status}" style="display:inline-block;'
                f'width:{7 * (j - k + 1)}px;height:6px;background:{COLORS[status]}"></span>'
            )
            k = j + 1
        rows.append(f'<div style="height:7px">{"".join(runs)}</div>')
    return f'{head}<div style="line-height:0">{"".join(rows)}</div></div>'


def _square_style(status: str, by_value: bool = False) -> str:
    """A status square's inline style: queued is hollow, the others filled; ended-badly
    statuses are hatched, so that they differ by more than hue. ``by_value``: the cells
    around are coloured by a value, so running and finished-without-one are rings."""
    if status == "queued":
        return "box-sizing:border-box;border:1px dashed #757575"
    bg = COLORS[status]
    if by_value and status in ("running", "retrying"):
        return f"box-sizing:border-box;border:3px solid {COLORS['running']}"
    if by_value and status in ("succeeded", "cached"):
        return "box-sizing:border-box;border:1px solid #757575"
    if status in ("failed", "aborted", "cancelled"):
        dark = "#{:02x}{:02x}{:02x}".format(*(round(0.75 * int(bg[k : k + 2], 16)) for k in (1, 3, 5)))
        return f"background:repeating-linear-gradient(45deg,{bg} 0 3px,{dark} 3px 5px)"
    if status == "pruned" and not by_value:  # a square too small for its glyph: a cut across it
        return f"background:{bg};box-shadow:inset 0 -4px 0 {TEXT_ON[status]}"
    return f"background:{bg}"


def _colorbar(field: str, scale: dict[str, Any]) -> str:
    """The colour bar under a static heatmap: the ramp, its ticks, and a note if it widened."""
    esc = html.escape
    lo, hi = scale["lo"], scale["hi"]
    stops = ",".join(_ramp(k / 8) for k in range(9))
    ticks = "".join(
        f'<span style="position:absolute;left:{100 * (t - lo) / (hi - lo):.2f}%;transform:translateX(-50%)">'
        f"{esc(_fmt_value(t))}</span>"
        for t in scale["ticks"]
    )
    was = scale.get("was")
    note = f" (scale widened from {_fmt_value(was[0])} \u2013 {_fmt_value(was[1])})" if was else ""
    return (
        f'<div style="margin-top:6px;font-size:12px">{esc(field)}{esc(note)}'
        f'<div style="width:240px;height:12px;margin:2px 12px 0;background:linear-gradient(to right,{stops})"></div>'
        f'<div style="position:relative;width:240px;height:16px;margin:0 12px">{ticks}</div></div>'
    )


def _render_sheet(
    sheet: dict[str, Any], codes: str, field: str, heat: list[float | None], scale: dict[str, Any]
) -> str:
    """A 2-parameter sweep as a table: one row per value of the first, one column per value
    of the second, cells coloured by ``field`` on ``scale`` where known, else by status."""
    esc = html.escape
    xs, ys = sheet["x"]["labels"], sheet["y"]["labels"]
    lo, hi = (scale["lo"], scale["hi"]) if scale else (0.0, 1.0)
    td = "padding:0 4px;text-align:center;font-size:12px"
    cell = "min-width:40px;height:28px;padding:0 2px;text-align:center;font-size:11px;border:1px solid transparent"
    rows = [
        f'<tr><th style="{td}">{esc(sheet["y"]["name"])} \\ {esc(sheet["x"]["name"])}</th>'
        + "".join(f'<th style="{td}">{esc(x)}</th>' for x in xs)
        + "</tr>"
    ]
    where = sheet.get("cells")  # a grown sweep: the item in each cell
    for r, y in enumerate(ys):
        cells = []
        for c in range(len(xs)):
            i = r * len(xs) + c if where is None else where[r * len(xs) + c]
            v = heat[i] if i < len(heat) else None
            status = _BY_CODE[codes[i]]
            if v is None or not scale:
                style, text = _square_style(status, by_value=bool(scale)), GLYPHS.get(status, "")
                fg = TEXT_ON[status] if status in GLYPHS and status != "retrying" else "inherit"
                if status == "retrying" and not scale:
                    fg = TEXT_ON[status]
                tip = f"item {i}: {status}"
            else:
                bg = _ramp((v - lo) / (hi - lo) if hi > lo else 0.5)
                style, text, fg = f"background:{bg}", _fmt_value(v), text_on(_rgb(bg))
                tip = f"item {i}: {field} = {v:.6g}"
            cells.append(f'<td title="{esc(tip)}" style="{cell};{style};color:{fg}">{esc(text)}</td>')
        rows.append(f'<tr><th style="{td};text-align:right">{esc(y)}</th>{"".join(cells)}</tr>')
    legend = _colorbar(field, scale) if scale else ""
    return f'<table style="border-collapse:separate;border-spacing:1px">{"".join(rows)}</table>{legend}'
