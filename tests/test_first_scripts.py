"""What a new user's first scripts meet: each script runs in a fresh interpreter, from
another working directory, as ``python script.py`` would (issue 10)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import mapnb
from mapnb import map_task

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


async def async_double(x: int) -> int:
    """An ``async def`` task, as Flyte 2 tasks are."""
    await asyncio.sleep(0.01)
    if x < 0:
        raise ValueError("negative")
    return 2 * x


def test_async_def_tasks_run_to_completion_on_every_backend(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        run = map_task(async_double, backend=backend, progress=False, min_success_ratio=0).submit(x=[1, 2, -1])
        df = run.result(timeout=120)
    assert list(df["output"][:2]) == [2, 4] and run.statuses[2] == mapnb.Status.FAILED
    err = run.errors[2]
    assert err.type == "ValueError" and err.message == "negative"
    # The traceback starts in the task, without mapnb's or asyncio's frames.
    assert err.traceback.splitlines()[1].strip().startswith('File "') and "async_double" in err.traceback
    assert "asyncio" not in err.traceback and "mapnb" not in err.traceback, err.traceback


def test_an_async_def_script_prints_no_never_awaited_warning(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import asyncio
        from mapnb import map_task

        async def fetch(x):
            await asyncio.sleep(0.01)
            return x + 1

        df = map_task(fetch, backend="local", progress=False)(x=[1, 2, 3])
        print(list(df["output"]))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2, 3, 4]"
    assert "never awaited" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
