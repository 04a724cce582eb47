"""Flyte 2 tasks for tests/test_flyte2.py: importable by mapnb's worker processes."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from pathlib import Path

import flyte

env = flyte.TaskEnvironment(name="mapnb_tests")


@env.task
def square(x: int) -> int:
    return x * x


@env.task
async def add(x: int, y: int) -> int:
    await asyncio.sleep(0.01)
    return x + y


@env.task
def fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError(f"two is not allowed: {x}")
    return x * 10


@env.task
async def async_fails_on_two(x: int) -> int:
    await asyncio.sleep(0)
    if x == 2:
        raise ValueError(f"two is not allowed: {x}")
    return x * 10


@env.task
def stamped(x: int, pause: float = 1.0) -> tuple[int, float, float]:
    """The item's own start and end times, to show items overlap."""
    start = time.time()
    time.sleep(pause)
    return x, start, time.time()


@env.task
async def async_stamped(x: int, pause: float = 1.0) -> tuple[int, float, float]:
    start = time.time()
    await asyncio.sleep(pause)
    return x, start, time.time()


@env.task(retries=2)
def fails_first_attempt(x: int, marks: str) -> int:
    """Fails on each input's first attempt (a marker file says it ran before)."""
    mark = Path(marks) / f"{x}.seen"
    if not mark.exists():
        mark.write_text("")
        raise RuntimeError(f"first attempt fails: {x}")
    return x


@env.task(retries=flyte.RetryStrategy(count=1))
async def async_fails_first_attempt(x: int, marks: str) -> int:
    mark = Path(marks) / f"{x}.seen"
    if not mark.exists():
        mark.write_text("")
        raise RuntimeError(f"first attempt fails: {x}")
    return x


@env.task(timeout=datetime.timedelta(seconds=2))
def hangs(x: int) -> int:
    if x:
        time.sleep(60)
    return x


@env.task(timeout=flyte.Timeout(max_runtime=2))
async def async_hangs(x: int) -> int:
    if x:
        await asyncio.sleep(60)
    return x


@env.task(cache="auto")
def counted(x: int, log: str) -> int:
    """Appends x to the file ``log`` each time it really runs."""
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x * 3


@env.task(
    cache=flyte.Cache(behavior="override", version_override="v1", ignored_inputs=("log",), serialize=True)
)
async def counted_v1(x: int, log: str) -> int:
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x * 3


cached_env = flyte.TaskEnvironment(
    name="mapnb_tests_cached", cache="auto", resources=flyte.Resources(cpu=(1, 2), memory="100Mi")
)


@cached_env.task
def from_cached_env(x: int) -> int:
    return x


@env.task(short_name="sq")
def short(x: int) -> int:
    return x


@env.task
def pid(x: int) -> int:
    return os.getpid()


@env.task
def mul(x: int, y: int) -> int:
    return x * y


@env.task
def rendezvous(x: int, folder: str, n: int) -> tuple[float, float]:
    """Arrives, then waits for all ``n`` items to have arrived: it finishes only if the
    items run at the same time (sequential items would each wait in vain and fail)."""
    start = time.time()
    Path(folder, str(x)).write_text("")
    deadline = time.monotonic() + 90
    while len(list(Path(folder).iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"item {x}: the other items never arrived")
        time.sleep(0.02)
    return start, time.time()


@env.task
async def async_rendezvous(x: int, folder: str, n: int) -> tuple[float, float]:
    start = time.time()
    Path(folder, str(x)).write_text("")
    deadline = time.monotonic() + 90
    while len(list(Path(folder).iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"item {x}: the other items never arrived")
        await asyncio.sleep(0.02)
    return start, time.time()


@env.task
def slow(x: int) -> int:
    time.sleep(60)
    return x


# -- Flyte 2's own local flyte.map, to compare with: parents run by flyte.run ------------


def _shown(r: object) -> str:
    if isinstance(r, BaseException):
        return f"{type(r).__name__}({getattr(r, 'code', '')!s}: {r})"
    return repr(r)


@env.task
def parent_map(n: int) -> list[str]:
    import functools

    out = [_shown(r) for r in flyte.map(square, range(n))]
    out += [_shown(r) for r in flyte.map(fails_on_two, range(4))]
    out += [_shown(r) for r in flyte.map(mul, range(5), [10, 20, 30])]  # zip: the shortest
    out += [_shown(r) for r in flyte.map(functools.partial(mul, y=7), [1, 2, 3])]
    out += [_shown(r) for r in flyte.map(mul, [1, 2], iter([5, 6, 7]), concurrency=1)]
    return out


@env.task
def parent_map_raising() -> list[str]:
    seen = []
    try:
        for r in flyte.map(fails_on_two, range(4), return_exceptions=False):
            seen.append(_shown(r))
    except Exception as e:
        seen.append("raised " + _shown(e))
    return seen


@env.task
async def parent_map_aio(n: int) -> list[str]:
    out = [_shown(r) async for r in flyte.map.aio(add, range(n), [100] * n)]
    out += [_shown(r) async for r in flyte.map.aio(async_fails_on_two, range(4))]
    return out


def flyte_local_results() -> None:
    """Print, as JSON, what Flyte 2's own local run gives for the parents above."""
    import json

    flyte.init()
    results = {
        "map": flyte.run(parent_map, n=6).outputs()[0],
        "raising": flyte.run(parent_map_raising).outputs()[0],
        "aio": flyte.run(parent_map_aio, n=5).outputs()[0],
    }
    print("RESULTS " + json.dumps(results))


@env.task
def first_quick(x: int) -> int:
    if x:
        time.sleep(60)
    return x


@env.task(retries=3)
def gives_up(x: int) -> int:
    raise flyte.errors.NonRecoverableError(f"no point retrying {x}")


@env.task
def where_am_i(x: int) -> str:
    import mapnb

    c = mapnb.current_context()
    return f"{c.index} {c.attempt} {bool(flyte.ctx())}"
