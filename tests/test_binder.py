"""binder/ is what mybinder.org builds: install it into a fresh venv, as repo2docker does
(from the repository's root), and run the tutorials with nothing else installed."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.timeout(900)
def test_binder_requirements_install_and_run_the_tutorials(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    build = tmp_path / "src"  # a copy, so that building "." leaves the work tree clean
    junk = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "test-artifacts")
    shutil.copytree(ROOT, build, ignore=junk)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", "binder/requirements.txt"], cwd=build, check=True)
    env = dict(os.environ, JUPYTER_PATH=str(venv / "share" / "jupyter"), MAPNB_WIDGET="anywidget")
    env.pop("PYTHONPATH", None)
    check = "import mapnb, anywidget, ipywidgets, jupyterlab; print(mapnb.__file__)"
    where = subprocess.run(
        [str(py), "-c", check], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    )
    assert str(venv) in where.stdout  # the installed mapnb, not this checkout
    for nb in sorted((build / "notebooks").glob("*.ipynb")):
        subprocess.run(
            [str(py), "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
             "--ExecutePreprocessor.timeout=300", "--output-dir", str(tmp_path / "out"), str(nb)],
            cwd=tmp_path, env=env, check=True, capture_output=True,
        )  # fmt: skip
        assert (tmp_path / "out" / nb.name).exists()
