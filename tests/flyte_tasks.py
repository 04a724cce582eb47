"""flytekit tasks for tests/test_flytekit.py, in a module the worker processes import by name."""

from __future__ import annotations

import datetime
import pathlib
import time
import typing

import flytekit
from flytekit import Cache, LaunchPlan, Resources, dynamic, eager, kwtypes, task, workflow
from flytekit.exceptions.user import FlyteRecoverableException
from flytekit.extras.tasks.shell import ShellTask
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile
from flytekit.types.structured import StructuredDataset


@task
def sleepy(x: int) -> str:
    """Sleeps 2 s (not 1: margin for workers that import flytekit at different speeds on a
    loaded machine); returns when it ran, as 'start end' wall-clock seconds."""
    t0 = time.time()
    time.sleep(2.0)
    return f"{t0} {time.time()}"


@task
def scale(a: int, factor: int = 1) -> int:
    return a * factor


@task
def t1(a: int, b: str) -> str:
    """flytekit's test_array_node_map_task partial example."""
    return f"{a}{b}"


@task
def some_task1(inputs: int) -> int:
    """flytekit's test_array_node_map_task min_success_ratio example."""
    if inputs == 2:
        raise ValueError("Unexpected inputs: 2")
    return inputs


@task(retries=3)
def use_checkpoint(n_iterations: int) -> int:
    """flytesnacks' checkpoint example, as written there."""
    cp = flytekit.current_context().checkpoint
    prev = cp.read()
    start = 0
    if prev:
        start = int(prev.decode())
    failure_interval = n_iterations // 3
    index = 0
    for index in range(start, n_iterations):
        if index > start and index % failure_interval == 0:
            raise FlyteRecoverableException(
                f"Failed at iteration {index}, failure_interval {failure_interval}."
            )
        cp.write(f"{index + 1}".encode())
    return index


@task(retries=1)
def two_checkpoint_files(x: int) -> str:
    """Attempt 1 saves a folder of two files; attempt 2 reads it as one (flytekit refuses)."""
    cp = flytekit.current_context().checkpoint
    if not cp.prev_exists():
        folder = pathlib.Path(flytekit.current_context().working_directory) / "state"
        folder.mkdir()
        (folder / "a").write_text("1")
        (folder / "b").write_text("2")
        cp.save(folder)
        raise FlyteRecoverableException("preempted")
    restored = cp.restore()  # no path: flytekit restores into a folder of its own
    try:
        cp.read()
    except ValueError as e:
        return f"{sorted(p.name for p in restored.iterdir())} {e}"
    return "read() did not refuse"


@task
def where_am_i(x: int) -> str:
    ctx = flytekit.current_context()
    return f"{ctx.execution_id.name} {ctx.array_index} {ctx.attempt}"


@task(retries=2)
def fails_first_attempt(x: int) -> int:
    attempt = flytekit.current_context().attempt
    if attempt == 1:
        raise RuntimeError("first attempt fails")
    return attempt


@task(timeout=datetime.timedelta(seconds=2))
def hangs(x: int) -> int:
    time.sleep(60 if x else 0)
    return x


@task(cache=Cache(version="1", ignored_inputs=("log",)))
def counted(x: int, log: str) -> int:
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x * x


@task(cache=True, cache_version="2", cache_serialize=True, cache_ignore_input_vars=("log",))
def counted_old_style(x: int, log: str) -> int:
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return -x


@task(requests=Resources(cpu="500m", mem="100Mi"), limits=Resources(mem="1Gi", gpu="0"))
def modest(x: int) -> int:
    return x


@task
def make_file(x: int) -> FlyteFile:
    p = pathlib.Path(flytekit.current_context().working_directory) / f"f{x}.txt"
    p.write_text(f"content {x}")
    return FlyteFile(str(p))


@task
def make_dir(x: int) -> FlyteDirectory:
    d = pathlib.Path(flytekit.current_context().working_directory) / f"d{x}"
    d.mkdir()
    (d / "part").write_text(str(x))
    return FlyteDirectory(str(d))


@task
def make_frame(n: int) -> StructuredDataset:
    import pandas as pd

    return StructuredDataset(dataframe=pd.DataFrame({"n": [n, n + 1]}))


@task
def two_outputs(x: int) -> typing.Tuple[int, str]:  # noqa: UP006 (flytekit's documented form)
    return x, str(x)


@dynamic
def dyn(x: int) -> int:
    return scale(a=x)


@eager
async def eager_one(x: int) -> int:
    return x


@workflow
def wf(x: int) -> int:
    return scale(a=x)


wf_lp = LaunchPlan.get_or_create(wf, name="tests_flyte_tasks_wf_lp")


@task
def sigint_ignored(x: int) -> bool:
    import signal

    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


@task(retries=1)
def saves_a_file(x: int) -> str:
    """Attempt 1 saves a file and fails; attempt 2 reads it back with read()."""
    cp = flytekit.current_context().checkpoint
    prev = cp.read()
    if prev is None:
        path = pathlib.Path(flytekit.current_context().working_directory) / "progress.txt"
        path.write_text(f"done {x}")
        cp.save(str(path))
        raise FlyteRecoverableException("preempted")
    return prev.decode()


@task
def chained(x: int) -> int:
    try:
        return {}["missing"]
    except KeyError as e:
        raise RuntimeError("lookup failed") from e


@task
def say_hello(name: str) -> str:
    return f"hello {name}!"


@task
def many_inputs(a: int, b: str, c: float) -> str:
    return f"{a} - {b} - {c}"


shout = ShellTask(
    name="shout",
    script="test {inputs.x} -lt 3 && echo item {inputs.x}",
    inputs=kwtypes(x=int),
)


@task(resources=Resources(cpu=("500m", "1"), mem="200Mi"))
def ranged(x: int) -> int:
    return x


@task
def slow(x: int) -> int:
    time.sleep(60)
    return x


@task
def file_size(f: FlyteFile) -> int:
    with open(f) as fh:
        return len(fh.read())
