"""Per-subtask resources: requests bound concurrency, limits.mem is enforced per item."""

from __future__ import annotations

import pytest

import mapnb
from mapnb import InvalidMapError, Resources, Status, map_task, task
from mapnb.backends.base import usable_cpus
from mapnb.resources import parse_memory

from . import tasks
from .conftest import HAVE_DASK


def test_memory_quantities():
    assert parse_memory("4Gi") == 4 * 2**30 and parse_memory("512Mi") == 512 * 2**20
    assert (
        parse_memory("1.5G") == 1_500_000_000 and parse_memory(2048) == 2048 and parse_memory("2e3") == 2000
    )
    for bad in ("lots", "-1Gi", "4GB", True, 0):
        with pytest.raises(InvalidMapError, match="mem must be a size"):
            Resources(mem=bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cpu=0), "cpu must be a number of CPUs > 0"),
        (dict(cpu="two"), "cpu must be"),
        (dict(gpu=1.5), "gpu must be a whole number"),
    ],
)
def test_bad_resources_say_what_is_wrong(kwargs, message):
    with pytest.raises(InvalidMapError, match=message):
        Resources(**kwargs)


def test_requests_must_be_resources():
    with pytest.raises(InvalidMapError, match="requests must be mapnb.Resources"):
        map_task(tasks.double).with_overrides(requests={"cpu": 2})


def test_a_cpu_request_bounds_how_many_items_run_at_once(tmp_path):
    cpus = usable_cpus()
    mt = map_task(tasks.where_and_when, concurrency=8).with_overrides(requests=Resources(cpu=cpus))
    df = mt(x=[0.3, 0.3, 0.3])
    spans = sorted(zip(df["t0"], df["t1"]))
    assert all(b0 >= a1 - 0.02 for (_, a1), (b0, _) in zip(spans, spans[1:]))  # one after another
    with pytest.raises(
        InvalidMapError, match=f"requests cpu={cpus + 1}, but this machine has {cpus} usable CPUs"
    ):
        map_task(tasks.double).with_overrides(requests=Resources(cpu=cpus + 1))(x=[1])


def test_task_requests_are_the_defaults_and_overrides_win():
    t = task(tasks.double, requests=Resources(cpu=1), limits=Resources(mem="1Gi"))
    mt = map_task(t)
    assert mt.requests == Resources(cpu=1) and mt.limits == Resources(mem="1Gi")
    assert mt.with_overrides(requests=Resources(cpu=2)).requests == Resources(cpu=2)
    assert mt.with_overrides(requests=Resources(cpu=2)).limits == Resources(mem="1Gi")


def test_an_item_over_its_memory_limit_fails_alone():
    mt = map_task(tasks.hog, min_success_ratio=0, concurrency=2).with_overrides(limits=Resources(mem="300Mi"))
    df = mt(mib=[20, 600, 20], hold=[0.3, 2.0, 0.3])
    run = mapnb.last_run()
    assert run.statuses == [Status.SUCCEEDED, Status.FAILED, Status.SUCCEEDED]
    err = run.errors[1]
    assert err.type == "MemoryLimitExceeded" and "exceeded its limit mem=300Mi" in err.message
    assert df["output"].tolist() == [20, None, 20]


def test_gpus_are_handed_out_one_set_per_running_item(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # as if this machine had two GPUs
    backend = mapnb.backends.local.LocalBackend()  # a fresh one finds the GPUs
    mt = map_task(tasks.gpus_seen, backend=backend, concurrency=4).with_overrides(requests=Resources(gpu=1))
    df = mt(x=[0.3] * 4)
    seen = df["output"].tolist()
    assert sorted(set(seen)) == ["0", "1"]  # never both items on one GPU, never more than two at once


def test_without_gpus_a_gpu_request_is_passed_through(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    backend = mapnb.backends.local.LocalBackend()
    df = map_task(tasks.gpus_seen, backend=backend).with_overrides(requests=Resources(gpu=1))(x=[0])
    assert df["status"].tolist() == ["succeeded"]


@pytest.mark.skipif(not HAVE_DASK, reason="distributed is not installed")
def test_dask_requests_need_workers_that_declare_them(dask_client):
    with pytest.raises(
        mapnb.BackendError, match='no worker of this Dask cluster declares GPU=1.*--resources "GPU=1"'
    ):
        map_task(tasks.double, backend="dask").with_overrides(requests=Resources(gpu=1))(x=[1])


@pytest.mark.skipif(not HAVE_DASK, reason="distributed is not installed")
def test_dask_requests_map_to_worker_resources():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0",
                      resources={"CPU": 2}) as cluster, Client(cluster, set_as_default=False) as client:  # fmt: skip
        backend = mapnb.backends.dask.DaskBackend(client)
        mt = map_task(tasks.where_and_when, backend=backend).with_overrides(requests=Resources(cpu=2))
        df = mt(x=[0.3, 0.3])
        (a0, a1), (b0, b1) = sorted(zip(df["t0"], df["t1"]))
        assert b0 >= a1 - 0.02  # CPU=2 each on a worker with CPU=2: one at a time


def test_kubernetes_quantities_as_flytekit_writes_them():
    """cpu="500m" (millicores), gpu="1" and ephemeral_storage, as in flytekit's Resources."""
    r = Resources(cpu="500m", mem="1Gi", gpu="1", ephemeral_storage="10Gi")
    assert r.cpus == 0.5 and r.gpu == 1 and isinstance(r.gpu, int) and r.mem_bytes == 2**30
    assert Resources(cpu="1500m").cpus == 1.5 and Resources(cpu="0.25").cpus == 0.25
    for bad in ("0m", "m", "5mm", True):
        with pytest.raises(InvalidMapError, match="cpu must be"):
            Resources(cpu=bad)
    with pytest.raises(InvalidMapError, match="ephemeral_storage must be a size"):
        Resources(ephemeral_storage="lots")
