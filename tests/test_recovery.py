"""Run journals and recovery: a run killed mid-way is rebuilt in another process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import mapnb
from mapnb import InvalidMapError, Status, map_task
from mapnb.journal import home

from . import tasks
from .tasks import counted, runs_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def log_dir(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    return str(d)


def journaled(run_id: str) -> set[int]:
    try:
        return set(mapnb.journal.read(run_id)[1])
    except (FileNotFoundError, sqlite3.Error):
        return set()


def test_a_killed_run_is_recovered_in_another_process_without_redoing_finished_items(log_dir, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import mapnb
        from tests.tasks import counted
        run = mapnb.map_task(counted, concurrency=2).submit(
            x=list(range(8)), log_dir=[{log_dir!r}] * 8, delay=[0.4] * 8)
        print(run.id, flush=True)
        run.wait()
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    t0 = time.monotonic()
    while len(journaled(run_id)) < 3:
        assert time.monotonic() - t0 < 60, "the run did not get going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the kernel dies mid-run
    proc.wait(30)
    done_before = journaled(run_id)
    assert 3 <= len(done_before) < 8

    recover = tmp_path / "recover.py"
    recover.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import json, mapnb
        run = mapnb.recover({run_id!r})
        df = run.result(timeout=60)
        print(json.dumps({{"id": run.id, "outputs": df["output"].tolist()}}))
    """)
    )
    out = subprocess.run([sys.executable, str(recover)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"id": run_id, "outputs": [0, 10, 20, 30, 40, 50, 60, 70]}
    for i in done_before:  # finished items were not computed again
        assert runs_of(log_dir, i) == 1, (i, sorted(os.listdir(log_dir)))
    assert journaled(run_id) == set(range(8))


def test_submit_recover_takes_the_succeeded_items_and_runs_the_rest(log_dir, backend):
    mt = map_task(counted, min_success_ratio=0, backend=backend)
    first = mt.submit(x=[1, 2, 3], log_dir=[log_dir, log_dir, "/nonexistent/dir"])
    first.wait()
    assert first.statuses[2] is Status.FAILED
    again = mt.submit(x=[1, 2, 3], log_dir=[log_dir, log_dir, "/nonexistent/dir"], recover=first.id)
    again.wait()
    assert again.id == first.id and again.statuses[:2] == [Status.SUCCEEDED] * 2
    assert runs_of(log_dir, 1) == 1 and runs_of(log_dir, 2) == 1  # not run again
    assert again.attempts[2] == 1 and again.statuses[2] is Status.FAILED  # ran again, failed again


def test_recover_checks_that_the_items_are_the_same(log_dir):
    run = map_task(counted).submit(x=[1, 2], log_dir=[log_dir] * 2)
    run.wait()
    with pytest.raises(InvalidMapError, match="recover needs the same items"):
        map_task(counted).submit(x=[1, 2, 3], log_dir=[log_dir] * 3, recover=run.id)
    with pytest.raises(InvalidMapError, match="other input values"):
        map_task(counted).submit(x=[1, 5], log_dir=[log_dir] * 2, recover=run.id)
    with pytest.raises(InvalidMapError, match="no journal for run 'nope'"):
        mapnb.recover("nope")


def test_the_magic_recovers(log_dir):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mapnb")
    shell.user_ns["log_dir"] = log_dir
    body = "import uuid\nopen(f'{log_dir}/{x}-{uuid.uuid4().hex}', 'w').close()\nif x == 3 and first: raise ValueError(x)\nx"
    shell.user_ns["first"] = True
    shell.run_cell_magic("map_task", "--min-success-ratio 0 --run r x=[1, 2, 3]", body)
    run_id = shell.user_ns["r"].id
    shell.user_ns["first"] = False
    df = shell.run_cell_magic("map_task", f"--recover {run_id} x=[1, 2, 3]", body)
    assert df["output"].tolist() == [1, 2, 3] and runs_of(log_dir) == 4  # only item 3 again


def test_old_runs_are_pruned(monkeypatch, tmp_path):
    monkeypatch.setenv("MAPNB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAPNB_KEEP_RUNS", "3")
    runs = [map_task(tasks.double, backend="sequential").submit(x=[1]) for _ in range(20)]
    for r in runs:
        r.wait()
    mapnb.journal._writer.flush()
    with sqlite3.connect(home() / "journal.sqlite") as db:
        kept = [r for (r,) in db.execute("SELECT run_id FROM runs")]
    assert len(kept) == 3 and runs[-1].id in kept
    with pytest.raises(InvalidMapError, match="no journal"):
        mapnb.recover(runs[0].id)


def test_journaling_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("MAPNB_JOURNAL", "0")
    run = map_task(tasks.double, backend="sequential").submit(x=[1])
    run.wait()
    with pytest.raises(InvalidMapError, match="no journal"):
        mapnb.recover(run.id)
