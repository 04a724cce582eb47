from __future__ import annotations

import importlib.util
import os

import pytest

HAVE_DASK = importlib.util.find_spec("distributed") is not None
BACKENDS = ["sequential", "threads", "local"] + (["dask"] if HAVE_DASK else [])


@pytest.fixture(autouse=True, scope="session")
def _private_mapnb_dirs(tmp_path_factory):
    """Journals and caches of the test runs go to a scratch folder, not the user's."""
    root = tmp_path_factory.mktemp("mapnb-home")
    os.environ["MAPNB_HOME"] = str(root / "home")
    os.environ["MAPNB_CACHE_DIR"] = str(root / "cache")


@pytest.fixture(scope="session")
def _dask_cluster():
    """A real cluster: a LocalCluster of 2 worker processes with 1 thread each."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


@pytest.fixture
def dask_client(_dask_cluster):
    """The shared cluster's client, with its 2 workers back: a test that kills workers
    must not leave the tests after it a cluster whose nannies gave up."""
    cluster, client = _dask_cluster
    if len(client.nthreads()) < 2:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=90)
    return client


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend: the contract tests must hold on each."""
    if request.param == "dask":
        request.getfixturevalue("dask_client")  # the current client, which backend="dask" uses
    return request.param
