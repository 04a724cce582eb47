"""The Dask backend on a real distributed.LocalCluster (2 worker processes, 1 thread each).

The backend contract suite (test_contract.py) runs on it too; these are what only a
cluster has: connecting, workers that die, big outputs, the notebook's own functions.
"""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import HAVE_DASK

if not HAVE_DASK:
    pytest.skip("distributed is not installed (pip install 'mapnb[dask]')", allow_module_level=True)

import mapnb
from mapnb import BackendError, Status, map_task
from mapnb.backends.dask import DaskBackend

from . import tasks
from .test_contract import wait_until


@pytest.fixture
def client(dask_client):
    return dask_client


def test_items_run_on_the_workers_in_parallel(client):
    df = map_task(tasks.where_and_when, backend="dask")(x=[0.5, 0.5])
    pids = set(df["pid"])
    assert os.getpid() not in pids and len(pids) == 2  # one item on each worker
    (a0, a1), (b0, b1) = df[["t0", "t1"]].itertuples(index=False, name=None)
    assert a0 < b1 and b0 < a1  # side by side


def test_a_worker_killed_mid_item_fails_that_item_and_the_run_goes_on(client, tmp_path):
    marker = tmp_path / "pid"
    run = map_task(tasks.pid_then_sleep, backend="dask", min_success_ratio=0).submit(
        path=[str(marker), ""], seconds=[60, 0.1]
    )
    pid = int(wait_until(lambda: marker.exists() and marker.read_text(), what="the item to start"))
    os.kill(pid, signal.SIGKILL)
    df = run.result(timeout=60)
    assert run.statuses == [Status.FAILED, Status.SUCCEEDED]
    err = run.errors[0]
    assert err.kind == "worker-died" and "lost" in err.message
    assert df.loc[1, "output"] == 0.1
    wait_until(lambda: len(client.nthreads()) == 2, timeout=60, what="the nanny to restart the worker")


def test_a_lost_worker_is_retried_when_retries_allow(client, tmp_path):
    marker = tmp_path / "pid"
    run = map_task(tasks.die_once, backend="dask", retries=1).submit(path=[str(marker)])
    df = run.result(timeout=90)
    assert df.loc[0, "output"] == "second life" and run.attempts == [2]
    assert "--- attempt 2 ---" in run.logs(0)
    wait_until(lambda: len(client.nthreads()) == 2, timeout=60, what="the nanny to restart the worker")


def test_big_outputs_come_back_with_the_task(client):
    df = map_task(tasks.big_output, backend="dask")(kib=[1, 512])
    assert [len(v) for v in df["output"]] == [1024, 512 * 1024]


def test_functions_defined_in_a_notebook_run_on_the_workers(client):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell(
        "import mapnb, os\n"
        "class Scaled:\n"
        "    def __init__(self, v): self.v = v\n"
        "def scale(x):\n"
        "    print('scaling', x)\n"
        "    return Scaled(x * 10), os.getpid()\n"
        "out = mapnb.map_task(scale, backend='dask')(x=[1, 2])\n"
    ).raise_error()
    df = shell.user_ns["out"]
    assert [o[0].v for o in df["output"]] == [10, 20]
    assert os.getpid() not in {o[1] for o in df["output"]}
    assert mapnb.last_run().logs(1) == "scaling 2\n"


def test_the_magic_runs_on_dask_and_on_a_given_address(client):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mapnb")
    shell.run_cell("BASE = 100").raise_error()
    df = shell.run_cell_magic("map_task", "--backend dask x=[1, 2]", "import os\n(x + BASE, os.getpid())")
    assert [o[0] for o in df["output"]] == [101, 102]
    address = client.scheduler.address
    df = shell.run_cell_magic("map_task", f"--address {address} x=[3]", "x * 2")
    assert df["output"].tolist() == [6]
    assert DaskBackend.for_address(address).client is not client  # its own connection


def test_without_a_cluster_the_error_says_how_to_connect(monkeypatch):
    import distributed

    def no_client():
        raise ValueError("No global client found")

    monkeypatch.setattr(distributed, "get_client", no_client)
    monkeypatch.delenv("MAPNB_DASK_ADDRESS", raising=False)
    with pytest.raises(BackendError, match=r"no Dask cluster to run on: .*Client\(\).*MAPNB_DASK_ADDRESS"):
        map_task(tasks.double, backend="dask")(x=[1])


def test_mapnb_dask_address_is_used_when_there_is_no_client(client, monkeypatch):
    import distributed

    def no_client():
        raise ValueError("No global client found")

    monkeypatch.setattr(distributed, "get_client", no_client)
    monkeypatch.setenv("MAPNB_DASK_ADDRESS", client.scheduler.address)
    backend = DaskBackend()
    try:
        assert map_task(tasks.double, backend=backend)(x=[21])["output"].tolist() == [42]
    finally:
        backend.shutdown()


def test_tiny_items_are_batched_into_few_dask_tasks(client):
    client.subscribe_topic("all", lambda ev: seen_all.append(ev))  # the user's own handler
    seen_all: list = []
    backend = DaskBackend(client)
    submitted = []
    submit = backend.submit
    backend.submit = lambda task, report: (submitted.append(len(task.items)), submit(task, report))[1]
    df = map_task(tasks.double, backend=backend)(x=list(range(3000)))
    assert df["output"].tolist() == [2 * i for i in range(3000)]
    assert sum(submitted) == 3000 and len(submitted) < 300, submitted  # batches, not 3000 tasks
    client.log_event("all", {"action": "hello"})
    wait_until(lambda: any(ev[1] == {"action": "hello"} for ev in seen_all), what="the user's handler")
    client.unsubscribe_topic("all")


def test_the_dask_backend_is_named_and_documented():
    assert DaskBackend.name == "dask" and not DaskBackend.can_kill
    assert mapnb.get_backend("dask").name == "dask"
