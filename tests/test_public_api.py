"""The public surface is pinned; importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import mapnb


def test_public_names_are_pinned():
    assert mapnb.__all__ == [
        "Backend",
        "BackendError",
        "Checkpoint",
        "InvalidMapError",
        "ItemError",
        "MapRun",
        "MapTask",
        "MapTaskError",
        "MapnbError",
        "RemoteError",
        "Resources",
        "RunInterrupted",
        "Status",
        "TaskContext",
        "TaskFunction",
        "current_context",
        "get_backend",
        "last_run",
        "map_task",
        "recover",
        "register_backend",
        "task",
    ]
    assert mapnb.__all__ == sorted(mapnb.__all__)
    for name in mapnb.__all__:
        assert getattr(mapnb, name).__doc__, f"{name} needs a docstring"


def test_import_is_light():
    code = (
        "import sys, mapnb; heavy = [m for m in ('pandas', 'IPython', 'dask', 'distributed', "
        "'ipywidgets', 'numpy', 'tqdm', 'cloudpickle') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_map_run_repr_and_len():
    run = mapnb.map_task(lambda x: x, backend="sequential").submit(x=[1, 2])
    run.wait(30)
    assert len(run) == 2
    assert repr(run).startswith(f"<MapRun {run.id} <lambda> succeeded: succeeded 2")
    assert mapnb.last_run() is run
