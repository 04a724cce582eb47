"""Waiting for a blocking run, with a one-line progress bar on a terminal."""

from __future__ import annotations

import shutil
import sys
import time

from ..events import FINAL_STATUSES
from ..run import MapRun
from . import busy
from .widget import grid_wanted


def _wanted(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


GRID_DELAY = 0.3  # a run done sooner shows no grid: it would only flash


def show_progress(run: MapRun, progress: bool | None, interval: float = 0.1) -> None:
    """Block until ``run`` is done, showing the live grid in a notebook or a tqdm bar on
    a terminal's stderr, when wanted.

    Short waits keep the calling thread responsive to KeyboardInterrupt.
    """
    if progress is not False and grid_wanted():
        deadline = time.monotonic() + GRID_DELAY
        while not run.wait(min(interval, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                grid = run._live_grid()
                run.show()
                # The grid's buttons and clicks answer while this cell runs (mapnb.busy).
                busy.wait(run.wait, interval, polled=grid is not None and not grid.served)
        return
    if not _wanted(progress):
        while not run.wait(interval):
            pass
        return
    from tqdm import tqdm

    final = [s.value for s in FINAL_STATUSES]
    # A pseudo-terminal may report a 0x0 size, and tqdm then draws nothing at all;
    # shutil falls back to 80x24 there.
    cols, rows = shutil.get_terminal_size()
    with tqdm(total=len(run), desc=run.name, unit="item", file=sys.stderr, ncols=cols, nrows=rows) as bar:
        while True:
            done = run.wait(interval)
            c = run.counts
            bar.total = len(run)  # a sweep may grow (run.extend) while it runs
            bar.n = sum(c[k] for k in final)
            bar.set_postfix({k: c[k] for k in ("running", "pruned", "failed", "retrying") if c[k]}, refresh=False)
            bar.refresh()
            if done:
                return
