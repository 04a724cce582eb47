"""`make test` measures coverage in the local pool's fork server and workers too.

The project's coverage configuration (pyproject.toml) starts coverage in the fork server
(a subprocess) and restarts it in each forked worker; the fork server saves a worker's data
before its ``os._exit`` and, at shutdown, lets it save before killing it. Without coverage,
neither process imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys
import mapnb

def where(x):
    return os.getpid(), "coverage" in sys.modules

out = mapnb.map_task(where, concurrency=2)(x=[0, 1, 2, 3])["output"].tolist()
print(len({pid for pid, _ in out}), all(imported for _, imported in out))
"""


def _env() -> dict[str, str]:
    """This environment without the variables that start coverage in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _where(marker: str) -> tuple[str, int]:
    """The file of mapnb, and the line in it, that holds ``marker`` (wherever the layout puts it)."""
    hits = [
        (str(path.resolve()), number)
        for path in (ROOT / "mapnb").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if marker in line
    ]
    assert len(hits) == 1, f"{marker!r} should be in exactly one file of mapnb: {hits}"
    return hits[0]


def test_workers_and_the_fork_server_save_their_coverage_data(tmp_path):
    coverage = pytest.importorskip("coverage")  # the test extra
    (tmp_path / "script.py").write_text(SCRIPT)
    data_file = tmp_path / ".coverage"
    rcfile = str(ROOT / "pyproject.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "coverage", "run", f"--rcfile={rcfile}", f"--data-file={data_file}", "script.py"],
        capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "True"], proc.stdout  # two workers, measured
    files = sorted(tmp_path.glob(".coverage.*"))
    assert len(files) >= 4, files  # the script, the fork server, its two workers

    cov = coverage.Coverage(data_file=str(data_file), config_file=rcfile)
    cov.combine([str(f) for f in files])
    data = cov.get_data()
    lines = {os.path.realpath(f): set(data.lines(f) or ()) for f in data.measured_files()}
    # Lines that run only in the fork server, and only in a worker.
    for marker in (
        "pid = os.fork()",
        "serve(Connection(fd), ledger_fd)",
        "run_items(job, items, lane, mem_limit=outbox.mem_limit)",
    ):
        path, number = _where(marker)
        assert number in lines.get(path, set()), f"{path}:{number} ({marker}) was not measured"


def test_without_coverage_the_workers_do_not_import_it(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "script.py"], capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "False"], proc.stdout
