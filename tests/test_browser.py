"""The live grid in a real browser: JupyterLab 4 and Notebook 7 on 127.0.0.1, Debian's
Chromium driven by Playwright (see shared/browser-testing.md for the recipe and pitfalls).

Screenshots land in ``$MAPNB_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from mapnb.jupyter.grid import COLORS

CHROMIUM = "/usr/bin/chromium"
REQUIRED = os.environ.get("MAPNB_REQUIRE_BROWSER") == "1"
if not os.path.exists(CHROMIUM) and not REQUIRED:
    pytest.skip("no /usr/bin/chromium (make test-browser installs it)", allow_module_level=True)
nbformat = pytest.importorskip("nbformat")
psutil = pytest.importorskip("psutil")
playwright = pytest.importorskip("playwright.sync_api")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHOTS = pathlib.Path(os.environ.get("MAPNB_ARTIFACTS", ROOT / "test-artifacts"))
TOKEN = "mapnb-test-token"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]  # fmt: skip

CELLS = [
    "%load_ext mapnb\nimport time",
    # 20 sleepy items, 4 at a time: about 5 s, while the kernel is busy
    "%%map_task --concurrency 4 --run sleepy x=range(20)\n"
    "print(f'processing {x}')\n"
    "time.sleep(1)\n"
    "{'x': x, 'square': x * x}",
    # a long run left in the background, for the Cancel button
    "%%map_task --no-wait --concurrency 2 --run long x=range(6)\ntime.sleep(60)\nx",
]
BIG = [  # 10,000 items that print: the grid must keep up and stay responsive
    "%load_ext mapnb\nimport time",
    "%%map_task --run many x=range(10000)\nprint('line', x)\ntime.sleep(0.0005)\nx",
]

HUGE = [  # 30,000 items, more than a page of DOM cells: drawn on a canvas; every 1000th fails
    "%load_ext mapnb",
    "%%map_task --min-success-ratio 0 --run huge x=range(30000)\n"
    "if x % 1000 == 7:\n"
    "    raise ValueError(f'bad {x}')\n"
    "print('line', x)\n"
    "x",
]

SWEEP = [  # a 6x5 sweep whose top-right items fail, and a long item for the clock
    "%load_ext mapnb\nimport math, time",
    "%%map_task --product --concurrency 3 --min-success-ratio 0 --name sweep "
    "lr=[0.3, 0.1, 0.03, 0.01, 0.003, 0.001] depth=[2, 4, 8, 16, 32]\n"
    "time.sleep(0.5)\n"
    "if lr == 0.3 and depth >= 16:\n"
    "    raise ValueError(f'loss diverged at lr={lr}, depth={depth}')\n"
    "{'loss': round(abs(math.log10(lr) + 2.2) + 6 / depth, 3), 'acc': round(1 - lr, 3)}",
    "%%map_task --no-wait --run slow x=range(1)\ntime.sleep(60)\nx",
    "import os\nos.environ['MAPNB_WIDGET'] = 'ipywidgets'  # the face VS Code gets",
    "%%map_task --product --min-success-ratio 0 --name 'core face' a=[1, 2, 3] b=[1, 2]\n"
    "time.sleep(0.5)\n"
    "if a == 3 and b == 2:\n"
    "    raise ValueError('no luck')\n"
    "{'score': a * b / 10}",
]
PROBE = """() => {
  const grids = [...document.querySelectorAll('.mapnb-grid')];
  const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return {
    kernel: ind ? ind.dataset.status : null,
    grids: grids.map(g => ({
      state: g.dataset.state,
      running: g.querySelectorAll('.mapnb-cell.s-running').length,
      succeeded: g.querySelectorAll('.mapnb-cell.s-succeeded').length,
      cancelled: g.querySelectorAll('.mapnb-cell.s-cancelled').length,
      cells: g.querySelectorAll('.mapnb-cell').length,
      log: g.querySelector('.mapnb-log')?.textContent ?? null,
    })),
  };
}"""


def api(url: str, path: str) -> object:
    try:
        return json.load(urllib.request.urlopen(f"{url}/api/{path}?token={TOKEN}", timeout=5))
    except Exception:  # not up yet; /api/kernels may even answer 500 while a kernel starts
        return None


def wait(pred, timeout: float, what: str):
    t0 = time.monotonic()
    while not (r := pred()):
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)
    return r


ROOT_DIR: list[pathlib.Path] = []  # the server's root folder, for reading saved notebooks


@pytest.fixture
def server(tmp_path):
    ROOT_DIR[:] = [tmp_path]
    for name, cells in (
        ("grid.ipynb", CELLS),
        ("big.ipynb", BIG),
        ("sweep.ipynb", SWEEP),
        ("huge.ipynb", HUGE),
    ):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / name)
    settings = tmp_path / ".settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}",
         f"--LabApp.user_settings_dir={tmp_path}/.settings", f"--LabApp.workspaces_dir={tmp_path}/.ws"],
        env=dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / ".rt"), MAPNB_WIDGET="anywidget"),
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: api(url, "status") is not None, 90, "the Jupyter server")
        yield url
    finally:
        kids = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k in kids:
            if k.is_running():
                k.kill()
        log.close()


@pytest.fixture
def page(tmp_path):
    with playwright.sync_playwright() as p:  # never `playwright install`: Debian's chromium
        ctx = p.chromium.launch_persistent_context(
            tmp_path / ".profile", headless=True, args=ARGS, executable_path=CHROMIUM,
            viewport={"width": 1280, "height": 1000},
        )  # fmt: skip
        try:
            yield ctx.pages[0]
        finally:
            ctx.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("ui", ["lab/tree", "notebooks"])  # JupyterLab 4, Notebook 7
def test_the_live_grid_in_a_browser(server, page, ui, tmp_path):
    tag = "lab" if ui.startswith("lab") else "nb7"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        drive(server, page, ui, tag)
    except Exception as exc:  # keep what a failure looked like, and what the server said
        page.screenshot(path=SHOTS / f"{tag}_failed.png")
        log = (tmp_path / "server.log").read_text()[-3000:]
        raise AssertionError(
            f"browser test failed; screenshot {tag}_failed.png; server log tail:\n{log}"
        ) from exc


def run_all(server: str, page, path: str) -> None:
    page.goto(f"{server}/{path}?token={TOKEN}")
    # The indicator reads "idle" before a kernel exists: ask the server for a connected one.
    wait(lambda: [k for k in api(server, "kernels") or [] if k["execution_state"] == "idle"
                  and k["connections"] > 0], 90, "an idle kernel")  # fmt: skip
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()


def probe_until(page, cond, timeout: float, what: str) -> dict:
    seen: list[dict] = []

    def probe():
        seen.append(s := page.evaluate(PROBE))
        return s if cond(s) else None

    return wait(probe, timeout, f"{what}; last seen {seen[-1:]}")


@pytest.mark.timeout(240)
def test_ten_thousand_items_stay_responsive(server, page):
    """10,000 printing items in JupyterLab: every cell arrives, and a click is answered."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    run_all(server, page, "lab/tree/big.ipynb")
    mid = probe_until(page, lambda s: s["grids"] and 0 < s["grids"][0]["succeeded"] < 10_000, 120, "progress")
    assert mid["grids"][0]["cells"] == 10_000
    probe_until(page, lambda s: s["grids"][0]["succeeded"] == 10_000, 180, "10,000 succeeded")
    t0 = time.monotonic()
    page.locator(".mapnb-grid .mapnb-cell[data-i='9999']").click()
    probe_until(page, lambda s: "line 9999" in (s["grids"][0]["log"] or ""), 30, "item 9999's log")
    took = time.monotonic() - t0
    page.screenshot(path=SHOTS / "lab_4_ten_thousand.png")
    assert took < 10, took  # generous for a loaded machine: an idle kernel answers in ~0.1 s


def drive(server, page, ui: str, tag: str) -> None:
    def state_when(cond, timeout=60, what="the grid"):
        return probe_until(page, cond, timeout, what)

    run_all(server, page, f"{ui}/grid.ipynb")

    # The grid appears while the cell runs, and its cells turn from running to succeeded.
    mid = state_when(lambda s: s["grids"] and s["grids"][0]["cells"] == 20 and s["grids"][0]["running"] > 0
                     and s["grids"][0]["succeeded"] > 0)  # fmt: skip
    page.screenshot(path=SHOTS / f"{tag}_1_running.png")
    assert mid["grids"][0]["succeeded"] < 20 and mid["kernel"] == "busy", mid
    end = state_when(lambda s: s["grids"] and s["grids"][0]["succeeded"] == 20, what="20 succeeded")
    assert end["grids"][0]["state"] == "succeeded" and end["grids"][0]["running"] == 0

    # Clicking a cell shows that item's inputs and log.
    page.locator(".mapnb-grid").nth(0).locator(".mapnb-cell[data-i='3']").click()
    state_when(lambda s: "processing 3" in (s["grids"][0]["log"] or ""), 30, "item 3's log")

    # The background run's grid keeps updating while the kernel is idle; Cancel stops it.
    state_when(lambda s: len(s["grids"]) == 2 and s["grids"][1]["running"] == 2 and s["kernel"] == "idle",
               what="the background run")  # fmt: skip
    page.screenshot(path=SHOTS / f"{tag}_2_background.png")
    page.locator(".mapnb-grid").nth(1).locator(".mapnb-cancel").click()
    done = state_when(lambda s: s["grids"][1]["state"] == "cancelled", 30, "the cancelled run")
    assert done["grids"][1]["cancelled"] == 6 and done["grids"][1]["succeeded"] == 0, done
    page.screenshot(path=SHOTS / f"{tag}_3_cancelled.png")

    # The saved notebook shows the background run as it ended, not as it was when shown.
    def saved_picture() -> str:
        page.keyboard.press("Control+s")
        time.sleep(1.0)
        path = pathlib.Path(api(server, "contents/grid.ipynb")["path"])  # type: ignore[index]
        outputs = json.loads((ROOT_DIR[0] / path).read_text())["cells"][2]["outputs"]
        html = [o["data"].get("text/html", "") for o in outputs if o.get("output_type") == "display_data"]
        return "".join(html[0]) if html else ""

    page.locator(".jp-Notebook").first.click()  # focus, for the save shortcut
    wait(lambda: "cancelled 6" in saved_picture(), 60, "the saved picture of the cancelled run")


LOOK = """() => {
  // WCAG contrast of every piece of text the grid draws on a colour of its own.
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 :
    ((c + 0.055) / 1.055) ** 2.4; }).reduce((s, c, k) => s + c * [0.2126, 0.7152, 0.0722][k], 0);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const g = document.querySelector('.mapnb-grid');
  const pairs = [];
  for (const e of g.querySelectorAll('.mapnb-chip, .mapnb-state, .mapnb-cell.heat, .mapnb-cell.s-failed')) {
    const st = getComputedStyle(e);
    pairs.push({what: e.className, text: e.textContent || getComputedStyle(e, '::after').content,
                ratio: ratio(rgb(st.color), rgb(st.backgroundColor))});
  }
  const cell = g.querySelector('.mapnb-cell').getBoundingClientRect();
  const px = (s) => parseFloat(getComputedStyle(g.querySelector(s)).fontSize);
  return {
    pairs, cellW: cell.width, cellH: cell.height,
    xlabel: px('.mapnb-xlabel'), ylabel: px('.mapnb-ylabel'),
    ticks: [...g.querySelectorAll('.mapnb-colorbar .mapnb-tick')].map((e) => e.textContent),
    colorbar: getComputedStyle(g.querySelector('.mapnb-colorbar')).display !== 'none',
    values: [...g.querySelectorAll('.mapnb-cell.heat')].filter((e) => e.textContent).length,
    titles: [...g.querySelectorAll('.mapnb-cell.heat')].filter((e) => / loss = /.test(e.title)).length,
    failed: g.querySelectorAll('.mapnb-cell.s-failed').length,
    hollow: [...g.querySelectorAll('.mapnb-cell.s-queued, .mapnb-cell.s-running')].filter(
      (e) => getComputedStyle(e).backgroundColor === 'rgba(0, 0, 0, 0)').length,
    panel: g.querySelector('.mapnb-detail')?.innerText ?? '',
    dark: document.body.dataset.jpThemeLight === 'false',
  };
}"""


@pytest.mark.timeout(300)
def test_the_grid_is_legible_in_light_and_dark(server, page, tmp_path):
    """A 6x5 sweep heatmap and a failed item's panel in JupyterLab's light and dark themes:
    screenshots for people, and for the test what can be measured (cell size, label size,
    the colour bar, the panel's fields, the contrast of every chip and valued cell)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        look(server, page)
    except Exception as exc:
        page.screenshot(path=SHOTS / "legible_failed.png")
        log = (tmp_path / "server.log").read_text()[-3000:]
        raise AssertionError(f"legibility test failed; see legible_failed.png; server log:\n{log}") from exc


def look(server, page) -> None:
    grid = page.locator(".mapnb-grid").first

    def measure(cond, what, timeout=90):
        seen: list[dict] = []

        def f():
            if not page.locator(".mapnb-grid .mapnb-colorbar").count():
                return None
            seen.append(s := page.evaluate(LOOK))
            return s if cond(s) else None

        return wait(f, timeout, f"{what}; last seen {seen[-1:]}")

    def legible(m: dict, theme: str) -> None:
        bad = [p for p in m["pairs"] if p["ratio"] < 4.5]
        assert not bad, f"{theme}: text below 4.5:1: {bad}"
        assert m["cellW"] >= 28 and m["cellH"] >= 28, m
        assert m["xlabel"] >= 12 and m["ylabel"] >= 12, m

    run_all(server, page, "lab/tree/sweep.ipynb")
    # While it runs: values so far on the colour bar, queued and running cells hollow.
    mid = measure(lambda s: s["values"] >= 3 and s["hollow"] >= 3, "the sweep part-way")
    grid.screenshot(path=SHOTS / "legible_light_1_running.png")
    legible(mid, "light")
    end = measure(lambda s: s["values"] == 28 and s["failed"] == 2, "the sweep's end")
    legible(end, "light")
    assert end["colorbar"] and len(end["ticks"]) >= 2, end
    assert end["titles"] == 28  # the value on hover
    # A succeeded item's panel shows its inputs and its output's fields.
    grid.locator(".mapnb-cell[data-i='29']").click()
    m = measure(lambda s: "item 29" in s["panel"], "item 29's panel")
    assert all(k in m["panel"] for k in ("inputs", "lr", "0.001", "depth", "32", "output", "loss", "acc",
                                         "1 attempt", "took", "(no output)")), m["panel"]  # fmt: skip
    # A failed item's panel: inputs, attempts, timing, the error, the (empty) log.
    grid.locator(".mapnb-cell[data-i='3']").click()
    m = measure(lambda s: "item 3" in s["panel"] and "diverged" in s["panel"], "item 3's panel")
    assert all(k in m["panel"] for k in ("inputs", "lr", "0.3", "depth", "16", "failed", "attempt",
                                         "ValueError: loss diverged", "(no output)")), m["panel"]  # fmt: skip
    assert "output\n" not in m["panel"]  # no output section for a failed item
    grid.screenshot(path=SHOTS / "legible_light_2_failed_panel.png")
    page.screenshot(path=SHOTS / "legible_light_page.png")

    # The long item: the header's clock moves although nothing else changes.
    slow = page.locator(".mapnb-grid").nth(1)
    clock = slow.locator(".mapnb-clock")
    wait(lambda: slow.locator(".mapnb-cell.s-running").count() == 1, 60, "the long item running")
    first = clock.text_content()
    wait(lambda: clock.text_content() != first, 10, f"the clock to move from {first}")
    slow.locator(".mapnb-cancel").click()

    # The ipywidgets face: the same panel, an item picked by number, no "-1" anywhere.
    core = page.locator(".mapnb-core").first
    wait(
        lambda: "failed 1" in (core.locator(".mapnb-core-grid").text_content() or ""),
        60,
        "the core face's end",
    )
    assert core.locator(".mapnb-core-pick input").input_value() == ""
    core.locator(".mapnb-core-pick input").fill("5")
    core.locator(".mapnb-core-pick input").press("Enter")
    detail = core.locator(".mapnb-core-detail")
    wait(lambda: detail.count() and "no luck" in detail.inner_text(), 30, "the core face's panel")
    text = detail.inner_text()
    assert all(k in text for k in ("item 5", "failed", "1 attempt", "took", "inputs", "a", "3",
                                   "ValueError: no luck", "(no output)")), text  # fmt: skip
    core.screenshot(path=SHOTS / "legible_light_3_ipywidgets_face.png")

    # The dark theme, as a user picks it.
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel").get_by_text("JupyterLab Dark", exact=True).click()
    dark = measure(lambda s: s["dark"] and "item 3" in s["panel"], "the dark theme")
    time.sleep(1.0)  # the theme's stylesheet settles
    dark = page.evaluate(LOOK)
    legible(dark, "dark")
    grid.screenshot(path=SHOTS / "legible_dark_2_failed_panel.png")
    # The selection stays visible on the darkest cell: item 29 has the lowest loss.
    grid.locator(".mapnb-cell[data-i='29']").click()
    measure(lambda s: "item 29" in s["panel"], "item 29's panel, dark")
    grid.screenshot(path=SHOTS / "legible_dark_1_selected_value.png")
    core.screenshot(path=SHOTS / "legible_dark_3_ipywidgets_face.png")
    page.screenshot(path=SHOTS / "legible_dark_page.png")


# Where item i is drawn on the canvas (6 px cells, a 1 px gap), scrolled into view: its
# pixel near the top-left corner (away from a failed cell's stroke), the centre in page
# coordinates, and the canvas's tooltip.
CANVAS_AT = """async (i) => {
  const g = document.querySelector('.mapnb-grid'), box = g.querySelector('.mapnb-cells');
  const c = g.querySelector('.mapnb-canvas'), pitch = 7, dpr = devicePixelRatio;
  const perRow = Math.round(c.width / dpr / pitch), row = Math.floor(i / perRow), col = i % perRow;
  box.scrollTop = Math.max(0, row * pitch - 50);
  box.scrollIntoView({block: "nearest"});  // the notebook may have scrolled the grid away
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const top = Math.round(parseFloat(c.style.top) / pitch), y = (row - top) * pitch, x = col * pitch;
  const px = c.getContext('2d').getImageData(Math.round((x + 1) * dpr), Math.round((y + 1) * dpr), 1, 1).data;
  const rect = c.getBoundingClientRect(), cx = rect.left + x + 3, cy = rect.top + y + 3;
  return {rgb: [px[0], px[1], px[2]], x: cx, y: cy, cells: +box.dataset.cells, state: g.dataset.state,
          dom: g.querySelectorAll('.mapnb-cell').length, hit: document.elementFromPoint(cx, cy) === c};
}"""


def hover(page, i: int, title: str) -> dict:
    """Point at item i until the canvas names it. JupyterLab may still move the output area
    after the run ends (the DataFrame is drawn, the notebook scrolls), so the point is
    measured again on each try; the title must still come within 30 s."""
    seen: list[dict] = []

    def named():
        seen.append(at := page.evaluate(CANVAS_AT, i))
        page.mouse.move(at["x"], at["y"])
        got = page.locator(".mapnb-canvas").get_attribute("title")
        return at if got == title else None

    try:
        return wait(named, 30, title)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last tries: {seen[-3:]}") from None


@pytest.mark.timeout(300)
def test_a_large_run_is_drawn_on_a_canvas_that_answers_hover_and_click(server, page, tmp_path):
    """30,000 items: one canvas, not 30,000 elements; each item's colour is its status's,
    a hover names the item, a click opens its panel, also far down the scrolled box."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    rgb = {s: [int(COLORS[s][k : k + 2], 16) for k in (1, 3, 5)] for s in ("succeeded", "failed")}
    try:
        run_all(server, page, "lab/tree/huge.ipynb")
        grid = page.locator(".mapnb-grid").first
        wait(lambda: page.locator(".mapnb-grid .mapnb-canvas").count(), 120, "the canvas")
        wait(lambda: grid.get_attribute("data-state") == "succeeded", 240, "the run's end")
        for i, status in ((6, "succeeded"), (7, "failed"), (29_007, "failed"), (29_999, "succeeded")):
            at = page.evaluate(CANVAS_AT, i)
            assert at["cells"] == 30_000 and at["dom"] == 0, at
            assert at["rgb"] == rgb[status], (i, status, at)
            at = hover(page, i, f"item {i}: {status}")
            page.mouse.click(at["x"], at["y"])
            want = (f"item {i}", f"bad {i}" if status == "failed" else f"line {i}")
            wait(
                lambda w=want: all(k in grid.locator(".mapnb-detail").inner_text() for k in w), 30, f"{want}"
            )
        grid.screenshot(path=SHOTS / "lab_5_canvas_30000.png")
    except Exception as exc:
        page.screenshot(path=SHOTS / "canvas_failed.png")
        log = (tmp_path / "server.log").read_text()[-3000:]
        raise AssertionError(f"canvas test failed; see canvas_failed.png; server log:\n{log}") from exc
