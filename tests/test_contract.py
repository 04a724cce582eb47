"""The semantics every backend must keep: one suite, run against each backend."""

from __future__ import annotations

import functools
import math
import time

import pandas as pd
import pytest

import mapnb
from mapnb import MapTaskError, Status, map_task, task
from mapnb.events import ItemFinished, ItemLog, ItemStarted, RunFinished, RunStarted

from . import tasks
from .conftest import BACKENDS

STREAMING = [b for b in BACKENDS if b != "sequential"]  # backends that run beside the caller


def wait_until(pred, timeout: float = 30.0, what: str = "condition"):
    t0 = time.monotonic()
    while not (value := pred()):
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


def test_results_in_input_order(backend):
    df = map_task(tasks.double, backend=backend)(x=[3, 1, 2])
    assert list(df.columns) == ["x", "output", "status", "error", "attempts", "duration_s"]
    assert df["output"].tolist() == [6, 2, 4]
    assert df["x"].tolist() == [3, 1, 2]
    assert (df["status"] == "succeeded").all() and df["error"].isna().all()
    assert df["attempts"].tolist() == [1, 1, 1]
    assert list(df.index) == [0, 1, 2]


def test_many_items_keep_order(backend):
    n = 3000
    run = map_task(tasks.double, backend=backend).submit(x=range(n))
    assert run.result(timeout=60)["output"].tolist() == [2 * i for i in range(n)]
    assert run.outputs == [2 * i for i in range(n)]
    assert run.counts["succeeded"] == n


def test_several_lists_map_element_wise_and_defaults_stay(backend):
    df = map_task(tasks.add, backend=backend)(a=[1, 2], b=[10, 20])
    assert df["output"].tolist() == [11, 22]
    df = map_task(tasks.add, backend=backend)(a=[1, 2])  # b keeps its default
    assert df["output"].tolist() == [101, 102]


def test_partial_binds_fixed_inputs(backend):
    df = map_task(functools.partial(tasks.add, b=5), backend=backend)(a=[1, 2, 3])
    assert df["output"].tolist() == [6, 7, 8]
    assert list(df.columns)[:2] == ["a", "output"]


def test_product_is_a_sweep(backend):
    df = map_task(tasks.add, backend=backend).product(a=[1, 2], b=[10, 20, 30])
    assert list(zip(df["a"], df["b"])) == [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (2, 30)]
    assert df["output"].tolist() == [11, 21, 31, 12, 22, 32]


def test_empty_input_gives_empty_frame(backend):
    df = map_task(tasks.double, backend=backend)(x=[])
    assert len(df) == 0
    assert list(df.columns) == ["x", "output", "status", "error", "attempts", "duration_s"]


def test_structured_outputs_become_columns(backend):
    df = map_task(tasks.as_dict, backend=backend)(x=[2, 3])
    assert df["square"].tolist() == [4, 9] and df["cube"].tolist() == [8, 27]
    df = map_task(tasks.as_pair, backend=backend)(x=[5])
    assert (df["low"][0], df["high"][0]) == (4, 6)
    df = map_task(tasks.as_stats, backend=backend)(x=[4])
    assert (df["mean"][0], df["n"][0]) == (2.0, 4)


def test_failed_slots_are_none_with_min_success_ratio(backend):
    df = map_task(tasks.fail_on, backend=backend, min_success_ratio=0.5)(x=[1, 2, 3, 4])
    assert df["output"].tolist() == [1, None, 3, 4]
    assert df["status"].tolist() == ["succeeded", "failed", "succeeded", "succeeded"]
    assert df["error"][1] == "ValueError: bad input 2"
    assert df["error"][0] is None
    run = mapnb.last_run()
    assert run.outputs == [1, None, 3, 4]
    assert "raise ValueError" in run.errors[1].traceback
    assert "mapnb/worker.py" not in run.errors[1].traceback


def test_below_min_success_ratio_raises_with_partial_results(backend):
    with pytest.raises(MapTaskError) as info:
        map_task(tasks.fail_on, backend=backend, concurrency=1)(x=[1, 2, 3])
    e = info.value
    assert "1 of 3 items succeeded, 3 needed" in str(e) and "item 1 (x=2)" in str(e)
    assert "bad input 2" in e.__cause__.traceback_text
    assert e.df["output"][0] == 1 and e.df["output"][1] is None
    # concurrency=1: item 2 was still queued when item 1 failed, so it never started
    assert e.df["status"].tolist() == ["succeeded", "failed", "aborted"]
    assert e.run is mapnb.last_run()
    rendered = "\n".join(e._render_traceback_())
    assert "Traceback of item 1" in rendered and "bad input 2" in rendered


def test_abort_kills_running_siblings(backend, tmp_path):
    # Item 0 fails (after item 1 started) while item 1 waits for a file that never comes.
    gate = tmp_path / "gate"

    def fail_or_wait(x: int, gate: str = str(gate)) -> int:
        if x == 0:
            time.sleep(0.2)
            raise RuntimeError("boom")
        return len(tasks.wait_for_file(gate, limit=30))

    t0 = time.monotonic()
    try:
        with pytest.raises(MapTaskError):
            map_task(fail_or_wait, backend=backend, concurrency=2)(x=[0, 1, 2, 3])
    finally:
        gate.touch()  # release an abandoned thread, if any
    run = mapnb.last_run()
    assert run.statuses[0] is Status.FAILED
    assert set(run.statuses[1:]) == {Status.ABORTED}
    assert time.monotonic() - t0 < 20


def test_retries_then_success(backend, tmp_path):
    df = map_task(tasks.flaky, backend=backend, retries=1)(x=[1, 2], marker_dir=[str(tmp_path)] * 2)
    assert df["output"].tolist() == [1, 2]
    assert df["attempts"].tolist() == [2, 2]
    assert df["error"].isna().all()


def test_retries_exhausted(backend):
    df = map_task(tasks.fail_on, backend=backend, retries=2, min_success_ratio=0)(x=[1, 2])
    assert df["attempts"].tolist() == [1, 3]
    assert df["status"].tolist() == ["succeeded", "failed"]


def test_task_decorator_sets_defaults_and_map_task_overrides(backend):
    flaky_fail = task(retries=2)(tasks.fail_on)
    df = map_task(flaky_fail, backend=backend, min_success_ratio=0)(x=[2])
    assert df["attempts"][0] == 3
    df = map_task(flaky_fail, backend=backend, retries=0, min_success_ratio=0)(x=[2])
    assert df["attempts"][0] == 1
    assert flaky_fail(3) == 3  # a task is still a plain function to call


def test_timeout_fails_the_attempt_and_siblings_carry_on(backend):
    df = map_task(tasks.sleepy, backend=backend, timeout=0.5, min_success_ratio=0, concurrency=2)(
        x=[0.01, 2.0, 0.02]
    )
    assert df["status"].tolist() == ["succeeded", "failed", "succeeded"]
    assert df["error"][1].startswith("TimeoutError: attempt 1 ran longer than timeout=0.5s")
    assert df["output"].tolist() == [0.01, None, 0.02]


def test_timeout_is_retried(backend):
    df = map_task(tasks.sleepy, backend=backend, timeout=0.3, retries=1, min_success_ratio=0)(x=[1.0])
    assert df["attempts"][0] == 2 and df["status"][0] == "failed"


def test_logs_are_captured_per_item(backend):
    run = map_task(tasks.chatty, backend=backend).submit(x=[1, 2])
    run.result(timeout=30)
    assert run.logs(0) == "out 1\nerr 1\n"
    assert run.logs(1, "stdout") == "out 2\n" and run.logs(1, "stderr") == "err 2\n"


@pytest.mark.parametrize("backend", STREAMING, indirect=True)
def test_logs_stream_while_the_item_runs(backend, tmp_path):
    gate = tmp_path / "gate"
    run = map_task(tasks.wait_for_file, backend=backend).submit(path=[str(gate)])
    try:
        wait_until(lambda: "begin" in run.logs(0), what="the item's first line")
        assert run.statuses[0] is Status.RUNNING and not run.done()
    finally:
        gate.touch()
    run.result(timeout=30)
    assert run.logs(0) == "begin\nend\n"


@pytest.mark.parametrize("backend", STREAMING, indirect=True)
def test_cancel_keeps_finished_results(backend, tmp_path):
    gate = tmp_path / "gate"
    run = map_task(tasks.wait_for_file, backend=backend, concurrency=1).submit(
        path=[str(tmp_path / "a"), str(gate), str(gate)]
    )
    (tmp_path / "a").touch()
    wait_until(lambda: run.statuses[1] is Status.RUNNING, what="item 1 running")
    run.cancel()
    assert run.done() and run.state == "cancelled"
    assert run.statuses == [Status.SUCCEEDED, Status.CANCELLED, Status.CANCELLED]
    assert run.outputs[0] == str(tmp_path / "a")
    with pytest.raises(MapTaskError, match="cancelled"):
        run.result()
    gate.touch()


def test_events_tell_the_story(backend):
    run = map_task(tasks.chatty, backend=backend).submit(x=[1, 2, 3])
    events = list(run.events(timeout=30))
    assert isinstance(events[0], RunStarted) and events[0].n == 3
    assert isinstance(events[-1], RunFinished) and events[-1].status == "succeeded"
    finished = [e for e in events if isinstance(e, ItemFinished)]
    assert sorted(e.index for e in finished) == [0, 1, 2]
    assert all(e.status is Status.SUCCEEDED for e in finished)
    settled: set[int] = set()
    for e in events:  # nothing about an item after its final event
        if isinstance(e, (ItemStarted, ItemLog)):
            assert e.index not in settled
        elif isinstance(e, ItemFinished):
            settled.add(e.index)
    logs = "".join(e.text for e in events if isinstance(e, ItemLog) and e.index == 1)
    assert logs == "out 2\nerr 2\n"


def test_subscribe_late_replays_the_past(backend):
    run = map_task(tasks.double, backend=backend).submit(x=[1, 2])
    run.result(timeout=30)
    got: list = []
    run.subscribe(got.extend)
    assert isinstance(got[0], RunStarted) and isinstance(got[-1], RunFinished)
    assert sum(isinstance(e, ItemFinished) for e in got) == 2


def test_a_subscriber_without_statuses_gets_only_the_items_with_logs_or_metrics_replayed(backend):
    # The grid's way in (statuses=False): the run's status bytes say the rest.
    from mapnb.events import ItemMetrics

    from . import report_tasks

    run = map_task(report_tasks.tight_loop, backend=backend).submit(n=[0, 3, 0, 2])
    run.result(timeout=30)
    chatty = map_task(tasks.chatty, backend=backend).submit(x=[1, 2])
    chatty.result(timeout=30)
    got: list = []
    run.subscribe(got.extend, statuses=False)
    assert sorted(e.index for e in got if isinstance(e, ItemMetrics)) == [1, 3]
    assert not any(isinstance(e, (ItemStarted, ItemFinished)) for e in got)
    got.clear()
    chatty.subscribe(got.extend, statuses=False)
    assert sorted({e.index for e in got if isinstance(e, ItemLog)}) == [0, 1]


def test_df_snapshot_while_running(backend, tmp_path):
    gate = tmp_path / "gate"
    run = map_task(tasks.wait_for_file, backend=backend, concurrency=1).submit(path=[str(gate), str(gate)])
    df = run.df
    assert len(df) == 2 and set(df["status"]) <= {"queued", "running"}
    assert df["output"].tolist() == [None, None]
    gate.touch()
    assert run.result(timeout=30)["status"].tolist() == ["succeeded", "succeeded"]


def test_concurrency_is_respected(backend, tmp_path):
    if backend == "sequential":
        pytest.skip("sequential runs one item at a time whatever concurrency says")
    import os

    def probe(x: int, d: str = str(tmp_path)) -> int:
        mine = os.path.join(d, f"running-{x}")
        open(mine, "w").close()
        n = len([f for f in os.listdir(d) if f.startswith("running-")])
        time.sleep(0.15)
        os.remove(mine)
        return n

    df = map_task(probe, backend=backend, concurrency=2)(x=range(8))
    assert df["output"].max() <= 2
    assert df["output"].max() == 2  # and it does run items side by side


def test_output_columns_keep_none_not_nan(backend):
    df = map_task(tasks.fail_on, backend=backend, min_success_ratio=0)(x=[1, 2])
    assert df["output"].tolist() == [1, None]
    assert df["output"].dtype == object
    df = map_task(tasks.double, backend=backend)(x=[1, 2])
    assert pd.api.types.is_integer_dtype(df["output"])


def test_min_success_ratio_rounds_up(backend):
    # 3 items at 0.5 need ceil(1.5) = 2 successes. Once items 2 and 3 failed, 2 cannot be
    # reached and the run aborts: item 1 succeeded, or (on a loaded machine, its result
    # still on the way) was aborted with it.
    with pytest.raises(MapTaskError, match="[01] of 3 items succeeded, 2 needed"):
        map_task(tasks.fail_on, backend=backend, min_success_ratio=0.5)(x=[1, 2, 3], bad=[(2, 3)] * 3)
    df = map_task(tasks.fail_on, backend=backend, min_success_ratio=0.5)(x=[1, 2, 3])
    assert df["status"].tolist().count("succeeded") == 2
    assert math.ceil(3 * 0.5) == 2


def test_result_timeout_leaves_the_run_going(backend, tmp_path):
    gate = tmp_path / "gate"
    run = map_task(tasks.wait_for_file, backend=backend).submit(path=[str(gate)])
    if backend != "sequential":
        with pytest.raises(TimeoutError):
            run.result(timeout=0.05)
    gate.touch()
    assert run.result(timeout=30)["status"][0] == "succeeded"
