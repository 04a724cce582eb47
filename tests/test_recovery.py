"""Run journals and recovery: a run killed mid-way is rebuilt in another process."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

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


@pytest.fixture
def own_home(monkeypatch, tmp_path):
    d = tmp_path / "home"
    monkeypatch.setenv("MAPNB_HOME", str(d))
    return d


def test_a_damaged_journal_is_moved_aside_and_rebuilt_with_one_warning(own_home):
    own_home.mkdir()
    (own_home / "journal.sqlite").write_bytes(b"this is not a database" * 100)
    mt = map_task(tasks.double, backend="sequential")
    with pytest.warns(UserWarning, match="journal: .*journal.sqlite was damaged .* moved aside"):
        run = mt.submit(x=[1, 2])
        run.wait()
    assert [p.name.startswith("journal.sqlite.damaged-") for p in own_home.glob("journal.sqlite.*")] == [True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new journal works: no more warnings
        again = mapnb.recover(run.id)
        assert again.result(timeout=60)["output"].tolist() == [2, 4]


def test_a_journal_that_cannot_be_written_warns_once_and_runs_go_on(monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MAPNB_HOME", str(blocker / "home"))
    mt = map_task(tasks.double, backend="sequential")
    with caplog.at_level(logging.WARNING, logger="mapnb"):
        with pytest.warns(UserWarning, match="cannot write the run journal .*a-file/home.*MAPNB_HOME") as seen:
            runs = [mt.submit(x=[1, 2]) for _ in range(3)]
            for r in runs:
                r.wait()
            mapnb.journal._writer.flush()
    assert len([w for w in seen if "journal" in str(w.message)]) == 1  # once, not per write
    assert all(r.statuses == [Status.SUCCEEDED] * 2 for r in runs)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback per write
    with pytest.raises(InvalidMapError, match="no journal"):
        mapnb.recover(runs[0].id)


def test_recover_says_what_is_wrong_with_a_damaged_journal(own_home):
    run = map_task(tasks.double, backend="sequential").submit(x=[1, 2])
    run.wait()
    mapnb.journal._writer.flush()
    for p in own_home.glob("journal.sqlite*"):
        p.write_bytes(b"garbage" * 1000)
    with pytest.warns(UserWarning, match="was damaged"):
        with pytest.raises(mapnb.journal.JournalError, match=f"run '{run.id}' cannot be recovered: .* is damaged"):
            mapnb.recover(run.id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        later = map_task(tasks.double, backend="sequential").submit(x=[3])  # journals afresh
        later.wait()
    assert mapnb.recover(later.id).result(timeout=60)["output"].tolist() == [6]


def test_big_outputs_are_journaled_in_files_beside_the_journal(own_home):
    # A 2 MiB output is not written into the database (nor again into its WAL).
    run = map_task(tasks.big_output, backend="sequential").submit(kib=[2048, 1])
    run.wait()
    mapnb.journal._writer.flush()
    db_bytes = sum(p.stat().st_size for p in own_home.glob("journal.sqlite*"))
    assert db_bytes < 1 << 20, db_bytes
    assert [p.name for p in (own_home / "runs" / run.id / "outputs").iterdir()] == ["0-1.pkl"]
    meta, done = mapnb.journal.read(run.id)
    assert done[0][0] == "x" * (2048 * 1024) and done[1][0] == "x" * 1024
    assert mapnb.recover(run.id).result(timeout=60)["output"].str.len().tolist() == [2048 * 1024, 1024]


def test_the_journal_connection_keeps_a_small_page_cache(own_home):
    # The driver grew by ~2 MB over its first few hundred runs: the writer's SQLite page
    # cache filling up (it only appends, so a big cache buys nothing).
    db = mapnb.journal._connect(own_home / "journal.sqlite")
    try:
        assert db.execute("PRAGMA cache_size").fetchone()[0] == -mapnb.journal._CACHE_KIB
        assert mapnb.journal._CACHE_KIB <= 256
    finally:
        db.close()


def test_recover_says_why_a_journal_cannot_be_read(own_home):
    (own_home / "journal.sqlite").mkdir(parents=True)  # in the way, and not a database
    with pytest.raises(mapnb.journal.JournalError, match="cannot read the run journal .*journal.sqlite"):
        mapnb.recover("abc")


def test_a_journal_written_with_the_older_fingerprint_still_recovers(log_dir):
    # mapnb 0.1.0 fingerprinted the items as pickled by cloudpickle; the items now go by
    # the standard pickler, column by column. A run journaled then can still be recovered.
    import hashlib

    import cloudpickle

    items = [(1, log_dir), (2, "/nonexistent/dir")]
    mt = map_task(counted, min_success_ratio=0)
    run = mt.submit(x=[1, 2], log_dir=[log_dir, "/nonexistent/dir"])
    run.wait()
    mapnb.journal.read(run.id)  # (waits for the journal's writes)
    old = hashlib.sha256(cloudpickle.dumps((("x", "log_dir"), items), protocol=5)).hexdigest()
    with sqlite3.connect(home() / "journal.sqlite") as db:
        assert db.execute("UPDATE runs SET fingerprint = ? WHERE run_id = ?", (old, run.id)).rowcount == 1
    with pytest.raises(InvalidMapError, match="other input values"):
        mt.submit(x=[1, 3], log_dir=[log_dir, "/nonexistent/dir"], recover=run.id)
    again = mt.submit(x=[1, 2], log_dir=[log_dir, "/nonexistent/dir"], recover=run.id)
    again.wait()
    assert runs_of(log_dir, 1) == 1  # taken from the journal, not run again
