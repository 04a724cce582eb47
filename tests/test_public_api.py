"""The public surface is pinned; importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import mapnb
import mapnb.backends


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
        "MedianStopping",
        "NotRetried",
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
        "record",
        "recover",
        "register_backend",
        "report",
        "task",
    ]
    assert mapnb.__all__ == sorted(mapnb.__all__)
    for name in mapnb.__all__:
        assert getattr(mapnb, name).__doc__, f"{name} needs a docstring"


def test_import_is_light():
    code = (
        "import sys, mapnb; heavy = [m for m in ('pandas', 'IPython', 'dask', 'distributed', "
        "'ipywidgets', 'numpy', 'tqdm', 'cloudpickle', 'flytekit') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_map_run_repr_and_len():
    run = mapnb.map_task(lambda x: x, backend="sequential").submit(x=[1, 2])
    run.wait(30)
    assert len(run) == 2
    assert repr(run).startswith(f"<MapRun {run.id} <lambda> succeeded: succeeded 2")
    assert mapnb.last_run() is run


def test_a_backend_shipped_by_another_package_is_found_by_its_entry_point(tmp_path, monkeypatch):
    """A package declares ``[project.entry-points."mapnb.backends"]``; no registration call."""
    (tmp_path / "mapnb_extra_backend.py").write_text(
        "from mapnb.backends.sequential import SequentialBackend\n"
        "class Extra(SequentialBackend):\n"
        "    name = 'extra'\n"
    )
    dist = tmp_path / "mapnb_extra_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mapnb-extra-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mapnb.backends]\nextra = mapnb_extra_backend:Extra\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # The found backend joins the registry; keep it out of the other tests' error messages.
    monkeypatch.setattr(mapnb.backends, "_REGISTRY", dict(mapnb.backends._REGISTRY))
    monkeypatch.setattr(mapnb.backends, "_INSTANCES", dict(mapnb.backends._INSTANCES))
    df = mapnb.map_task(lambda x: x + 1, backend="extra")(x=[1, 2])
    assert df["output"].tolist() == [2, 3]
    assert type(mapnb.get_backend("extra")).__name__ == "Extra"
