"""The live grid in a notebook: an anywidget, with a core-ipywidgets fallback.

One :class:`LiveGrid` per run. It subscribes to the run's events, and a flusher thread
sends what changed at most ``1 / interval`` times a second, as one comm message per
flush, whatever the number of items or how much they print. From that thread it only
ever changes widget state (never ``print`` or ``display``), because ipykernel stamps
output sent from a background thread with the parent of whatever cell runs latest.

Which face is used: ``MAPNB_WIDGET=anywidget|ipywidgets|off`` (default ``auto``:
anywidget, except in VS Code and Colab, which load anywidget's front end from a CDN
while core ipywidgets render from local files).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.resources
import logging
import os
import sys
import threading
import time
import weakref
from html import escape as html_escape
from typing import TYPE_CHECKING, Any

from ..errors import MapnbError
from . import busy
from .grid import COLORS, GLYPHS, TEXT_ON, GridModel, render_html
from .sweep import format_indices, parse_indices

if TYPE_CHECKING:
    from ..run import MapRun

log = logging.getLogger(__name__)

INTERVAL = 0.1  # seconds between two flushes: at most ~10 messages a second
_ASSETS = importlib.resources.files("mapnb.jupyter") / "assets"


def widget_kind() -> str:
    """``"anywidget"``, ``"ipywidgets"`` or ``"off"``, from ``MAPNB_WIDGET`` and the front end."""
    kind = os.environ.get("MAPNB_WIDGET", "auto").strip().lower()
    if kind not in ("auto", "anywidget", "ipywidgets", "off"):
        log.warning("MAPNB_WIDGET=%r is not one of auto, anywidget, ipywidgets, off; using auto", kind)
        kind = "auto"
    if kind == "auto":
        # VSCODE_CWD too: VS Code over WSL or in a container sets no VSCODE_PID (holoviz/panel#5200)
        vscode = "VSCODE_PID" in os.environ or "VSCODE_CWD" in os.environ
        remote_frontend = vscode or "google.colab" in sys.modules
        kind = "ipywidgets" if remote_frontend else "anywidget"
    return kind


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel that can show widgets."""
    if "IPython" not in sys.modules:  # never import IPython just to ask
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def grid_wanted() -> bool:
    """Whether runs here show the live grid: in a Jupyter kernel, unless MAPNB_WIDGET=off."""
    return in_notebook() and widget_kind() != "off"


def run_grid(run: MapRun) -> LiveGrid | None:
    """The run's live grid, made on first use (None where no grid is wanted)."""
    if not grid_wanted():
        return None
    if run._grid is None:
        run._grid = LiveGrid(run)
    return run._grid


SWEEP_IMPORT = 'import { mountSweep } from "./sweep.js";'


def _bundle_esm() -> str:
    """grid.js with the sweep views' module (sweep.js) in place of its import: anywidget
    loads one ES module from a string, which cannot import a sibling file."""
    grid = (_ASSETS / "grid.js").read_text()
    sweep = (_ASSETS / "sweep.js").read_text().replace("export function mountSweep", "function mountSweep")
    if SWEEP_IMPORT not in grid:
        raise RuntimeError("assets/grid.js no longer imports ./sweep.js as expected")
    return grid.replace(SWEEP_IMPORT, sweep)


def _grid_widget_class() -> type:
    import anywidget
    import traitlets

    class MapGrid(anywidget.AnyWidget):
        """The anywidget face: a cell per item (drawn on a canvas above 10,000 items), a
        detail panel, Cancel / Retry failed."""

        # Declared as traits here, not left for anywidget to add to each instance: its
        # add_traits makes a new class per widget (~1 ms of a 100,000-item run's ~90 ms).
        _esm = traitlets.Unicode(_bundle_esm()).tag(sync=True)
        _css = traitlets.Unicode((_ASSETS / "grid.css").read_text()).tag(sync=True)
        _anywidget_id = traitlets.Unicode(f"{__name__}.MapGrid").tag(sync=True)
        run_id = traitlets.Unicode("").tag(sync=True)
        title = traitlets.Unicode("").tag(sync=True)
        names = traitlets.List(traitlets.Unicode()).tag(sync=True)
        n = traitlets.Int(0).tag(sync=True)
        backend = traitlets.Unicode("").tag(sync=True)
        concurrency = traitlets.Int(0).tag(sync=True)
        started = traitlets.Float(0.0).tag(sync=True)
        state = traitlets.Unicode("running").tag(sync=True)
        counts = traitlets.Dict().tag(sync=True)
        rate = traitlets.Float(0.0).tag(sync=True)
        eta = traitlets.Float(None, allow_none=True).tag(sync=True)
        elapsed = traitlets.Float(None, allow_none=True).tag(sync=True)
        running_for = traitlets.Float(0.0).tag(sync=True)
        can_retry = traitlets.Bool(False).tag(sync=True)
        statuses = traitlets.Unicode("").tag(sync=True)
        patch = traitlets.Dict().tag(sync=True)
        sheet = traitlets.Dict().tag(sync=True)
        fields = traitlets.List(traitlets.Unicode()).tag(sync=True)
        heat_field = traitlets.Unicode("").tag(sync=True)
        heat: traitlets.List[Any] = traitlets.List().tag(sync=True)
        heat_scale = traitlets.Dict().tag(sync=True)
        selected = traitlets.Int(-1).tag(sync=True)
        detail = traitlets.Dict().tag(sync=True)
        colors = traitlets.Dict(COLORS).tag(sync=True)
        # the sweep views (sweep.py, assets/sweep.js)
        sweep = traitlets.Dict().tag(sync=True)
        sweep_cols = traitlets.Dict().tag(sync=True)
        sweep_patch = traitlets.Dict().tag(sync=True)
        sweep_view = traitlets.Dict().tag(sync=True)
        selection = traitlets.List(traitlets.Int()).tag(sync=True)

        def add_traits(self, **traits: Any) -> None:
            """Only the traits this class does not declare (see ``_esm``)."""
            new = {k: v for k, v in traits.items() if not self.has_trait(k)}
            if new:
                super().add_traits(**new)

        def comm_widgets(self) -> list[Any]:
            """The widgets whose messages the grid handles: this one."""
            return [self]

    return MapGrid


_MapGrid: type | None = None


class LiveGrid:
    """Keeps one widget in step with one run; see the module docstring.

    Parameters
    ----------
    run : MapRun
        The run to follow.
    kind : str, optional
        ``"anywidget"`` or ``"ipywidgets"``; default from :func:`widget_kind`.
    interval : float
        Seconds between two flushes to the front end.
    """

    def __init__(self, run: MapRun, kind: str | None = None, interval: float = INTERVAL) -> None:
        global _MapGrid
        self.run = run
        self.kind = kind or widget_kind()
        self.interval = interval
        self.model = GridModel(run)
        self._flush_lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._follow_lock = threading.Lock()
        self.flushes = 0
        self._last_flush = 0.0
        self._handles: list[Any] = []
        self._refresh_from_thread = False  # a shown copy wants its picture updated when the run ends
        self._shown_html = ""
        self._shown_key: tuple[Any, ...] = ()  # the run's state when the picture was drawn
        self._display_lock = threading.Lock()
        self._parent: dict[str, Any] | None = None  # the header of the cell that showed the grid
        self._frame_handle: Any = None  # the DataFrame shown under a %%map_task grid
        if self.kind == "anywidget":
            if _MapGrid is None:
                _MapGrid = _grid_widget_class()
            # The opening state goes with the widget's comm_open, not as a message after it.
            self.widget = _MapGrid(**self.model.changes())
            self.widget.observe(self._on_selected, names=["selected"])
            self.widget.observe(self._on_heat_field, names=["heat_field"])
            self.widget.observe(self._on_selection, names=["selection"])
            self.widget.observe(self._on_sweep_view, names=["sweep_view"])
        else:
            self.widget = _CoreGrid(self)
        # A selection made from Python (run.selected = [...]) is drawn in the views.
        on_selected = getattr(run, "on_selected", None)  # MapRun's, once the kernel side has it
        self._unsubscribe = on_selected(self._from_run_selected) if on_selected else None
        self.widget.on_msg(self._on_msg)
        # Cancel and clicks must reach us while a blocking run keeps the main thread busy.
        self.served = busy.serve_while_busy(self.widget.comm_widgets())
        if self.kind != "anywidget":
            self.flush()  # the core face's opening state
        # The first update waits two intervals, the opening state counting as one: then the
        # k-th update goes at (k + 1) intervals or later and the final state after it, so a
        # run sends fewer than 1 / interval messages per second of its length (a run shorter
        # than two intervals sends its final state only).
        self._last_flush = time.monotonic() + self.interval
        run.subscribe(self.model.on_events, statuses=False)  # statuses: from run.view.codes
        self._follow()

    # -- the front end's requests (the kernel's main thread) ------------------------------

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        action = content.get("action") if isinstance(content, dict) else None
        if action == "cancel":
            self.run.cancel(wait=False)
        elif action == "retry_failed":
            self.retry_failed()
        elif action == "rerun_selected":
            self.rerun_selected()
        elif action == "cancel_selected":
            self.cancel_selected()
        elif action == "sweep_sync":  # a view opened late: the whole columns, in order with the patches
            with self._flush_lock:
                self.widget.send({"sweep_sync": self.model.sweep_sync()})
        elif action == "sparks":  # the best table's sparklines, pulled on request
            self.widget.send({"sparks": self.sparks(content.get("indices") or [])})
        else:
            log.warning("live grid: unknown message %r", content)

    def _on_selected(self, change: dict[str, Any]) -> None:
        self.select(change["new"])

    def _on_heat_field(self, change: dict[str, Any]) -> None:
        self.set_heat_field(change["new"])

    def set_heat_field(self, field: str) -> None:
        """Colour the sweep's cells by the output field ``field`` ("" for by status)."""
        if field == self.model.heat_field:
            return  # our own flush set it
        with self._flush_lock:
            self.model.heat_field = field
            values = self.model.heat_values()
            if self.kind == "anywidget":
                with self.widget.hold_sync():
                    for k, v in values.items():
                        setattr(self.widget, k, v)
            else:
                self.widget.update({"heat_field": field, **values}, redraw=True)

    def select(self, index: int) -> None:
        """Show item ``index`` in the detail panel (-1: none); its log follows it live."""
        self.model.selected = index if 0 <= index < len(self.run) else -1
        if self.run.done():
            self.flush()
        else:
            self._wake.set()  # the flusher sends it, keeping to its rate

    def _on_selection(self, change: dict[str, Any]) -> None:
        self.set_selection(change["new"], from_front=True)

    def _on_sweep_view(self, change: dict[str, Any]) -> None:
        self.model.sweep_view = dict(change["new"] or {})  # the saved picture follows it

    def set_selection(self, indices: Any, from_front: bool = False) -> None:
        """Select items ``indices`` in the views, and in ``run.selected``.

        Parameters
        ----------
        indices : iterable of int
            Item indices; those out of range are dropped.
        from_front : bool
            The front end made the selection (it has it already: not sent back).
        """
        n = len(self.run)
        sel = sorted({int(i) for i in indices if 0 <= int(i) < n})
        self.model.selection = sel
        if from_front:
            self.model._sent["selection"] = sel
        if hasattr(type(self.run), "selected") and list(getattr(self.run, "selected", []) or []) != sel:
            self.run.selected = sel
        if not from_front:
            self._wake.set()
            if self.run.done():
                self.flush()

    def _from_run_selected(self, indices: Any = None) -> None:
        """``run.on_selected``'s callback: the selection changed in the kernel."""
        if indices is None:
            indices = getattr(self.run, "selected", [])
        if sorted(indices) != self.model.selection:
            self.set_selection(indices)

    def sparks(self, indices: Any) -> dict[str, str]:
        """The reported metric's sparkline (inline SVG) of each of items ``indices`` (at most 100)."""
        n = len(self.run)
        out = {}
        for i in list(indices)[:100]:
            if isinstance(i, int) and 0 <= i < n:
                spark = self.model._metrics_detail(i).get("spark")
                if spark:
                    out[str(i)] = spark
        return out

    def rerun_selected(self) -> None:
        """Run the selected items again (``run.rerun(run.selected)``), while the run goes on too."""
        sel = list(self.run.selected)
        if not sel:
            return
        try:
            self.run.rerun(sel)
        except (MapnbError, RuntimeError, ValueError) as exc:  # e.g. a backend that runs the map as one unit
            log.warning("live grid: could not re-run items %s: %s", sel, exc)
            return
        self._follow()

    def cancel_selected(self) -> None:
        """Cancel the selected items (``run.cancel(indices=run.selected, wait=False)``)."""
        sel = list(self.run.selected)
        if not sel:
            return
        try:
            self.run.cancel(indices=sel, wait=False)
        except (MapnbError, RuntimeError, ValueError) as exc:
            log.warning("live grid: could not cancel items %s: %s", sel, exc)

    def retry_failed(self) -> None:
        """Re-run the run's failed items in place; the grid follows."""
        if not self.run.done():
            return
        if self.run.retry_failed():
            self._follow()

    # -- keeping up ---------------------------------------------------------------------

    def _follow(self) -> None:
        with self._follow_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._flusher, name=f"mapnb-grid-{self.run.id}", daemon=True
                )
                self._thread.start()

    def _flusher(self) -> None:
        while True:
            finished = self.model.finished.wait(0)
            self._wake.wait(self.interval)
            self._wake.clear()
            pause = self._last_flush + self.interval - time.monotonic()
            if pause > 0:  # whoever flushed last, keep to the rate
                time.sleep(pause)
            try:
                if not self.flush() and self.kind != "anywidget":
                    self.widget.tick()  # the core face's clock moves while long items run
            except Exception:  # a closed comm or a dead front end: stop quietly
                log.exception("live grid for run %s stopped updating", self.run.id)
                return
            if finished and self.run.done():
                self.flush()
                try:  # the saved picture shows how a background run (or a re-run) ended
                    if self._refresh_from_thread:
                        self.refresh_display(from_thread=True)
                except Exception:
                    log.exception("live grid for run %s could not update its picture", self.run.id)
                with self._follow_lock:  # a Retry may have restarted the run meanwhile
                    if self.run.done():
                        self._thread = None
                        return

    def flush(self) -> int:
        """Send what changed, as one message; return how many values it carried."""
        with self._flush_lock:
            changes = self.model.changes()
            if changes:
                self.flushes += 1
                self._last_flush = time.monotonic()
                if self.kind == "anywidget":
                    with self.widget.hold_sync():
                        for k, v in changes.items():
                            setattr(self.widget, k, v)
                else:
                    self.widget.update(changes)
            return len(changes)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run is done and its final state has been sent."""
        if not self.run.view.done.wait(timeout):  # not run.wait(): that refreshes the display
            return False
        self.model.finished.wait(timeout)  # the last events have reached the model
        self.flush()  # now, not at the flusher's next tick; the flusher then finds nothing
        self._wake.set()
        return True

    # -- display ------------------------------------------------------------------------

    def static_html(self) -> str:
        """The picture saved with the notebook, for viewers without widgets."""
        return render_html(self.model.snapshot())

    def mimebundle(self) -> dict[str, Any]:
        data = self.widget._repr_mimebundle_()
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data or {})
        data["text/html"] = self.static_html()
        data["text/plain"] = repr(self.run)
        return data

    def display(self, refresh_when_done: bool = True) -> None:
        """Show the grid in the current cell (the kernel's main thread only).

        The picture saved with the notebook is brought up to date after each later cell;
        with ``refresh_when_done`` also as soon as the run ends in the background. That
        update makes the front end draw the output anew, so ``run`` shown as a cell's last
        expression leaves it to the next cell: its views may be in use by then.
        """
        from IPython.display import display

        self._refresh_from_thread = self._refresh_from_thread or refresh_when_done
        self._shown_html = self.static_html()
        self._shown_key = self._key()
        self._parent = _cell_parent()
        self._handles.append(display(self.mimebundle(), raw=True, display_id=True))
        _refresh_after_each_cell(self)

    def _key(self) -> tuple[Any, ...]:
        return (self.run.state, tuple(self.run.counts.values()), self.model.heat_field)

    def stale(self) -> bool:
        """Whether the saved picture may no longer show the run as it is (cheap to ask)."""
        return bool(self._handles) and self._key() != self._shown_key

    def display_frame(self, frame: Any) -> None:
        """Show the run's DataFrame under the grid; a Retry failed brings it up to date."""
        from IPython.display import display

        self._frame_handle = display(frame, display_id=True)

    def refresh_display(self, from_thread: bool = False) -> None:
        """Bring the saved picture of every shown copy (and the DataFrame shown under it)
        up to date with the run.

        From the kernel's main thread, once the run's final state has been sent; with
        ``from_thread``, from the grid's own thread when a run ends in the background (a
        ``--no-wait`` run, a Retry failed), sent as output of the cell that showed the grid.
        """
        if not self._handles:
            return
        if not from_thread:
            self.wait(5.0)
        with self._display_lock:
            html = self.static_html()
            self._shown_key = self._key()
            if html == self._shown_html:
                return
            self._shown_html = html
            bundle = self.mimebundle()
            with _as_cell(self._parent if from_thread else None):
                for h in self._handles:
                    h.update(bundle, raw=True)
                if self._frame_handle is not None:
                    self._frame_handle.update(self.run.df)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()  # run.selected no longer drawn here
        with contextlib.suppress(Exception):
            self.widget.close()


def _cell_parent() -> dict[str, Any] | None:
    """The header of the request the kernel is answering now (the cell that runs)."""
    from IPython import get_ipython

    pub = getattr(get_ipython(), "display_pub", None)
    parent = getattr(pub, "parent_header", None)
    return dict(parent) if isinstance(parent, dict) and parent else None


@contextlib.contextmanager
def _as_cell(parent: dict[str, Any] | None) -> Any:
    """Send display updates from this thread as output of the cell ``parent``.

    ipykernel stamps output sent from a background thread with the latest cell's header;
    ipykernel >= 6.29 keeps that header in a context variable, which this thread may set
    for itself without touching any other thread's.
    """
    from IPython import get_ipython

    pub = getattr(get_ipython(), "display_pub", None)
    var = getattr(pub, "_parent_header", None)
    if parent is None or not isinstance(var, contextvars.ContextVar):
        yield
        return
    token = var.set(parent)
    try:
        yield
    finally:
        var.reset(token)


_shown_grids: weakref.WeakSet[LiveGrid] = weakref.WeakSet()


def _refresh_after_each_cell(grid: LiveGrid) -> None:
    """After every cell, bring finished runs' saved pictures up to date (a run cancelled
    or re-run from the browser ends while no cell of its own is there to do it)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    if not _shown_grids:
        with contextlib.suppress(ValueError):
            shell.events.unregister("post_run_cell", _refresh_finished)
        shell.events.register("post_run_cell", _refresh_finished)
    _shown_grids.add(grid)


def _refresh_finished(*_: Any) -> None:
    for grid in list(_shown_grids):
        if grid.run.done() and grid.stale():
            try:
                grid.refresh_display()
            except Exception:
                log.exception("live grid for run %s could not update its picture", grid.run.id)


def attempts_text(status: str, attempts: int) -> str:
    """``attempt 2`` for a running item (``attempts`` counts finished ones), else ``3 attempts``."""
    if status == "running":
        return f"attempt {attempts + 1}"
    return f"{attempts} attempt{'s' * (attempts != 1)}" if attempts else ""


def _detail_html(d: dict[str, Any]) -> str:
    """The detail panel of the core-ipywidgets face: what the anywidget panel shows."""
    import html

    esc = html.escape
    mono = "font-family:var(--jp-code-font-family,monospace);white-space:pre-wrap"
    timing = f"took {_seconds(d['duration'])}" if d.get("duration") is not None else ""
    if not timing and d["status"] == "running":
        timing = "running"

    def rows(title: str, pairs: list[list[str]]) -> str:
        return f'<tr><th colspan="2" style="text-align:left;font-weight:400">{title}</th></tr>' + "".join(
            f'<tr><th style="text-align:left;padding-right:8px">{esc(k)}</th><td style="{mono}">{esc(v)}</td></tr>'
            for k, v in pairs
        )

    log_text = "".join(t for _, t in d["log"])
    if not log_text:
        log_text = "(no output)" if d.get("finished") else "(no output yet)"
    elif d.get("log_dropped"):
        log_text = f"\u2026 {d['log_dropped']} earlier characters: see run.logs({d['index']})\n" + log_text
    box = (
        "max-height:300px;overflow:auto;margin:4px 0;padding:4px;"
        "border:1px solid var(--jp-border-color1,#bdbdbd);background:var(--jp-layout-color1,#fff)"
    )
    s = d["status"]
    chip = (
        f'<span style="padding:0 6px;border-radius:8px;background:{COLORS[s]};color:{TEXT_ON[s]}">'
        f"{esc(GLYPHS.get(s, '') + ' ' if s in GLYPHS else '')}{esc(s)}</span>"
    )
    return (
        f'<div class="mapnb-core-detail" style="border:1px solid var(--jp-border-color1,#bdbdbd);'
        f'border-radius:4px;padding:6px;max-width:900px;line-height:1.4">'
        f"<b>item {d['index']}</b> {chip} {attempts_text(s, d['attempts'])} {esc(timing)}"
        f'<table style="border-collapse:collapse">{rows("inputs", d["inputs"])}'
        f"{rows('output', d['output']) if d.get('output') else ''}</table>"
        + _metrics_html(d)
        + (
            # Inline styles cannot follow the theme's dark/light switch, so the traceback is
            # the theme's text on JupyterLab's own error background (4.5:1 in both themes).
            f'<pre style="{box};color:var(--jp-ui-font-color1,#212121);'
            f'background:var(--jp-rendermime-error-background,#fdd);border-left:3px solid #c62828">'
            f"{esc(d['error'])}</pre>"
            if d["error"]
            else ""
        )
        + f'<div>log</div><pre style="{box}">{esc(log_text)}</pre></div>'
    )


def _metrics_html(d: dict[str, Any]) -> str:
    """The panel's reported metrics (core face): why it was pruned, the last values, and
    the chosen metric's sparkline (our own SVG: numbers only, no script)."""
    import html

    esc = html.escape
    m = d.get("metrics") or {}
    out = f"<div><i>{esc(d['pruned'])}</i></div>" if d.get("pruned") else ""
    if m:
        last = " &middot; ".join(f"{esc(k)} <b>{esc(v)}</b>" for k, v in m["last"])
        out += (
            f"<div>metrics (last): {last}</div>"
            f'<div title="{esc(m["chosen"])} over {m["steps"]} steps">{esc(m["chosen"])} {m["spark"]}</div>'
        )
    return out


def _parses(text: str) -> bool:
    try:
        parse_indices(text, 1 << 62)
    except ValueError:
        return False
    return True


def _seconds(s: float) -> str:
    return (
        f"{s * 1000:.2g} ms" if s < 0.1 else f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {int(s % 60)} s"
    )


class _CoreGrid:
    """The core-ipywidgets face: the same state drawn as HTML, plus real buttons.

    The grid is redrawn as one HTML value at most once a second; an item is picked by
    number instead of by clicking.
    """

    def __init__(self, grid: LiveGrid) -> None:
        import ipywidgets as w

        self._grid = grid
        self._last_draw = 0.0
        self._state: dict[str, Any] = {}
        self.picture = w.HTML()
        self.picture.add_class("mapnb-core-grid")
        self.cancel = w.Button(description="Cancel", button_style="warning", icon="stop")
        self.retry = w.Button(description="Retry failed", icon="redo", layout=w.Layout(display="none"))
        # An item is picked by number; an empty box shows none (no "-1" to explain).
        self.pick = w.Text(
            value="",
            placeholder=f"0 to {len(grid.run) - 1}",
            description="Show item",
            continuous_update=False,
            layout=w.Layout(width="220px"),
        )
        self.colorby = w.Dropdown(
            options=[("status", "")],
            value="",
            description="Colour by",
            layout=w.Layout(display="none", width="220px"),
        )
        self.colorby.observe(lambda ch: grid.set_heat_field(ch["new"]), names=["value"])
        self.detail = w.HTML()
        self._note = ""  # said in place of the panel, e.g. about an item number out of range
        # The sweep views, as far as core widgets go: their picture (in ``picture``), and a
        # selection typed as indices ("1, 4-7") that is run.selected, with the two buttons.
        self.choose = w.Text(
            value="", placeholder="e.g. 1, 4-7", description="Select", continuous_update=False,
            layout=w.Layout(width="260px"),
        )
        self.choose.add_class("mapnb-core-select")
        self.rerun_sel = w.Button(description="Re-run selected", icon="redo", disabled=True)
        self.cancel_sel = w.Button(description="Cancel selected", icon="stop", disabled=True)
        self.choose.observe(self._on_choose, names=["value"])
        self.rerun_sel.on_click(lambda _: grid.rerun_selected())
        self.cancel_sel.on_click(lambda _: grid.cancel_selected())
        self.sweep_box = w.HBox(
            [self.choose, self.rerun_sel, self.cancel_sel],
            layout=w.Layout(display="" if grid.model.sweep else "none"),
        )
        self.cancel.on_click(lambda _: grid.run.cancel(wait=False))
        self.retry.on_click(lambda _: grid.retry_failed())
        self.pick.observe(self._on_pick, names=["value"])
        self.box = w.VBox(
            [self.picture, w.HBox([self.cancel, self.retry, self.pick, self.colorby]), self.sweep_box, self.detail]
        )
        self.box.add_class("mapnb-core")  # stable hooks for tests and user CSS
        self.pick.add_class("mapnb-core-pick")

    def _on_pick(self, change: dict[str, Any]) -> None:
        text = change["new"].strip()
        n = len(self._grid.run)
        ok = text.isdigit() and int(text) < n
        self._note = f"<i>no item {html_escape(text)}: pick 0 to {n - 1}</i>" if text and not ok else ""
        self.detail.value = self._note
        self._grid.select(int(text) if ok else -1)

    def _on_choose(self, change: dict[str, Any]) -> None:
        try:
            sel = parse_indices(change["new"], len(self._grid.run))
        except ValueError as exc:
            self._note = f"<i>{html_escape(str(exc))}</i>"
            self.detail.value = self._note
            return
        self._note = ""
        self._grid.set_selection(sel)

    def _show_selection(self, sel: list[int]) -> None:
        text = format_indices(sel)
        if not _parses(self.choose.value) or parse_indices(self.choose.value, 1 << 62) != sel:
            self.choose.value = text  # a selection made elsewhere (the kernel, run.selected)
        self.rerun_sel.disabled = self.cancel_sel.disabled = not sel

    def on_msg(self, callback: Any) -> None:
        self.box.on_msg(callback)

    def comm_widgets(self) -> list[Any]:
        """The widgets whose messages the grid handles."""
        return [self.box, self.cancel, self.retry, self.pick, self.colorby, self.choose, self.rerun_sel, self.cancel_sel]

    @contextlib.contextmanager
    def hold_sync(self) -> Any:
        yield

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        self.box.close()

    def tick(self) -> None:
        """Redraw the picture if the run is going and its clock moved a second since."""
        if self._state.get("state") == "running" and time.monotonic() - self._last_draw >= 1.0:
            self.update({})

    def update(self, changes: dict[str, Any], redraw: bool = False) -> None:
        self._state.update({k: v for k, v in changes.items() if k != "patch"})
        if "patch" in changes:
            codes = list(self._state.get("statuses", ""))
            for i, c in changes["patch"].items():
                codes[int(i)] = c
            self._state["statuses"] = "".join(codes)
        now = time.monotonic()
        done = self._state.get("state") != "running"
        if "fields" in changes:
            self.colorby.options = [("status", "")] + [(f, f) for f in changes["fields"]]
            self.colorby.layout.display = "" if self._state.get("sheet") else "none"
        if "heat_field" in changes and self.colorby.value != changes["heat_field"]:
            self.colorby.value = changes["heat_field"]
        if done or redraw or now - self._last_draw >= 1.0:
            self._last_draw = now
            snap = dict(self._state)
            snap["elapsed"] = snap.get("elapsed") or time.time() - snap.get("started", time.time())
            # The sweep views' picture (heatmap, best table, parallel coordinates) from the
            # model as it is now: this face keeps no columns of its own.
            snap.update(self._grid.model.sweep_snapshot())
            self.picture.value = render_html(snap, max_cells=500)
        if "selection" in changes:
            self._show_selection(changes["selection"])
        self.cancel.layout.display = "none" if done else ""
        self.retry.layout.display = "" if self._state.get("can_retry") else "none"
        d = changes.get("detail")
        if d is not None:
            self.detail.value = _detail_html(d) if d else self._note
