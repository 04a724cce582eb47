"""What a new user's first scripts meet: each script runs in a fresh interpreter, from
another working directory, as ``python script.py`` would (issue 10)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(tmp_path: Path, source: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script in a fresh interpreter whose working directory is ``tmp_path``."""
    script = tmp_path / "first.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAPNB_HOME=str(tmp_path / "home"))
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_a_script_that_fails_fast_prints_only_its_error(tmp_path):
    # The background pandas import used to meet interpreter shutdown: 37 lines of
    # "RuntimeError: can't register atexit after shutdown" after the real error, 2 times in 3.
    source = """
        from mapnb import map_task

        def f(x):
            raise ValueError("boom")

        map_task(f, backend="local", progress=False)(x=[1])
    """
    for _ in range(3):
        proc = run_script(tmp_path, source)
        assert proc.returncode == 1
        assert "MapTaskError: f: 0 of 1 items succeeded" in proc.stderr
        assert "Exception in thread" not in proc.stderr and "atexit" not in proc.stderr, proc.stderr
        assert proc.stderr.rstrip().endswith("See run.logs(0) for its output and e.df for all results.")
