"""Intra-task checkpoints: a retried attempt resumes from what the failed one saved."""

from __future__ import annotations

import pytest

import mapnb
from mapnb import map_task

from . import tasks


def test_a_retry_after_an_exception_resumes_from_the_checkpoint(backend):
    df = map_task(tasks.resumable, backend=backend, retries=1)(steps=[5, 5])
    assert df["resumed_from"].tolist() == [3, 3] and df["attempt"].tolist() == [2, 2]
    assert df["index"].tolist() == [0, 1]


def test_a_retry_after_the_worker_died_resumes_from_the_checkpoint():
    df = map_task(tasks.resumable, retries=1)(steps=[6], crash=["kill"])
    assert df.loc[0, "resumed_from"] == 3 and df.loc[0, "attempts"] == 2


def test_a_retry_after_a_timeout_resumes_from_the_checkpoint():
    df = map_task(tasks.resumable, retries=1, timeout=2)(steps=[4], crash=["hang"])
    assert df.loc[0, "resumed_from"] == 3 and df.loc[0, "attempts"] == 2


def test_save_and_restore_a_folder(tmp_path):
    def job(x: int, scratch: str) -> str:
        import pathlib

        cp = mapnb.current_context().checkpoint
        work = pathlib.Path(scratch) / f"work-{x}-{mapnb.current_context().attempt}"
        if cp.prev_exists():
            cp.restore(work)
            return (work / "model.txt").read_text()
        work.mkdir(parents=True)
        (work / "model.txt").write_text(f"weights of {x}")
        cp.save(work)
        raise RuntimeError("preempted")

    df = map_task(job, retries=1)(x=[1, 2], scratch=[str(tmp_path)] * 2)
    assert df["output"].tolist() == ["weights of 1", "weights of 2"]


def test_outside_a_map_task_there_is_nothing_to_resume():
    ctx = mapnb.current_context()
    assert ctx.index is None and not ctx.checkpoint.prev_exists() and ctx.checkpoint.read() is None
    with pytest.raises(TypeError, match="takes bytes"):
        ctx.checkpoint.write("text")  # type: ignore[arg-type]


def test_checkpoints_live_in_the_runs_folder():
    run = map_task(tasks.resumable, retries=1).submit(steps=[4])
    run.result()
    folder = mapnb.journal.run_dir(run.id) / "checkpoints" / "0"
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2"]
    assert (folder / "1" / "checkpoint").read_bytes() == b"3"


def test_read_restore_and_several_files_as_flytekits_sync_checkpoint(tmp_path):
    """restore() without a path, read() after save(file), ValueError for several files."""

    def job(x: int, scratch: str) -> str:
        import pathlib

        cp = mapnb.current_context().checkpoint
        if not cp.prev_exists():
            work = pathlib.Path(scratch) / f"work-{x}"
            work.mkdir()
            (work / "state.txt").write_text(f"state {x}")
            if x == 2:
                (work / "more.txt").write_text("more")
                cp.save(work)  # a folder of two files
            else:
                cp.save(work / "state.txt")  # one file, under its own name
            raise RuntimeError("preempted")
        restored = cp.restore()  # no path: a folder of its own
        names = sorted(p.name for p in restored.iterdir())
        try:
            return f"{names} {cp.read().decode()}"
        except ValueError as e:
            return f"{names} {e}"

    df = map_task(job, retries=1, backend="threads")(x=[1, 2], scratch=[str(tmp_path)] * 2)
    assert df["output"].tolist() == [
        "['state.txt'] state 1",
        "['more.txt', 'state.txt'] Expected exactly one checkpoint - found 2",
    ]


def test_each_item_sees_its_own_context_one_object_per_attempt(backend):
    # Items share one context slot per batch (worker.run_items): each must still see its
    # own index and attempt, and the same context object for the whole attempt.
    df = map_task(tasks.who_am_i, backend=backend, concurrency=2)(x=list(range(300)))
    assert df["output"].tolist() == [(x, x, 1, True) for x in range(300)]
