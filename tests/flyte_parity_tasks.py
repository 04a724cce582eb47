"""flytekit tasks of flytekit's own map-task tests and flytesnacks' examples, as written
there, for tests/test_flytekit_parity.py (a module the worker processes import by name)."""

import pathlib
import typing

import flytekit
import pandas as pd
from flytekit import LaunchPlan, current_context, dynamic, eager, task, workflow
from flytekit.core.checkpointer import SyncCheckpoint
from flytekit.exceptions.user import FlyteRecoverableException
from flytekit.extras.accelerators import GPUAccelerator

# --- test_array_node_map_task.py / test_map_task.py ------------------------------------


@task
def say_hello(name: str) -> str:
    return f"hello {name}!"


@task
def create_input_list() -> typing.List[str]:  # noqa: UP006 (as written there)
    return ["earth", "mars"]


@task
def say_hello_any(name: typing.Any) -> str:
    return f"hello {name}!"


@task
def many_inputs(a: int, b: str, c: float) -> str:
    return f"{a} - {b} - {c}"


@task
def many_outputs(a: int) -> (int, str):  # type: ignore[syntax]  # flytekit's own spelling
    return a, f"{a}"


@task()
def task1(a: int, b: float, c: str) -> str:
    return f"{a} - {b} - {c}"


@task()
def task2(b: float, c: str, a: int) -> str:
    return f"{a} - {b} - {c}"


@task()
def task3(c: str, a: int, b: float) -> str:
    return f"{a} - {b} - {c}"


@task()
def task4(c: list[str], a: list[int], b: list[float]) -> list[str]:
    return [f"{a[i]} - {b[i]} - {c[i]}" for i in range(len(a))]


@task
def some_task1(inputs: int) -> int:
    if inputs == 2:
        raise ValueError("Unexpected inputs: 2")
    return inputs


@task
def some_task_ok(inputs: int) -> int:
    """test_map_task_min_success_ratio's some_task1 (it never fails)."""
    return inputs


@task
def my_mappable_task(a: int) -> typing.Optional[str]:  # noqa: UP045 (as written there)
    return str(a)


@task(interruptible=True)
def interruptible_t1(a: int) -> int:
    return a + 1


@task
def optional_t1(a: int) -> typing.Optional[int]:  # noqa: UP045
    return a + 1


@task
def plain_t1(a: int) -> int:
    return a + 1


@task(accelerator=GPUAccelerator("test_gpu"))
def gpu_t1(a: int) -> int:
    return a + 1


@task(shared_memory="2Gi")
def shm_t1(a: int) -> int:
    return a + 1


@task
def no_io_task():  # noqa: ANN201 (as written there)
    ...


@dynamic
def test_dynamic():  # noqa: ANN201
    ...


@eager
async def test_eager():  # noqa: ANN201
    ...


@workflow
def test_wf():  # noqa: ANN201
    ...


@task
def t1_legacy(a: int) -> typing.Optional[str]:  # noqa: UP045
    """test_map_task.py's t1."""
    b = a + 2
    return str(b)


@task(cache=True, cache_version="1")
def t2_legacy(a: int) -> str:
    b = a + 2
    return str(b)


@workflow
def wf1(a: int):  # noqa: ANN201
    print(f"{a}")


lp_wf1 = LaunchPlan.get_or_create(wf1, name="parity_test_lp")

@task()
def task_1(a: int, b: int, c: str) -> str:
    """test_array_node_map_task.py's task_1 (test_bound_inputs_serialization)."""
    return f"{a} - {b} - {c}"


# --- test_partials.py -------------------------------------------------------------------


@task
def partials_t1(a: int, b: str, c: float) -> int:
    return a + len(b) + int(c)


@task
def partials_t3(a: int, b: str, c: float) -> str:
    return str(a) + b + str(c)


@task
def list_partial_t(a: int, b: typing.List[str]) -> str:  # noqa: UP006
    return str(a) + str(b)


@task
def everything_t3(a: int, b: str, c: typing.List[float], d: typing.List[float], a2: pd.DataFrame) -> str:  # noqa: UP006
    return str(a) + f"pdsize{len(a2)}" + b + str(c) + "&&" + str(d)


# --- test_array_node.py -----------------------------------------------------------------


@task
def multiply(val: int, val1: typing.Union[int, str], val2: int) -> int:  # noqa: UP007
    if type(val1) is str:
        return val * val2
    return val * int(val1) * val2


@task
def ex_task(val: int) -> int:
    if val == 1:
        raise Exception("Test")
    return val


@workflow
def ex_wf(val: int) -> int:
    return ex_task(val=val)


ex_lp = LaunchPlan.get_or_create(ex_wf, name="parity_ex_lp")

# --- test_checkpoint.py: each of flytekit's SyncCheckpoint cases, inside a subtask ------
# The first attempt (no previous checkpoint) stores something and fails; the second reads
# it through mapnb's retry, as SyncCheckpoint(checkpoint_dest, checkpoint_src) does.


@task(retries=1)
def cp_write(x: int) -> str:
    cp = current_context().checkpoint
    if not cp.prev_exists():
        first = (cp.read(), cp.restore())  # flytekit: both None without a previous checkpoint
        cp.write(b"bytes")
        assert (pathlib.Path(cp._checkpoint_dest) / SyncCheckpoint.TMP_DST_PATH).exists()  # noqa: SLF001
        raise FlyteRecoverableException(f"first attempt saw {first}")
    return cp.read().decode()


@task(retries=1)
def cp_save_file(x: int) -> str:
    cp = current_context().checkpoint
    if not cp.prev_exists():
        inp = pathlib.Path(current_context().working_directory) / "test"
        inp.write_bytes(b"blah")
        with inp.open("rb") as f:
            cp.save(f)
        try:
            cp.save(SyncCheckpoint)  # unsupported object
        except ValueError:
            raise FlyteRecoverableException("saved; save(SyncCheckpoint) raised ValueError") from None
        raise RuntimeError("save(SyncCheckpoint) did not raise ValueError")
    return cp.read().decode()


@task(retries=1)
def cp_save_filepath(x: int) -> str:
    cp = current_context().checkpoint
    if not cp.prev_exists():
        src = pathlib.Path(current_context().working_directory) / "src"
        src.mkdir(parents=True, exist_ok=True)
        (src / "test").write_bytes(b"blah")
        cp.save(src / "test")
        assert (pathlib.Path(cp._checkpoint_dest) / "test").exists()  # noqa: SLF001
        raise FlyteRecoverableException("saved")
    restored = cp.restore()
    return ",".join(sorted(p.name for p in pathlib.Path(restored).iterdir()))


@task(retries=1)
def cp_restore(x: int) -> str:
    cp = current_context().checkpoint
    if not cp.prev_exists():
        cp.write(b"prev-bytes")
        raise FlyteRecoverableException("saved")
    user_dest = pathlib.Path(current_context().working_directory) / "user_dest"
    try:
        cp.restore(user_dest)
    except ValueError:
        pass
    else:
        return "restore() into a missing folder did not raise ValueError"
    user_dest.mkdir()
    first = cp.restore(user_dest)
    again = cp.restore("other_path")
    return f"{first == user_dest} {again == user_dest} {(user_dest / 'prev').exists() or any(user_dest.iterdir())}"


@task(retries=1)
def cp_restore_corrupt(x: int) -> str:
    from flytekit.exceptions.user import FlyteDataNotFoundException

    cp = current_context().checkpoint
    if not cp.prev_exists():
        cp.write(b"prev-bytes")
        raise FlyteRecoverableException("saved")
    # Simulate a failed upload of the checkpoint (e.g. preemption): the previous one is gone.
    src = pathlib.Path(cp._checkpoint_src)  # noqa: SLF001
    for p in src.iterdir():
        p.unlink()
    src.rmdir()
    user_dest = pathlib.Path(current_context().working_directory) / "user_dest"
    user_dest.mkdir()
    seen = []
    for _ in range(2):
        try:
            cp.restore(user_dest)
        except FlyteDataNotFoundException:
            seen.append("FlyteDataNotFoundException")
    return " ".join(seen)


@task(retries=1)
def cp_restore_default_path(x: int) -> str:
    cp = current_context().checkpoint
    if not cp.prev_exists():
        cp.write(b"prev-bytes")
        raise FlyteRecoverableException("saved")
    data = cp.read()
    return f"{data.decode()} {cp._prev_download_path is not None} {cp.restore() == cp._prev_download_path}"  # noqa: SLF001


@task(retries=1)
def cp_read_empty_dir(x: int) -> str:
    cp = current_context().checkpoint
    if current_context().attempt == 1:  # (an empty checkpoint leaves no previous one to test)
        empty = pathlib.Path(current_context().working_directory) / "empty"
        empty.mkdir(parents=True)
        cp.save(empty)
        raise FlyteRecoverableException("saved an empty folder")
    return repr(cp.read())


@task(retries=1)
def cp_read_multiple_files(x: int) -> str:
    cp = current_context().checkpoint
    if not cp.prev_exists():
        folder = pathlib.Path(current_context().working_directory) / "src"
        folder.mkdir(parents=True)
        (folder / "prev").write_bytes(b"prev-bytes")
        (folder / "prev2").write_bytes(b"prev-bytes")
        cp.save(folder)
        raise FlyteRecoverableException("saved two files")
    try:
        cp.read()
    except ValueError as e:
        return str(e)
    return "read() did not refuse"


@flytekit.task
def cp_t1(n: int) -> int:
    ctx = flytekit.current_context()
    cp = ctx.checkpoint
    cp.write(bytes(n + 1))
    return n + 1


# --- flytesnacks: examples/advanced_composition/advanced_composition/map_task.py ---------

threshold = 11


@task
def detect_anomalies(data_point: int) -> bool:
    return data_point > threshold


@task
def upperhalf(a: int) -> int:
    return a / 2 + 1  # type: ignore[return-value]  # as written there (flytekit refuses the float)


@task
def suboptimal_mappable_task(a: int) -> str:
    inc = upperhalf(a=a)
    stringified = str(inc)
    return stringified


@task
def multi_input_task(quantity: int, price: float, shipping: float) -> float:
    return quantity * price * shipping


@task
def get_price() -> float:
    return 7.0


# --- flytesnacks: examples/advanced_composition/advanced_composition/checkpoint.py -------

RETRIES = 3


@task(retries=RETRIES)
def use_checkpoint(n_iterations: int) -> int:
    cp = current_context().checkpoint
    prev = cp.read()
    start = 0
    if prev:
        start = int(prev.decode())
    failure_interval = n_iterations // RETRIES
    index = 0
    for index in range(start, n_iterations):
        if index > start and index % failure_interval == 0:
            raise FlyteRecoverableException(f"Failed at iteration {index}, failure_interval {failure_interval}.")
        cp.write(f"{index + 1}".encode())
    return index

