"""Task functions for tests/test_report.py, importable by worker processes."""

from __future__ import annotations

import pathlib
import time

import mapnb


def _wait_for(path: pathlib.Path, count: int = 1, timeout: float = 120.0) -> None:
    """Wait (generously) until ``count`` files match ``path`` (a glob pattern's path)."""
    deadline = time.monotonic() + timeout
    while len(list(path.parent.glob(path.name))) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def report_then_wait(x: int, folder: str) -> int:
    """Report step 0, then wait for the test to have seen it (it creates ``go``)."""
    mapnb.report(0, loss=float(x), acc=0.5)
    _wait_for(pathlib.Path(folder) / "go")
    mapnb.report(1, loss=x / 2)
    return x


def tight_loop(n: int) -> int:
    for step in range(n):
        mapnb.report(step, loss=1.0 / (step + 1))
    return n


def train(quality: str, lr: float, folder: str) -> float:
    """Good items (identical curves) write a marker when done; bad ones wait for the
    three markers before reporting past step 1, so that the median is known."""
    scale = 1.0 if quality == "good" else 10.0
    for step in range(6):
        if quality == "bad" and step == 2:
            _wait_for(pathlib.Path(folder) / "done-*", count=3)
        mapnb.report(step, loss=scale / (step + 1), lr=lr)
        time.sleep(0.01)
    if quality == "good":
        (pathlib.Path(folder) / f"done-{lr}").touch()
    return scale
