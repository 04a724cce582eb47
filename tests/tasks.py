"""Task functions for the tests, importable by worker processes."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import NamedTuple


def double(x: int) -> int:
    return 2 * x


def identity(x: object) -> object:
    return x


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


def where_and_when(x: float) -> dict:
    t0 = time.time()
    time.sleep(x)
    return {"pid": os.getpid(), "t0": t0, "t1": time.time()}


def pid_then_sleep(path: str, seconds: float) -> float:
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return seconds


def die_once(path: str) -> str:
    """The first attempt kills its own worker process (as the OOM killer would)."""
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        print("first life", flush=True)
        time.sleep(0.3)  # long enough for "started" and the line to stream out
        os.kill(os.getpid(), 9)
    print("second life")
    return "second life"


def big_output(kib: int) -> str:
    return "x" * (kib * 1024)


def counted(x: int, log_dir: str, verbose: bool = False, delay: float = 0.0) -> int:
    """Leaves one file per execution in ``log_dir``, so tests can count real runs."""
    import uuid

    time.sleep(delay)
    with open(os.path.join(log_dir, f"{x}-{uuid.uuid4().hex}"), "w"):
        pass
    if verbose:
        print("computing", x)
    return x * 10


def runs_of(log_dir: str, x: int | None = None) -> int:
    names = os.listdir(log_dir)
    return len(names) if x is None else sum(n.startswith(f"{x}-") for n in names)


def resumable(steps: int, crash: str = "raise") -> dict:
    """Counts to ``steps``, checkpointing each step; the first attempt dies at step 3."""
    import mapnb

    ctx = mapnb.current_context()
    cp = ctx.checkpoint
    start = int(cp.read() or b"0")
    for step in range(start, steps):
        cp.write(str(step + 1).encode())
        if step == 2 and ctx.attempt == 1:
            if crash == "kill":
                os.kill(os.getpid(), 9)  # the worker dies, as under the OOM killer
            elif crash == "hang":
                time.sleep(60)  # until the timeout kills it
            raise RuntimeError("first attempt fails at step 3")
    return {"resumed_from": start, "attempt": ctx.attempt, "index": ctx.index}


def hog(mib: int, hold: float = 0.0) -> int:
    """Allocates ``mib`` MiB and keeps it a while."""
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    time.sleep(hold)
    return len(block) // (1024 * 1024)


def gpus_seen(x: float) -> str:
    time.sleep(x)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def counted_after(x: int, log_dir: str, gate: str = "") -> int:
    """:func:`counted`, once the file ``gate`` exists (if one is given)."""
    if gate:
        wait_for_file(gate, limit=60.0)
    return counted(x, log_dir)


def gives_up(x: int) -> int:
    """Fails in a way that says another attempt cannot help."""
    import mapnb

    raise mapnb.NotRetried(f"{x} cannot work")


def who_am_i(x: int) -> tuple[int, int | None, int | None, bool]:
    """The item's context as it sees it: asked twice, it is one object, and its own."""
    import mapnb

    first = mapnb.current_context()
    again = mapnb.current_context()
    return x, first.index, first.attempt, first is again
