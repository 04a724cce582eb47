"""How long Chromium takes to show a status patch of the live grid at 100,000 items
(`make bench` runs it).

A real JupyterLab on 127.0.0.1 and Debian's ``/usr/bin/chromium`` driven by Playwright (the
recipe of ``tests/test_browser.py``; never ``playwright install``). The notebook runs
``%%map_task`` over 100,000 items that sleep 0.1 ms each, so that the run lasts long enough
for dozens of patches. A script in the page, installed before JupyterLab loads:

- stamps every websocket message when it arrives (its listener is the socket's first, so
  it runs before JupyterLab's handler);
- watches the grid's DOM (``MutationObserver``s: the page until the grid appears, then the
  grid's child lists and ``data-state`` only: not the thousands of cell attributes a patch
  sets, which would slow the page measured, nor the clock, which ticks on a timer); for
  each change, the time from the last message that arrived before it (the patch: the grid
  paints synchronously on a model change, cells and header together) to just after the
  next frame is painted (``requestAnimationFrame`` then a ``setTimeout(0)``: the usual
  "next paint" mark) is that patch's render time;
- records main-thread long tasks (> 50 ms, ``PerformanceObserver('longtask')``) from Run
  All on: the page's responsiveness while the grid updates.

Run All is clicked 2 s after the kernel is idle (JupyterLab's own start-up work is not the
grid's). The first change (the grid's first paint) and the run's end (the final state, whose
frame also holds JupyterLab's rendering of the cell's outputs: the DataFrame, the saved
picture) are reported apart from the patches.
Target: a patch renders in < 50 ms. Median of ``--repeat`` runs (a fresh server and
browser each). Results: ``benchmarks/results/grid_render.json`` (table ``grid_render``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TOKEN = "mapnb-bench-token"
N, SLEEP = 100_000, 0.0001
TARGET_MS = 50.0
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def cells(n: int) -> list[str]:
    return ["%load_ext mapnb\nimport time", f"%%map_task --run big x=range({n})\ntime.sleep({SLEEP})\nx"]


# Installed before the page's own scripts: it wraps WebSocket before JupyterLab makes one.
HOOK = """(() => {
  const rec = window.__bench = {msgs: [], renders: [], long: []};
  const W = window.WebSocket;
  function Hooked(...a) {
    const ws = new W(...a);
    ws.addEventListener('message', () => { rec.lastMsg = performance.now(); rec.msgs.push(rec.lastMsg); });
    return ws;
  }
  Hooked.prototype = W.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Hooked[k] = W[k];
  window.WebSocket = Hooked;
  try {
    new PerformanceObserver((l) => { for (const e of l.getEntries()) rec.long.push([e.startTime, e.duration]); })
      .observe({type: 'longtask', buffered: true});
  } catch (e) { rec.noLongtask = String(e); }
  // Cheap to watch: once the grid is there, only its child lists (the header's texts, the
  // cells added in one fragment) and its data-state; never the cells' attributes, which a
  // patch sets on thousands of cells (recording those would slow the page it measures).
  const changed = () => {
    const msg = rec.lastMsg, seen = performance.now();
    requestAnimationFrame(() => setTimeout(() => {
      rec.renders.push({msg, seen, painted: performance.now(),
                        state: document.querySelector('.mapnb-grid')?.dataset.state});
    }, 0));
  };
  let grid = null;
  const page = new MutationObserver(() => {
    const g = document.querySelector('.mapnb-grid');
    if (!g || grid) return;
    grid = g;
    page.disconnect();
    changed();  // the grid appeared
    // The clock ticks on a timer between messages: not a patch.
    const ticks = (m) => m.target.classList?.contains('mapnb-clock');
    new MutationObserver((ms) => { if (!ms.every(ticks)) changed(); }).observe(g, {subtree: true, childList: true, attributes: true,
                                                attributeFilter: ['data-state']});
  });
  const start = () => page.observe(document.documentElement, {subtree: true, childList: true});
  if (document.documentElement) start(); else document.addEventListener('DOMContentLoaded', start);
})();"""

PROBE = """() => {
  const g = document.querySelector('.mapnb-grid');
  return {state: g?.dataset.state ?? null, cells: g ? (+g.querySelector('.mapnb-cells')?.dataset.cells || g.querySelectorAll('.mapnb-cell').length) : 0};
}"""


def api(url: str, path: str) -> Any:
    try:
        return json.load(urllib.request.urlopen(f"{url}/api/{path}?token={TOKEN}", timeout=5))
    except Exception:  # not up yet; /api/kernels may even answer 500 while a kernel starts
        return None


def wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    t0 = time.monotonic()
    while not (r := pred()):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
    return r


@contextmanager
def jupyterlab(folder: Path, n: int) -> Iterator[str]:
    """A JupyterLab on 127.0.0.1 serving ``folder``, stopped (kernels too) on exit."""
    import nbformat
    import psutil

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells(n)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "big.ipynb")
    settings = folder / ".settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder / "server.log", "w")  # noqa: SIM115
    argv = [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={folder}",
            f"--LabApp.user_settings_dir={folder}/.settings", f"--LabApp.workspaces_dir={folder}/.ws"]  # fmt: skip
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(folder / ".rt"), MAPNB_WIDGET="anywidget")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: api(url, "status") is not None, 120, "the Jupyter server")
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


def one_run(n: int) -> dict[str, Any]:
    """One fresh server and browser: run the notebook, return what the page recorded."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mapnb-grid-render-") as tmp, jupyterlab(Path(tmp), n) as url:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                Path(tmp) / ".profile", headless=True, args=ARGS, executable_path=CHROMIUM,
                viewport={"width": 1280, "height": 1000},
            )  # fmt: skip
            try:
                page = ctx.pages[0]
                page.add_init_script(HOOK)
                page.goto(f"{url}/lab/tree/big.ipynb?token={TOKEN}")
                wait(lambda: [k for k in api(url, "kernels") or [] if k["execution_state"] == "idle"
                              and k["connections"] > 0], 120, "an idle kernel")  # fmt: skip
                page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
                time.sleep(2.0)  # JupyterLab's own start-up work settles: not the grid's
                page.evaluate("() => { window.__bench.t0 = performance.now(); }")
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
                page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
                t0 = time.monotonic()
                end = wait(
                    lambda: (s := page.evaluate(PROBE))["state"] == "succeeded" and s, 600, "the run's end"
                )
                took = time.monotonic() - t0
                time.sleep(1.0)  # the last patch's frame
                rec = page.evaluate("() => window.__bench")
            finally:
                ctx.close()
    return {"cells": end["cells"], "seconds": took, **summarise(rec)}


def summarise(rec: dict[str, Any]) -> dict[str, Any]:
    """Per patch (the last message before a change), its render time: to the frame after its
    last change. The first (the grid appears) and the run's end (the final state: its frame
    also draws the cell's outputs, the DataFrame and the saved picture, which JupyterLab
    renders as they arrive right after it) are reported apart from the patches."""
    by_msg: dict[float, float] = {}
    ended: set[float] = set()
    for r in rec["renders"]:
        if r["msg"] is not None:
            by_msg[r["msg"]] = max(by_msg.get(r["msg"], 0.0), r["painted"] - r["msg"])
            if r["state"] not in (None, "running"):
                ended.add(r["msg"])
    keys = sorted(by_msg)
    first = by_msg[keys[0]] if keys else None
    patches = [by_msg[k] for k in keys[1:] if k not in ended]
    end = max((by_msg[k] for k in ended), default=None)
    q = statistics.quantiles(patches, n=20, method="inclusive") if len(patches) >= 2 else patches
    long = [d for start, d in rec["long"] if start >= rec.get("t0", 0.0)]  # from Run All on
    return {
        "first_ms": first,
        "end_ms": end,
        "patches": len(patches),
        "median_ms": statistics.median(patches) if patches else None,
        "p95_ms": q[-1] if q else None,
        "max_ms": max(patches) if patches else None,
        "long_tasks": len(long),
        "longest_task_ms": max(long, default=0.0),
        "messages": len(rec["msgs"]),
        "longtask_api": rec.get("noLongtask") is None,
    }


def table(runs: list[dict[str, Any]], n: int) -> str:
    def med(k: str) -> float:
        values = [r[k] for r in runs if r.get(k) is not None]
        return statistics.median(values) if values else float("nan")

    rows = [
        ("status patches measured", f"{med('patches'):.0f}"),
        ("render time of a patch, median", f"{med('median_ms'):.1f} ms"),
        ("render time of a patch, 95th percentile", f"{med('p95_ms'):.1f} ms"),
        (f"render time of a patch, slowest (target < {TARGET_MS:.0f} ms)", f"{med('max_ms'):.1f} ms"),
        ("the grid's first paint (from the message that made it)", f"{med('first_ms'):.1f} ms"),
        ("the run's end: the final state, in one frame with the cell's outputs", f"{med('end_ms'):.1f} ms"),
        ("main-thread long tasks (> 50 ms) during the run", f"{med('long_tasks'):.0f}"),
        ("longest main-thread task", f"{med('longest_task_ms'):.1f} ms"),
        ("the run, Run All to the grid's end", f"{med('seconds'):.1f} s"),
    ]
    lines = [
        f"The grid at {n:,} items in Chromium (JupyterLab, headless `/usr/bin/chromium`), median of "
        f"{len(runs)}: from a patch's websocket message to the next frame painted after the grid changed:",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=_common.repeat(3))
    ap.add_argument("--items", type=int, default=N, help="items in the run (a check of the method: fewer)")
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    args = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"no {CHROMIUM}: `make chromium` installs it (as root)")
    runs = []
    for k in range(args.repeat):
        print(f"- run {k + 1} of {args.repeat}", flush=True)
        runs.append(one_run(args.items))
        print(f"  {runs[-1]}", flush=True)
    text = table(runs, args.items)
    print(text)
    _common.write(
        "grid_render", {"grid_render": text}, {"runs": runs, "n": args.items, "sleep": SLEEP}, args.out
    )


if __name__ == "__main__":
    main()
