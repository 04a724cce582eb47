"""Subtask caching: keys, versions, serialization, overwrite, a damaged store."""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import warnings

import pytest

import mapnb
import mapnb.cache
from mapnb import InvalidMapError, Status, map_task, task

from . import tasks
from .tasks import counted, runs_of
from .test_contract import wait_until


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("MAPNB_CACHE_DIR", str(d))
    return d


@pytest.fixture
def log_dir(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    return str(d)


def test_a_second_run_takes_every_output_from_the_cache(log_dir, backend):
    mt = map_task(task(counted, cache=True), backend=backend)
    first = mt(x=[1, 2, 3], log_dir=[log_dir] * 3)
    assert first["cached"].tolist() == [False] * 3 and runs_of(log_dir) == 3
    again = mt(x=[1, 2, 3, 4], log_dir=[log_dir] * 4)
    assert again["output"].tolist() == [10, 20, 30, 40]
    assert again["status"].tolist() == ["cached"] * 3 + ["succeeded"]
    assert again["cached"].tolist() == [True, True, True, False]
    assert runs_of(log_dir) == 4  # only the new item ran
    run = mapnb.last_run()
    assert run.counts["cached"] == 3 and run.attempts[:3] == [0, 0, 0]


def test_the_key_covers_inputs_and_bound_partials_but_not_ignored_ones(log_dir):
    fn = task(counted, cache=True, cache_ignore_input_vars=("verbose",))
    map_task(functools.partial(fn, log_dir=log_dir))(x=[1], verbose=[False])
    df = map_task(functools.partial(fn, log_dir=log_dir))(x=[1], verbose=[True])
    assert df["cached"].tolist() == [True]  # verbose is not part of the key
    other = map_task(functools.partial(fn, log_dir=log_dir, delay=0.001))(x=[1])
    assert other["cached"].tolist() == [False]  # a different bound input is another item
    assert runs_of(log_dir) == 2


def test_editing_the_function_starts_afresh_unless_a_version_is_pinned(log_dir):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns.update(log_dir=log_dir, mapnb=mapnb)
    first = "def f(x):\n    open(f'{log_dir}/{x}-a', 'w').close()\n    return x\n"
    edited = "def f(x):\n    open(f'{log_dir}/{x}-b', 'w').close()\n    return x + 1\n"
    for version in (None, "1"):
        mapnb.cache.clear()
        shell.run_cell(first).raise_error()
        shell.run_cell(f"df = mapnb.map_task(f, cache=True, cache_version={version!r})(x=[5])").raise_error()
        shell.run_cell(edited).raise_error()
        shell.run_cell(f"df = mapnb.map_task(f, cache=True, cache_version={version!r})(x=[5])").raise_error()
        df = shell.user_ns["df"]
        if version is None:
            assert df["cached"].tolist() == [False] and df["output"].tolist() == [6]
        else:  # the user pinned the version: the old entry still counts
            assert df["cached"].tolist() == [True] and df["output"].tolist() == [5]


def test_cache_overwrite_runs_again_and_replaces(log_dir):
    fn = task(counted, cache=True)
    map_task(fn)(x=[1, 2], log_dir=[log_dir] * 2)
    df = map_task(fn, cache_overwrite=True)(x=[1, 2], log_dir=[log_dir] * 2)
    assert df["cached"].tolist() == [False, False] and runs_of(log_dir) == 4
    assert map_task(fn)(x=[1, 2], log_dir=[log_dir] * 2)["cached"].tolist() == [True, True]


def test_a_damaged_entry_is_a_miss_with_a_warning(log_dir, caplog):
    fn = task(counted, cache=True)
    map_task(fn)(x=[1, 2], log_dir=[log_dir] * 2)
    store = mapnb.cache._store()
    for key in list(store.iterkeys()):
        store.set(key, b"not a pickle")
    with caplog.at_level(logging.WARNING, logger="mapnb.cache"):
        df = map_task(fn)(x=[1, 2], log_dir=[log_dir] * 2)
    assert df["output"].tolist() == [10, 20] and df["cached"].tolist() == [False, False]
    assert "could not be read" in caplog.text


def test_failed_items_are_not_cached(tmp_path):
    fn = task(tasks.fail_on, cache=True)
    map_task(fn, min_success_ratio=0)(x=[1, 2])
    df = map_task(fn, min_success_ratio=0)(x=[1, 2])
    assert df["status"].tolist() == ["cached", "failed"]


def test_serialize_computes_identical_items_once_within_a_run(log_dir):
    fn = task(counted, cache=True, cache_serialize=True)
    df = map_task(fn, concurrency=4)(x=[7, 7, 7, 8], log_dir=[log_dir] * 4, delay=[0.3] * 4)
    assert df["output"].tolist() == [70, 70, 70, 80]
    assert runs_of(log_dir, 7) == 1 and runs_of(log_dir, 8) == 1
    assert sorted(df["status"]) == ["cached", "cached", "succeeded", "succeeded"]


def serialized_sweep(tmp_path, run: str):
    """A script that maps ``counted`` with ``cache_serialize=True`` (``run`` makes ``df``)."""
    script = tmp_path / "sweep.py"
    root = str(tasks.__file__.rsplit("/tests/", 1)[0])
    script.write_text(
        f"import sys\nsys.path.insert(0, {root!r})\nimport mapnb\nfrom tests.tasks import counted\n"
        "fn = mapnb.task(counted, cache=True, cache_serialize=True)\n"
        f"{run}\nprint(df['status'].tolist())\n"
    )
    return script


def test_serialize_computes_once_across_processes(log_dir, cache_dir, tmp_path):
    script = serialized_sweep(
        tmp_path,
        f"df = mapnb.map_task(fn, concurrency=2)(x=[1, 2, 3, 4], log_dir=[{log_dir!r}] * 4, delay=[0.8] * 4)",
    )
    env = {**__import__("os").environ, "MAPNB_CACHE_DIR": str(cache_dir)}
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all(runs_of(log_dir, x) == 1 for x in (1, 2, 3, 4)), sorted(__import__("os").listdir(log_dir))
    assert sum(o.count("cached") for o in outs) == 4  # each item computed by one, taken by the other


def test_clear_and_info(log_dir, cache_dir):
    map_task(task(counted, cache=True))(x=[1, 2, 3], log_dir=[log_dir] * 3)
    info = mapnb.cache.info()
    assert info["entries"] == 3 and info["bytes"] > 0 and info["directory"] == str(cache_dir)
    assert mapnb.cache.clear() >= 3 and mapnb.cache.info()["entries"] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cache="yes"), "cache must be True or False"),
        (dict(cache=True, cache_version=1), "cache_version must be a string"),
        (dict(cache_version="1"), "need cache=True"),
        (dict(cache_overwrite=True), "need cache=True"),
    ],
)
def test_bad_cache_settings_fail_early(kwargs, message):
    with pytest.raises(InvalidMapError, match=message):
        map_task(tasks.double, **kwargs)


def test_the_magic_caches_its_body(log_dir):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mapnb")
    shell.user_ns["log_dir"] = log_dir
    body = "import uuid\nopen(f'{log_dir}/{x}-{uuid.uuid4().hex}', 'w').close()\nx * 3"
    shell.run_cell_magic("map_task", "--cache x=[1, 2]", body)
    df = shell.run_cell_magic("map_task", "--cache x=[1, 2, 3]", body)
    assert df["cached"].tolist() == [True, True, False] and runs_of(log_dir) == 3
    assert mapnb.last_run().statuses[0] is Status.CACHED


def test_serialize_hands_a_key_found_at_claim_time_to_its_waiters(log_dir, tmp_path):
    # Run 1 maps [A, B, B] one at a time; while A runs, another run computes B. When run 1
    # claims B it finds B cached: the second B, waiting on the first, must get it too
    # (it used to wait forever) and B is computed once.
    fn = task(tasks.counted_after, cache=True, cache_serialize=True)
    gate = str(tmp_path / "gate")
    run = map_task(fn, concurrency=1, backend="threads").submit(
        x=[1, 2, 2], log_dir=[log_dir] * 3, gate=[gate, "", ""]
    )
    wait_until(lambda: run.statuses[0] is Status.RUNNING, what="item A to start")
    other = map_task(fn, backend="threads")(x=[2], log_dir=[log_dir], gate=[""])
    assert other["status"].tolist() == ["succeeded"]
    open(gate, "w").close()
    df = run.result(timeout=60)
    assert df["status"].tolist() == ["succeeded", "cached", "cached"]
    assert df["output"].tolist() == [10, 20, 20]
    assert runs_of(log_dir, 2) == 1


def test_a_damaged_store_is_moved_aside_and_rebuilt_with_one_warning(log_dir, cache_dir):
    cache_dir.mkdir()
    (cache_dir / "cache.db").write_bytes(b"this is not a database" * 100)
    fn = task(counted, cache=True)
    with pytest.warns(UserWarning, match="was damaged .* moved aside") as seen:
        df = map_task(fn)(x=[1, 2], log_dir=[log_dir] * 2)
    assert df["status"].tolist() == ["succeeded"] * 2
    assert str(cache_dir) in str(seen[0].message)
    assert [p.name.startswith("cache.db.damaged-") for p in cache_dir.glob("cache.db.*")] == [True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the new store works
        again = map_task(fn)(x=[1, 2], log_dir=[log_dir] * 2)
    assert again["status"].tolist() == ["cached"] * 2 and runs_of(log_dir) == 2


def test_a_cache_dir_that_cannot_be_used_warns_once_and_runs_uncached(log_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MAPNB_CACHE_DIR", str(blocker / "cache"))
    fn = task(counted, cache=True, cache_serialize=True)
    with pytest.warns(UserWarning, match="cannot use the mapnb cache in .*a-file/cache.*MAPNB_CACHE_DIR"):
        df = map_task(fn)(x=[1, 1], log_dir=[log_dir] * 2)
    assert df["status"].tolist() == ["succeeded"] * 2 and df["output"].tolist() == [10, 10]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process and directory, not per run
        again = map_task(fn)(x=[1], log_dir=[log_dir])
    assert again["status"].tolist() == ["succeeded"] and runs_of(log_dir) == 3
    with pytest.raises(OSError, match="cannot use the mapnb cache"):
        mapnb.cache.info()


def test_serialize_across_processes_with_repeated_keys_always_finishes(log_dir, cache_dir, tmp_path):
    # Two processes on the same keys, each key repeated, one item at a time: whoever finds a
    # key cached when it claims it must hand it to its own waiters (runs used to hang).
    script = serialized_sweep(
        tmp_path,
        "xs = [int(a) for a in sys.argv[1].split(',')]\n"
        "df = mapnb.map_task(fn, concurrency=1, backend='threads', progress=False)("
        f"x=xs, log_dir=[{log_dir!r}] * len(xs), delay=[0.05] * len(xs))",
    )
    env = {**__import__("os").environ, "MAPNB_CACHE_DIR": str(cache_dir)}
    for rnd in range(3):
        keys = [10 * rnd + k for k in range(4)]
        orders = [keys, keys[::-1]]
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), ",".join(str(x) for k in order for x in (k, k))],
                env=env, stdout=subprocess.PIPE, text=True,
            )
            for order in orders
        ]  # fmt: skip
        try:
            outs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
                p.wait()
        assert all(p.returncode == 0 for p in procs), outs
        assert all(runs_of(log_dir, x) == 1 for x in keys), sorted(__import__("os").listdir(log_dir))


def test_a_store_damaged_while_in_use_warns_once_and_is_rebuilt_by_the_next_run(cache_dir):
    mt = map_task(task(tasks.double, cache=True), backend="sequential")
    mt(x=list(range(300)))
    db = cache_dir / "cache.db"
    with open(db, "r+b") as f:  # damage every page but the first
        f.seek(4096)
        f.write(b"\xff" * (db.stat().st_size - 4096))
    with pytest.warns(UserWarning, match=f"cache database in {cache_dir} is damaged") as seen:
        df = mt(x=list(range(300)))
    assert df["output"].tolist() == [2 * x for x in range(300)]
    assert len([w for w in seen if "cache" in str(w.message)]) == 1  # once, not per item
    with pytest.warns(UserWarning, match="moved aside"):
        mt(x=list(range(300)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mt(x=list(range(300)))["status"].tolist() == ["cached"] * 300
