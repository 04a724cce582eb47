"""A crashing item on Dask fails alone (issue 10 item 16), on a real distributed.LocalCluster
(2 worker processes under nannies, 1 thread each, as in test_dask.py).

Dask, left to itself, runs a task again on another worker when its worker dies (up to
``allowed-failures`` times): a segfaulting item then kills the next worker too, and items
that shared the dead worker run twice. mapnb owns retries, so neither may happen.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from .conftest import HAVE_DASK

if not HAVE_DASK:
    pytest.skip("distributed is not installed (pip install 'mapnb[dask]')", allow_module_level=True)

from mapnb import Status, map_task

from .test_contract import wait_until


def crash_on_two(x: int, marker_dir: str, how: str, crash_after: float, others_take: float) -> int:
    """Leaves one file per attempt; item 2 kills its worker process after a while."""
    Path(marker_dir, f"{x}-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
    if x == 2:
        time.sleep(crash_after)
        if how == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(3)
    time.sleep(others_take)
    return x


def attempts_of(marker_dir: Path, x: int) -> int:
    return sum(1 for p in marker_dir.iterdir() if p.name.split("-")[0] == str(x))


@pytest.mark.parametrize("how", ["segfault", "exit"])
@pytest.mark.parametrize(
    "crash_after, others_take",
    # Neighbours still running when it crashes; or done, the other worker idle (where
    # Dask's own rerun would start at once and crash that worker too).
    [(0.2, 0.5), (1.5, 0.05)],
    ids=["busy-neighbours", "idle-neighbours"],
)
def test_a_crashing_item_fails_alone_and_runs_once(dask_client, tmp_path, how, crash_after, others_take):
    n = 6
    run = map_task(crash_on_two, backend="dask", retries=0, min_success_ratio=0, progress=False).submit(
        x=list(range(n)), marker_dir=[str(tmp_path)] * n, how=[how] * n,
        crash_after=[crash_after] * n, others_take=[others_take] * n,
    )  # fmt: skip
    df = run.result(timeout=180)
    statuses = run.statuses
    assert statuses[2] == Status.FAILED and run.errors[2].kind == "worker-died", run.errors
    others = [i for i in range(n) if i != 2]
    assert [statuses[i] for i in others] == [Status.SUCCEEDED] * (n - 1), (statuses, run.errors)
    assert [df.loc[i, "output"] for i in others] == others
    # Dask ran nothing again on its own: the crasher once (retries=0), its neighbours once each.
    assert attempts_of(tmp_path, 2) == 1
    assert [attempts_of(tmp_path, i) for i in others] == [1] * (n - 1)
    wait_until(lambda: len(dask_client.nthreads()) == 2, timeout=90, what="the nanny to restart the worker")


def _exit_worker() -> None:
    os._exit(3)


class KillsTheWorkerAsItLoads:
    """A task function whose unpickling ends the worker process: no task of it ever starts."""

    def __reduce__(self):
        return (_exit_worker, ())

    def __call__(self, x: int) -> int:
        return x


@pytest.mark.timeout(300)
def test_tasks_that_die_before_they_start_are_blamed_after_a_few():
    # A task lost before it started is re-queued without counting an attempt; one that can
    # never start must still end, as a failure, not loop forever. It kills a worker four
    # times, so it gets a cluster of its own: nannies restarting workers that die as they
    # load must not leave the cluster the other tests share without workers.
    from distributed import Client, LocalCluster

    from mapnb.backends.dask import DaskBackend

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                     silence_logs=40) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        run = map_task(KillsTheWorkerAsItLoads(), backend=DaskBackend(client), progress=False).submit(x=[1])
        ended = run.wait(timeout=240)
        if not ended:
            run.cancel()
        assert ended, f"the run did not end; workers now: {client.nthreads()}"
    assert run.statuses == [Status.FAILED] and run.attempts == [1]
    err = run.errors[0]
    assert err.kind == "worker-died" and "before the task started (4 times in this run)" in err.message
