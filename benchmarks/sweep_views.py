"""What the sweep views cost the kernel and the front-end link (`make bench` runs it).

Workload W8: a sweep of 10,000 items over 3 parameters (25 x 20 x 20, the last one a
``seed``), each item sleeping 1 ms, reporting one metric and returning two numeric fields,
on the local pool. Measured in the kernel's process, with the real widget model and a comm that records
every message the kernel would send (serialised as JSON, as ipykernel does; see
benchmarks/widget.py):

- ``progress=False``: no grid at all;
- the live grid with its sweep views' data (axes once, output and metric columns as
  patches, the selection): what a notebook shows;
- the live grid with the views' data switched off, to isolate what the views add.

Targets: at most ~10 messages a second; the views add little kernel CPU to the grid's.

In the browser (when ``/usr/bin/chromium`` is there; ``--no-browser`` skips it): the same
sweep run from a notebook in a real JupyterLab (the recipe of ``benchmarks/grid_render.py``),
each redraw of all four views timed in the page while the run goes on and at its end.
Target: a redraw under 50 ms at 10,000 items, so the page stays responsive.

Every number is the median of ``--repeat`` runs. Results:
``benchmarks/results/sweep_views.json`` (table ``sweep_views``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402
from widget import Recorder, measure  # noqa: E402  (benchmarks/widget.py)

AXES = {"lr": [10 ** (-k / 5) for k in range(25)], "depth": list(range(1, 21)), "seed": list(range(20))}
N = 25 * 20 * 20


def point(lr: float, depth: int, seed: int) -> dict[str, float]:
    import mapnb

    time.sleep(0.001)  # a run of a few seconds, as a sweep in a notebook lasts
    loss = abs(lr - 0.05) + 1 / depth + seed / 1000
    mapnb.report(0, loss=loss)
    return {"loss": loss, "acc": 1 - loss / 2}


def one(mt: Any, rec: Recorder, views: bool) -> tuple[float, float, tuple[int, int, int, float]]:
    """One run with the grid (the views' data on or off): wall, CPU and its traffic."""
    import mapnb.jupyter.grid as grid_mod
    from mapnb.jupyter.widget import LiveGrid

    traffic: list[tuple[int, int, int, float]] = []
    real = grid_mod.sweep_axes

    def run() -> None:
        rec.reset()
        t0 = time.perf_counter()
        r = mt.submit_product(**AXES)
        grid = LiveGrid(r, kind="anywidget")
        grid.wait()
        traffic.append((rec.messages, rec.bytes, rec.largest, time.perf_counter() - t0))
        grid.close()

    if not views:
        grid_mod.sweep_axes = lambda run: {}  # type: ignore[assignment]  # not a sweep, for the grid
    try:
        wall, cpu = measure(run)
    finally:
        grid_mod.sweep_axes = real
    return wall, cpu, traffic[0]


NOTEBOOK = [
    "import math, time\nimport mapnb",
    "def point(lr, depth, seed):\n"
    "    time.sleep(0.001)\n"
    "    loss = abs(lr - 0.05) + 1 / depth + seed / 1000\n"
    "    mapnb.report(0, loss=loss)\n"
    "    return {'loss': loss, 'acc': 1 - loss / 2}\n\n"
    f"run = mapnb.map_task(point).submit_product(lr={AXES['lr']!r}, depth={AXES['depth']!r}, seed={AXES['seed']!r})\n"
    "run",
]
# The views' element is made anew when the cell's output is refreshed (its saved picture
# brought up to date): every element's draws seen so far are kept on the page.
PROBE = """() => {
  const g = document.querySelector('.mapnb-grid'), s = g && g.querySelector('.mapnb-sweep');
  const seen = window.__mapnbSeen = window.__mapnbSeen || new Set();
  if (s && s.mapnbDraws) seen.add(s.mapnbDraws);
  return {state: g?.dataset.state ?? null, draws: [].concat(...seen),
          best: s ? s.querySelectorAll('.mapnb-best-row').length : 0};
}"""


def browser_run() -> dict[str, Any]:
    """One fresh JupyterLab and Chromium: the sweep's views' redraw times, in ms."""
    import tempfile

    import grid_render as gr  # benchmarks/grid_render.py: the server and browser recipe
    import nbformat
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mapnb-sweep-views-") as tmp, gr.jupyterlab(Path(tmp), 1) as url:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, Path(tmp) / "sweep.ipynb")
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                Path(tmp) / ".profile", headless=True, args=gr.ARGS, executable_path=gr.CHROMIUM,
                viewport={"width": 1280, "height": 1000},
            )  # fmt: skip
            try:
                page = ctx.pages[0]
                page.goto(f"{url}/lab/tree/sweep.ipynb?token={gr.TOKEN}")
                gr.wait(lambda: [k for k in gr.api(url, "kernels") or [] if k["execution_state"] == "idle"
                                 and k["connections"] > 0], 120, "an idle kernel")  # fmt: skip
                page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
                page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
                gr.wait(lambda: (s := page.evaluate(PROBE))["state"] == "succeeded" and s["best"] and s, 600, "the end")
                time.sleep(1.0)  # the last redraw
                rec = page.evaluate(PROBE)
            finally:
                ctx.close()
    draws = sorted(rec["draws"])
    return {
        "draws": len(draws),
        "median": statistics.median(draws),
        "p95": draws[int(0.95 * (len(draws) - 1))],
        "max": draws[-1],
    }


def browser_table(runs: list[dict[str, Any]]) -> str:
    med = statistics.median
    return f"""
In Chromium (JupyterLab, headless `/usr/bin/chromium`), the same sweep run from a notebook, \
median of {len(runs)}: each redraw of the four views (heatmap, metric vs. parameter, parallel \
coordinates, best table) while the run goes on:

| redraws | redraw time, median | 95th percentile | slowest (target < 50 ms) |
|---|---|---|---|
| {med(r["draws"] for r in runs):.0f} | {med(r["median"] for r in runs):.1f} ms | {med(r["p95"] for r in runs):.1f} ms \
| {med(r["max"] for r in runs):.1f} ms |
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=_common.repeat(5))
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    ap.add_argument("--no-browser", action="store_true", help="skip the redraw times in Chromium")
    args = ap.parse_args()

    import mapnb

    rec = Recorder()
    rec.install()
    mt = mapnb.map_task(point, progress=False)
    mt.product(lr=AXES["lr"][:2], depth=[1], seed=[0])  # a warm pool, as in a notebook session
    rows: dict[str, list[tuple[float, float, tuple[int, int, int, float]]]] = {"plain": [], "grid": [], "views": []}
    print(f"- W8 {N:,} items x3 parameters x{args.repeat}", flush=True)
    for _ in range(args.repeat):  # interleaved, so that drift on a noisy machine hits all three
        w, c = measure(lambda: mt.product(**AXES))
        rows["plain"].append((w, c, (0, 0, 0, w)))
        rows["grid"].append(one(mt, rec, views=False))
        rows["views"].append(one(mt, rec, views=True))
    med = statistics.median
    data = {
        k: {
            "wall": med(r[0] for r in v),
            "cpu": med(r[1] for r in v),
            "messages": med(r[2][0] for r in v),
            "bytes": med(r[2][1] for r in v),
            "largest": max(r[2][2] for r in v),
            "rate": med(r[2][0] / r[2][3] for r in v),
        }
        for k, v in rows.items()
    }
    text = table(data, args.repeat)
    browser: list[dict[str, Any]] = []
    if not args.no_browser and Path("/usr/bin/chromium").exists():
        for k in range(args.repeat):
            print(f"- W8 in Chromium, run {k + 1} of {args.repeat}", flush=True)
            browser.append(browser_run())
        text += browser_table(browser)
    tables = {"sweep_views": text}
    print("\n".join(tables.values()))
    _common.write("sweep_views", tables, {"repeat": args.repeat, "n": N, **data, "browser": browser}, args.out)


def table(d: dict[str, dict[str, float]], repeat: int) -> str:
    p, g, v = d["plain"], d["grid"], d["views"]

    def row(name: str, x: dict[str, float]) -> str:
        if x is p:
            return f"| {name} | {x['wall']:.2f} | {x['cpu']:.2f} | 0 | 0 | 0 | - |"
        return (
            f"| {name} | {x['wall']:.2f} | {x['cpu']:.2f} | {x['messages']:.0f} | {x['rate']:.1f} "
            f"| {x['bytes'] / 1e3:.0f} kB | {x['largest'] / 1e3:.1f} kB |"
        )

    return f"""W8: a sweep of {N:,} items x 3 parameters (25 x 20 x 20 seeds), each sleeping 1 ms, \
reporting a metric and returning 2 fields, median of {repeat}:

| | wall s | kernel CPU s | messages | messages/s | bytes sent | largest message |
|---|---|---|---|---|---|---|
{row("mapnb, progress=False", p)}
{row("live grid, views' data off", g)}
{row("live grid + sweep views", v)}

Kernel CPU over progress=False: grid {100 * (g["cpu"] / p["cpu"] - 1):+.1f}%, grid + views \
{100 * (v["cpu"] / p["cpu"] - 1):+.1f}% (the views add {v["cpu"] - g["cpu"]:+.2f} s); wall \
{100 * (v["wall"] / p["wall"] - 1):+.1f}%; front-end messages with the views {v["rate"]:.1f}/s \
(target <= ~10/s).
"""


if __name__ == "__main__":
    main()
