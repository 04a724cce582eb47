"""Task functions for the tests, importable by worker processes."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import NamedTuple


def double(x: int) -> int:
    return 2 * x


def add(a: int, b: int = 100) -> int:
    return a + b


def chatty(x: int) -> int:
    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    return x


def fail_on(x: int, bad: tuple[int, ...] = (2,)) -> int:
    if x in bad:
        raise ValueError(f"bad input {x}")
    return x


def sleepy(x: float) -> float:
    time.sleep(x)
    return x


def flaky(x: int, marker_dir: str) -> int:
    """Fails on the first attempt of each item, succeeds on the second."""
    path = os.path.join(marker_dir, f"seen-{x}")
    if not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError(f"first attempt of {x} fails")
    return x


def wait_for_file(path: str, limit: float = 20.0) -> str:
    print("begin", flush=True)
    t0 = time.monotonic()
    while not os.path.exists(path) and time.monotonic() - t0 < limit:
        time.sleep(0.02)
    print("end")
    return path


class Pair(NamedTuple):
    low: int
    high: int


@dataclasses.dataclass
class Stats:
    mean: float
    n: int


def as_dict(x: int) -> dict[str, int]:
    return {"square": x * x, "cube": x**3}


def as_pair(x: int) -> Pair:
    return Pair(x - 1, x + 1)


def as_stats(x: int) -> Stats:
    return Stats(mean=x / 2, n=x)


def kind(obj: object) -> str:
    return type(obj).__name__


class SlowToLoad:
    """A callable that takes ``delay`` seconds to unpickle (like a module with heavy imports)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __reduce__(self):
        return (_load_slowly, (self.delay,))

    def __call__(self, x: int) -> int:
        return x


def _load_slowly(delay: float) -> SlowToLoad:
    time.sleep(delay)
    return SlowToLoad(delay)
