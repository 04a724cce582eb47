"""The sweep views in a real browser (JupyterLab 4 on 127.0.0.1, Debian's Chromium through
Playwright; the recipe and fixtures of tests/test_browser.py).

What a user does, checked in the kernel itself (through a second client on the kernel's
connection file): brushing an axis of the parallel coordinates fills ``run.selected``;
"Re-run selected" runs exactly those items again; a pruned item shows as pruned and the
run still succeeds; ``run.extend`` adds cells while the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.test_browser import SHOTS, api, page, run_all, server, wait  # noqa: F401  (fixtures)

nbformat = pytest.importorskip("nbformat")
jupyter_client = pytest.importorskip("jupyter_client")

SETUP = """\
import math, os, time, uuid
import mapnb
os.makedirs('calls', exist_ok=True)

def train(lr, depth, seed):
    # one file per call: the test counts how often each item ran
    open(f'calls/{lr}_{depth}_{seed}_{uuid.uuid4().hex}', 'w').close()
    loss = abs(math.log10(lr) + 2) + 1 / depth + seed / 100
    for step in range(4):
        time.sleep(0.15)
        mapnb.report(step, loss=loss * (1 + 1 / (step + 1)))
    return {'loss': round(loss, 4), 'acc': round(1 - lr, 4)}
"""
SWEEP = """\
run = mapnb.map_task(train, concurrency=4,
                     prune=mapnb.MedianStopping('loss', mode='min', grace=1, min_items=2)
                     ).submit_product(lr=[1.0, 0.1, 0.01, 0.001], depth=[2, 4], seed=[0, 1])
run
"""
VIEWS = """() => {
  const g = document.querySelector('.mapnb-grid'), s = g && g.querySelector('.mapnb-sweep');
  if (!s) return null;
  const c = s.querySelector('.mapnb-parallel-canvas'), r = c.getBoundingClientRect();
  return {state: g.dataset.state, drawn: +(s.dataset.drawn || 0), drawMs: +(s.dataset.drawMs || 0), shown: s.style.display !== 'none',
    axes: JSON.parse(c.dataset.axes || '[]'), top: +c.dataset.top, bottom: +c.dataset.bottom,
    left: r.left, ctop: r.top, count: s.querySelector('.mapnb-sweep-count').textContent,
    rerun: !s.querySelector('.mapnb-rerun-selected').disabled,
    best: s.querySelectorAll('.mapnb-best-row').length,
    heat: +(s.querySelector('.mapnb-heat-canvas').dataset.cells || 0),
    pruned: g.querySelectorAll('.mapnb-cell.s-pruned').length,
    cells: g.querySelectorAll('.mapnb-cell').length,
    panel: g.querySelector('.mapnb-detail')?.innerText ?? ''};
}"""


class Kernel:
    """A second client of the notebook's kernel: runs code there and returns what it printed."""

    def __init__(self, root: pathlib.Path, server_url: str) -> None:
        kid = wait(lambda: (api(server_url, "kernels") or [None])[0], 60, "a kernel")["id"]
        path = wait(lambda: next((root / ".rt").glob(f"kernel-{kid}.json"), None), 30, "the connection file")
        self.client = jupyter_client.BlockingKernelClient(connection_file=str(path))
        self.client.load_connection_file()
        self.client.start_channels()

    def eval(self, code: str) -> object:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        self.client.execute_interactive(f"import json as _j; print(_j.dumps({code}))", timeout=60, output_hook=hook)
        return json.loads("".join(out))

    def close(self) -> None:
        self.client.stop_channels()


@contextlib.contextmanager
def diagnosed(pg, tmp_path: pathlib.Path, shot: str, what: str) -> Iterator[contextlib.ExitStack]:
    """A browser test's body: what it opens on the stack is closed after it; on a failure,
    a screenshot (``SHOTS / shot``) is taken and the server's log goes into the error."""
    with contextlib.ExitStack() as stack:
        try:
            yield stack
        except Exception as exc:
            pg.screenshot(path=SHOTS / shot)
            log = (tmp_path / "server.log").read_text()[-3000:]
            raise AssertionError(f"{what} failed; see {shot}; server log:\n{log}") from exc


def write_notebook(root: pathlib.Path, name: str, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / name)


def views(pg, cond, timeout: float, what: str) -> dict:
    t0, v = time.monotonic(), None
    while time.monotonic() - t0 < timeout:
        v = pg.evaluate(VIEWS)
        if v and cond(v):
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last seen {v}")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ui", ["lab/tree", "notebooks"])  # JupyterLab 4, Notebook 7
def test_brush_rerun_selected_and_pruning_in_a_browser(server, page, tmp_path, ui):  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    tag = "lab" if ui.startswith("lab") else "nb7"
    write_notebook(tmp_path, "views.ipynb", [SETUP, SWEEP])
    errors: list[str] = []  # uncaught errors thrown by the views' code (the page's own aside)
    ours = ("mountSweep", "drawHeat", "drawScatter", "drawParallel", "drawBest", "syncControls", "units")
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}") if any(f in (e.stack or "") for f in ours) else None)
    with diagnosed(page, tmp_path, f"sweep_{tag}_failed.png", "sweep views test") as stack:
        run_all(server, page, f"{ui}/views.ipynb")
        kernel = stack.enter_context(contextlib.closing(Kernel(tmp_path, server)))
        end = views(page, lambda v: v["state"] == "succeeded" and v["best"] > 0, 120, "the sweep's end")
        page.screenshot(path=SHOTS / f"sweep_{tag}_1_views.png")
        assert end["shown"] and end["heat"] >= 8 and len(end["axes"]) >= 5, end  # lr, depth, seed, loss, acc, ...
        assert end["pruned"] >= 1 and not end["rerun"], end  # pruned items shown, and still "succeeded"
        assert kernel.eval("run.state") == "succeeded"
        assert kernel.eval("run.counts['pruned']") == end["pruned"]
        page.locator(".mapnb-parallel-canvas").scroll_into_view_if_needed()
        end = views(page, lambda v: v["axes"], 10, "the parallel coordinates in view")
        # Brush the lr axis (values 1.0, 0.1, 0.01, 0.001 from bottom to top) over its upper
        # half: the items with lr 0.01 or 0.001.
        lr = end["axes"][0]
        assert lr["name"] == "lr"
        x = end["left"] + lr["x"]
        y0, y1 = end["ctop"] + end["top"] - 4, end["ctop"] + (end["top"] + end["bottom"]) / 2
        page.mouse.move(x, y0)
        page.mouse.down()
        page.mouse.move(x, (y0 + y1) / 2, steps=4)
        page.mouse.move(x, y1, steps=4)
        page.mouse.up()
        want = kernel.eval("[i for i, (lr, d, s) in enumerate(run.inputs) if lr in (0.01, 0.001)]")
        wait(lambda: kernel.eval("run.selected") == want, 30, f"run.selected == {want}")
        v = views(page, lambda v: v["rerun"], 30, "Re-run selected enabled")
        assert v["count"] == f"{len(want)} selected"
        page.screenshot(path=SHOTS / f"sweep_{tag}_2_brushed.png")
        calls = kernel.eval("sorted(os.listdir('calls'))")
        before = {c.rsplit("_", 1)[0] for c in calls}
        assert len(calls) == 16 and len(before) == 16
        page.locator(".mapnb-rerun-selected").click()
        wait(lambda: len(kernel.eval("os.listdir('calls')")) == 16 + len(want), 60, "the re-run items' calls")
        views(page, lambda v: v["state"] == "succeeded", 60, "the re-run's end")
        again = [c.rsplit("_", 1)[0] for c in kernel.eval("sorted(os.listdir('calls'))")]
        twice = sorted({c for c in again if again.count(c) == 2})
        assert twice == sorted(kernel.eval(f"[f'{{lr}}_{{d}}_{{s}}' for lr, d, s in (run.inputs[i] for i in {want})]"))
        # A click on the best table's first row shows that item's panel.
        page.locator(".mapnb-best-row").first.click()
        views(page, lambda v: "inputs" in v["panel"], 30, "the best item's panel")
        page.screenshot(path=SHOTS / f"sweep_{tag}_3_rerun.png")
        # A selection made in Python is drawn in the views.
        kernel.eval("run.__setattr__('selected', [0, 1, 2]) or 1")
        v = views(page, lambda v: v["count"] == "3 selected", 30, "the selection from Python")
        # Every control redraws the views without an error: metric, order, X/Y, reductions
        # (a slice at one value), "± std over" off, facets, points coloured by a parameter.
        sweep = page.locator(".mapnb-sweep")
        for cls, value in (("metric", "acc"), ("order", "asc"), ("facet", "2"), ("reduce", "slice"), ("color", "0"),
                           ("facet", "-1"), ("std", "2"), ("x", "2"), ("reduce", "mean"), ("metric", "loss")):  # fmt: skip
            drawn = views(page, lambda v: True, 5, "the views")["drawn"]
            sweep.locator(f".mapnb-sweep-{cls}").select_option(value)
            views(page, lambda v, d=drawn: v["drawn"] > d, 30, f"a redraw after {cls}={value}")
        assert not errors, errors
        page.screenshot(path=SHOTS / f"sweep_{tag}_4_controls.png")
        if tag == "nb7":  # the dark theme is checked in JupyterLab
            return
        # The dark theme, as a user picks it: the canvases are drawn again in its colours.
        page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
        page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
        page.locator(".lm-Menu-itemLabel").get_by_text("JupyterLab Dark", exact=True).click()
        drawn = v["drawn"]
        views(page, lambda v: v["drawn"] > drawn and page.evaluate("document.body.dataset.jpThemeLight") == "false",
              30, "the views redrawn in the dark theme")  # fmt: skip
        time.sleep(1.0)  # the theme's stylesheet settles; the screenshot is for people
        page.locator(".mapnb-sweep").screenshot(path=SHOTS / "sweep_6_dark.png")


GROW = """\
import time
import mapnb

def slow(lr, depth):
    time.sleep(0.6)
    return {'loss': lr * depth}

run = mapnb.map_task(slow, concurrency=2).submit_product(lr=[0.1, 0.01], depth=[2, 4, 8])
run
"""


@pytest.mark.timeout(300)
def test_run_extend_adds_cells_while_running_in_a_browser(server, page, tmp_path):  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    write_notebook(tmp_path, "grow.ipynb", [GROW])
    with diagnosed(page, tmp_path, "sweep_grow_failed.png", "grow test") as stack:
        run_all(server, page, "lab/tree/grow.ipynb")
        kernel = stack.enter_context(contextlib.closing(Kernel(tmp_path, server)))
        views(page, lambda v: v["cells"] == 6 and v["state"] == "running", 60, "the sweep running")
        assert kernel.eval("run.extend(lr=[0.001])") == 3
        grown = views(page, lambda v: v["cells"] == 9, 60, "the grown grid")
        assert grown["state"] == "running", grown  # it grew while it ran
        page.screenshot(path=SHOTS / "sweep_4_grown.png")
        end = views(page, lambda v: v["state"] == "succeeded", 90, "the grown sweep's end")
        assert end["best"] == 9 and end["heat"] == 9, end  # the views have the new items too
        assert kernel.eval("run.counts['succeeded']") == 9


BIG = """\
import mapnb

def point(a, b, seed):
    return {'loss': abs(a - 12) + abs(b - 7) / 3 + seed / 100, 'acc': a / 25}

run = mapnb.map_task(point).submit_product(a=list(range(25)), b=list(range(20)), seed=list(range(20)))
run
"""


@pytest.mark.timeout(300)
def test_ten_thousand_item_sweep_views_stay_usable(server, page, tmp_path):  # noqa: F811
    """10,000 items x 3 parameters: the views draw every item, and a brush selects in the kernel."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    write_notebook(tmp_path, "big_sweep.ipynb", [BIG])
    with diagnosed(page, tmp_path, "sweep_big_failed.png", "10k sweep test") as stack:
        run_all(server, page, "lab/tree/big_sweep.ipynb")
        kernel = stack.enter_context(contextlib.closing(Kernel(tmp_path, server)))
        end = views(page, lambda v: v["state"] == "succeeded" and v["best"] == 10, 180, "10,000 items' end")
        page.locator(".mapnb-parallel-canvas").scroll_into_view_if_needed()
        end = views(page, lambda v: v["axes"], 30, "the parallel coordinates")
        page.screenshot(path=SHOTS / "sweep_5_ten_thousand.png")
        a = end["axes"][0]  # a: 0..24 bottom to top; brush its top fifth
        x = end["left"] + a["x"]
        y0 = end["ctop"] + end["top"] - 4
        y1 = end["ctop"] + end["top"] + (end["bottom"] - end["top"]) * 0.19
        page.mouse.move(x, y0)
        page.mouse.down()
        page.mouse.move(x, y1, steps=5)
        page.mouse.up()
        wait(lambda: kernel.eval("len(run.selected)") == 2000, 60, "2,000 items selected (a = 20..24)")
        assert kernel.eval("sorted({run.inputs[i][0] for i in run.selected})") == [20, 21, 22, 23, 24]
        v = views(page, lambda v: v["count"] == "2000 selected", 30, "the count")
        print(f"views' last draw at 10,000 items: {v['drawMs']} ms ({v['drawn']} draws)")
