"""Task functions for tests/test_sweep.py, importable by worker processes."""

from __future__ import annotations

import os
import time

import mapnb


def stamp(x: int) -> str:
    """A new value at every call: which call produced an output (or whether the cache did)."""
    return f"{x}:{os.getpid()}:{time.time_ns()}"


def gate(x: int, path: str) -> int:
    """Item 0 returns at once; the others wait (up to 60 s) until ``path`` exists."""
    if x:
        t0 = time.monotonic()
        while not os.path.exists(path) and time.monotonic() - t0 < 60:
            time.sleep(0.02)
    return x


def loss(lr: float, depth: int, seed: int = 0, scale: float = 1.0) -> dict[str, float]:
    """A small synthetic objective that reports its curve."""
    value = scale * ((lr - 0.1) ** 2 + 0.01 * depth) + 0.001 * seed
    for step in range(3):
        mapnb.report(step, loss=value + 1.0 / (step + 1))
    return {"loss": value}
