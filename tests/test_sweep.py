"""Steering a sweep: selection, re-running and cancelling a subset, growing a sweep,
and handing it to Optuna. Engine-level tests use the scripted backend of test_engine
(no processes, no sleeps); the others run on the real local pool."""

from __future__ import annotations

import functools
import itertools
import sys
import threading
import time
import uuid

import pytest

import mapnb
from mapnb.backends.base import Job
from mapnb.engine import Engine
from mapnb.errors import InvalidMapError, ItemError
from mapnb.events import ItemFinished, ItemsAdded, RunFinished, Status
from mapnb.jupyter.grid import GridModel
from mapnb.jupyter.widget import LiveGrid
from mapnb.protocol import ENDED, FINISHED, METRICS, STARTED
from mapnb.run import MapRun
from mapnb.spec import Options

from . import sweep_tasks, tasks
from .test_engine import Scripted, ok, succeed_the_rest
from .test_widget import frontends, grid_front, play, start, until  # noqa: F401  (frontends: a fixture)


def scripted_run(n: int, per_item: float | None = None, **kw: object) -> tuple[MapRun, Engine, Scripted]:
    b = Scripted()
    opts = Options(**(dict(concurrency=1, min_success_ratio=1.0, retries=0, timeout=None) | kw))
    eng = Engine(
        run_id="t", job=Job("t", abs, ("x",)), inputs=[(i,) for i in range(n)], backend=b, options=opts
    )
    eng._batcher.per_item = per_item  # None: batches start at one item
    run = MapRun(eng, "abs")
    eng.start()
    return run, eng, b


def finish(eng: Engine, b: Scripted) -> None:
    succeed_the_rest(eng, b)
    assert eng.done.wait(10)


# -- selection --------------------------------------------------------------------------


def test_selection_is_sorted_unique_and_comes_back_as_rows():
    run, eng, b = scripted_run(5)
    finish(eng, b)
    assert run.selected == []
    run.selected = [3, 1, 3]
    assert run.selected == [1, 3]
    df = run.selected_df
    assert list(df.index) == [1, 3] and list(df.columns) == list(run.df.columns)
    assert list(df["output"]) == [1, 3]
    run.selected = []
    assert run.selected_df.empty and list(run.selected_df.columns) == list(run.df.columns)


@pytest.mark.parametrize("bad", [[5], [-1], [1.0], ["2"], [True], 3, "12"])
def test_a_bad_selection_names_the_value_and_the_range(bad):
    run, eng, b = scripted_run(5)
    finish(eng, b)
    run.selected = [2]
    with pytest.raises(ValueError, match="run.selected") as e:
        run.selected = bad
    if isinstance(bad, list) and not isinstance(bad[0], str):
        assert repr(bad[0]) in str(e.value) and "0 to 4" in str(e.value)
    assert run.selected == [2]  # unchanged


def test_selection_callbacks_see_each_change_once_and_can_unsubscribe():
    run, eng, b = scripted_run(4)
    finish(eng, b)
    seen: list[list[int]] = []
    stop = run.on_selected(seen.append)
    run.selected = [2, 0]
    run.selected = [0, 2]  # the same selection: no call
    t = threading.Thread(target=setattr, args=(run, "selected", [1]))  # as the widget's comm thread does
    t.start()
    t.join()
    stop()
    run.selected = [3]
    assert seen == [[0, 2], [1]]


# -- re-running and cancelling a subset (engine level) ---------------------------------


def test_rerun_while_running_takes_finished_items_and_leaves_open_ones():
    run, eng, b = scripted_run(3)
    task, report = b.next()
    report([ok(task, 0), (ENDED, task.id, None, False)])
    task, report = b.next()  # items 1 and 2, in flight
    assert run.rerun([0, 1, 2]) == 1  # only 0 had finished
    assert eng.view.status[0] is Status.RETRYING and not run.done()
    report([ok(task, i) for i, _, _ in task.items] + [(ENDED, task.id, None, False)])
    finish(eng, b)
    assert run.state == "succeeded" and run.attempts == [2, 1, 1]


def test_rerun_of_a_done_run_runs_it_again_and_it_ends_again():
    run, eng, b = scripted_run(2, min_success_ratio=0)
    task, report = b.next()
    report([(FINISHED, task.id, 0, 1, False, ItemError("exception", "E", "x"), 0.0, 0.0)])
    report([ok(task, i) for i, _, _ in task.items if i] + [(ENDED, task.id, None, False)])
    finish(eng, b)
    assert run.statuses == [Status.FAILED, Status.SUCCEEDED]
    assert run.rerun([1, 1]) == 1  # a succeeded item too: forced
    assert not run.done() and run.state == "running"
    finish(eng, b)
    assert run.attempts == [1, 2] and run.statuses == [Status.FAILED, Status.SUCCEEDED]
    assert run.retry_failed() == 1  # retry_failed: the failed one only
    finish(eng, b)
    assert run.attempts == [2, 2] and run.state == "succeeded"


def test_rerun_and_cancel_refuse_bad_indices():
    run, eng, b = scripted_run(2)
    finish(eng, b)
    with pytest.raises(
        ValueError, match=r"rerun\(indices\): 2 is not an item index; allowed: ints from 0 to 1"
    ):
        run.rerun([0, 2])
    with pytest.raises(ValueError, match=r"cancel\(indices\): -1"):
        run.cancel([-1])
    assert run.attempts == [1, 1]


@pytest.mark.parametrize("ratio, state", [(0.5, "succeeded"), (1.0, "failed")])
def test_cancel_a_subset_kills_and_skips_only_those(ratio, state):
    run, eng, b = scripted_run(4, concurrency=2, min_success_ratio=ratio)
    (t0, r0), (t1, r1) = b.next(), b.next()
    assert [t0.items[0][0], t1.items[0][0]] == [0, 1]
    r1([(STARTED, t1.id, 1, 1, 0.0)])
    run.cancel([1, 3])  # 1 is running, 3 is queued
    assert t1.id in b.killed and t0.id not in b.killed
    assert run.statuses[1] is Status.CANCELLED and run.statuses[3] is Status.CANCELLED
    r0([ok(t0, 0), (ENDED, t0.id, None, False)])
    finish(eng, b)
    assert run.statuses == [Status.SUCCEEDED, Status.CANCELLED, Status.SUCCEEDED, Status.CANCELLED]
    assert run.state == state
    run.cancel([0])  # a done run: nothing to cancel
    assert run.statuses[0] is Status.SUCCEEDED


def test_cancelling_an_item_of_a_batch_requeues_the_others_uncharged():
    run, eng, b = scripted_run(6, per_item=1e-3, min_success_ratio=0)
    task, report = b.next()
    assert [i for i, _, _ in task.items][:3] == [0, 1, 2]  # (the batch may hold more)
    report([(STARTED, task.id, 0, 1, 0.0)])
    run.cancel([1])
    assert task.id in b.killed
    report([ok(task, 0), (ENDED, task.id, None, False)])  # late: ignored
    finish(eng, b)
    assert run.statuses[1] is Status.CANCELLED
    assert run.attempts == [1, 0, 1, 1, 1, 1]  # 0 and 2 ran again, uncharged
    assert run.rerun([1]) == 1  # a cancelled item can be re-run
    finish(eng, b)
    assert run.statuses[1] is Status.SUCCEEDED and run.state == "succeeded"


def test_cancel_with_wait_positional_keeps_its_old_meaning():
    run, eng, b = scripted_run(2)
    b.next()
    run.cancel(True)  # as cancel(wait=True) was called by position
    assert run.done() and run.state == "cancelled"


class WholeMap(Scripted):
    """A backend that runs the whole map as one unit, as backend="flyte" does."""

    def take_map(self, *args: object) -> None:  # (its presence is what counts)
        raise AssertionError


def test_a_backend_that_runs_the_whole_map_refuses_changes_while_it_runs():
    b = WholeMap()
    eng = Engine(
        run_id="w", job=Job("w", abs, ("x",)), inputs=[(0,), (1,)], backend=b, options=Options(concurrency=2)
    )
    run = MapRun(eng, "abs")
    eng.start()
    task, report = b.next()
    report([ok(task, 0), (ENDED, task.id, None, False)])
    for change in (lambda: run.rerun([0]), lambda: run.cancel([1]), lambda: run.extend_items(x=[2])):
        with pytest.raises(mapnb.BackendError, match="runs the whole map as one unit"):
            change()
    finish(eng, b)
    assert run.state == "succeeded" and len(run) == 2


# -- re-running on the local pool ------------------------------------------------------


def test_a_forced_rerun_is_not_answered_by_the_cache_and_refreshes_it():
    mt = mapnb.map_task(sweep_tasks.stamp, cache=True, cache_version=uuid.uuid4().hex, concurrency=2)
    df = mt(x=[1, 2])
    first = list(df["output"])
    run = mapnb.last_run()
    assert run.rerun([0]) == 1
    assert run.wait(120) and run.state == "succeeded"
    assert run.statuses == [Status.SUCCEEDED, Status.SUCCEEDED]
    assert run.outputs[0] != first[0] and run.outputs[1] == first[1]
    assert list(df["output"]) == run.outputs  # the DataFrame handed out caught up
    again = mt.submit(x=[1, 2])
    assert again.wait(120) and again.statuses == [Status.CACHED, Status.CACHED]
    assert again.outputs == run.outputs  # the cache holds the re-run's output


def test_rerun_while_running_on_the_local_pool(tmp_path):
    path = str(tmp_path / "go")
    run = mapnb.map_task(sweep_tasks.gate, concurrency=2).submit(x=[0, 1], path=[path, path])
    t0 = time.monotonic()
    while run.statuses[0] is not Status.SUCCEEDED and time.monotonic() - t0 < 120:
        time.sleep(0.02)
    assert run.rerun([0, 1]) == 1
    open(path, "w").close()
    assert run.wait(120) and run.state == "succeeded"
    assert run.attempts == [2, 1] and run.outputs == [0, 1]


# -- growing a sweep -------------------------------------------------------------------


def scripted_sweep(options: Options | None = None, **axes: list) -> tuple[MapRun, Engine, Scripted]:
    b = Scripted()
    names = tuple(axes)
    inputs = list(itertools.product(*axes.values()))
    eng = Engine(
        run_id="s", job=Job("s", max, names), inputs=inputs, backend=b, options=options or Options(concurrency=1),
        axes=[list(v) for v in axes.values()],
    )  # fmt: skip
    run = MapRun(eng, "max", axes=[list(v) for v in axes.values()])
    eng.start()
    return run, eng, b


def test_extend_appends_every_new_combination_in_product_order():
    run = mapnb.map_task(tasks.add, concurrency=2).submit_product(a=[1, 2], b=[10, 20])
    assert run.wait(120) and run.state == "succeeded"
    assert run.extend(a=[3], b=[30]) == 5
    assert run.state == "running" or run.done()  # running again (it may be done already)
    assert run.wait(120) and run.state == "succeeded"
    assert len(run) == 9 and run.axes == [[1, 2, 3], [10, 20, 30]]
    assert run.inputs[4:] == [(1, 30), (2, 30), (3, 10), (3, 20), (3, 30)]
    assert run.outputs == [a + b for a, b in run.inputs]
    assert run.attempts == [1] * 9  # the old items did not run again
    assert all(run.axes[0][r] == a and run.axes[1][c] == b for (r, c), (a, b) in zip(run.coords, run.inputs))
    df = run.df
    assert len(df) == 9 and list(df["a"]) == [a for a, _ in run.inputs]
    assert run.counts["succeeded"] == 9


def test_extend_while_running_emits_items_added_and_the_run_ends_with_all():
    run, eng, b = scripted_sweep(x=[1, 2], y=[5])
    events: list = []
    run.subscribe(events.extend)
    task, report = b.next()  # item 0 in flight
    assert run.extend(x=[3]) == 1
    assert len(run) == 3 and run.view.need == 3 and sum(run.counts.values()) == 3
    assert run.counts["queued"] == 3 and len(run.df) == 3 and len(run.statuses) == 3
    report([ok(task, 0, value=5), (ENDED, task.id, None, False)])
    finish(eng, b)
    assert run.state == "succeeded" and run.statuses == [Status.SUCCEEDED] * 3
    assert run.inputs == [(1, 5), (2, 5), (3, 5)]
    added = [ev for ev in events if isinstance(ev, ItemsAdded)]
    assert added == [ItemsAdded(2, 1)]
    assert sum(isinstance(ev, ItemFinished) for ev in events) == 3


def test_a_succeeded_sweep_that_grows_runs_again_and_ends_again():
    run, eng, b = scripted_sweep(x=[1], y=[5, 6])
    finish(eng, b)
    assert run.state == "succeeded"
    assert run.extend(y=[7, 8]) == 2
    events: list = []
    run.subscribe(events.extend)
    assert run.state == "running" and not run.wait(0.05) and run.counts["queued"] == 2
    finish(eng, b)
    assert run.state == "succeeded" and run.attempts == [1, 1, 1, 1]
    finished = [ev for ev in events if isinstance(ev, RunFinished)]
    assert len(finished) == 1 and finished[0].counts["succeeded"] == 4  # it ended again, whole


def test_extend_items_grows_a_zipped_map_with_the_bound_partial():
    mt = mapnb.map_task(functools.partial(tasks.add, b=5), backend="threads")
    df = mt(a=[1, 2])
    run = mapnb.last_run()
    assert run.extend_items([3]) == 1  # by position, in the run's order
    assert run.extend_items(a=[4, 5]) == 2
    assert run.wait(60) and run.state == "succeeded"
    assert run.outputs == [6, 7, 8, 9, 10]
    assert list(df["output"]) == [6, 7, 8, 9, 10] and list(df["a"]) == [1, 2, 3, 4, 5]  # it grew in place
    assert run.counts["succeeded"] == 5


def test_growing_refuses_what_map_task_refuses():
    zipped = mapnb.map_task(tasks.add, backend="sequential").submit(a=[1], b=[2])
    sweep = mapnb.map_task(tasks.add, backend="sequential").submit_product(a=[1, 2], b=[3])
    assert zipped.wait(60) and sweep.wait(60)
    with pytest.raises(InvalidMapError, match=r"not a sweep; use run.extend_items"):
        zipped.extend(a=[5])
    with pytest.raises(InvalidMapError, match=r"is a sweep .*use run.extend\(name=\[new values\]\)"):
        sweep.extend_items(a=[5], b=[6])
    with pytest.raises(InvalidMapError, match=r"no axis 'c'; its axes are a, b"):
        sweep.extend(c=[1])
    with pytest.raises(InvalidMapError, match=r"extend\(a=...\): 2 is already a value of a"):
        sweep.extend(a=[3, 2])
    with pytest.raises(InvalidMapError, match=r"extend\(a=...\): 4 is already a value of a"):
        sweep.extend(a=[4, 4])
    with pytest.raises(InvalidMapError, match=r"a= got str"):
        sweep.extend(a="4")
    with pytest.raises(InvalidMapError, match=r"same length: a has 2 items, b has 1 item"):
        zipped.extend_items(a=[1, 2], b=[3])
    with pytest.raises(InvalidMapError, match=r"missing 'b'; the run maps a, b"):
        zipped.extend_items(a=[1])
    with pytest.raises(InvalidMapError, match=r"no mapped parameter 'c'"):
        zipped.extend_items(a=[1], b=[2], c=[3])
    assert len(zipped) == 1 and len(sweep) == 2 and sweep.axes == [[1, 2], [3]]  # nothing changed
    assert zipped.extend_items(a=[], b=[]) == 0 and zipped.done()


def test_grown_items_use_the_cache_and_the_old_ones_are_kept():
    version = uuid.uuid4().hex
    mt = mapnb.map_task(sweep_tasks.stamp, cache=True, cache_version=version, concurrency=2)
    mt.submit(x=[3]).wait(120)  # x=3 is in the cache now
    run = mt.submit_product(x=[1, 2])
    assert run.wait(120)
    before = run.outputs
    assert run.extend(x=[3, 4]) == 2
    assert run.wait(120) and run.state == "succeeded"
    assert run.statuses == [Status.SUCCEEDED, Status.SUCCEEDED, Status.CACHED, Status.SUCCEEDED]
    assert run.outputs[:2] == before and run.attempts[:2] == [1, 1]


def test_a_recovered_grown_run_has_all_its_items():
    run = mapnb.map_task(tasks.add, concurrency=2).submit_product(a=[1, 2], b=[10])
    assert run.wait(120)
    run.extend(b=[20])
    assert run.wait(120) and run.state == "succeeded"
    again = mapnb.recover(run.id)
    assert again.wait(120) and again.state == "succeeded"
    assert len(again) == 4 and again.inputs == run.inputs and again.axes == run.axes
    assert again.coords == run.coords and again.outputs == run.outputs
    assert again.attempts == run.attempts  # from the journal: nothing ran again


def test_the_grid_model_takes_the_new_items():
    run, eng, b = scripted_sweep(x=[1, 2], y=[5, 6])
    model = GridModel(run)
    run.subscribe(model.on_events)
    first = model.changes()
    assert first["n"] == 4 and len(first["statuses"]) == 4 and "cells" not in first["sheet"]
    run.extend(y=[7])
    t0 = time.monotonic()
    while not model._grown and time.monotonic() - t0 < 30:  # the engine thread's next flush
        time.sleep(0.01)
    out = model.changes()
    assert out["n"] == 6 and len(out["statuses"]) == 6
    assert out["sheet"]["x"]["labels"] == ["5", "6", "7"]
    # rows x=1, 2; columns y=5, 6, 7: the new column holds the items appended (4 and 5)
    assert out["sheet"]["cells"] == [0, 1, 4, 2, 3, 5]
    finish(eng, b)


# -- Optuna ----------------------------------------------------------------------------


def loss_metrics(task, i, *steps):
    attempt = next(a for j, a, _ in task.items if j == i)
    return (METRICS, task.id, i, attempt, [(s, {"loss": v}) for s, v in steps])


def test_to_optuna_makes_complete_pruned_and_failed_trials():
    optuna = pytest.importorskip("optuna")
    prune = mapnb.MedianStopping("loss", grace=0, min_items=1)
    run, eng, b = scripted_sweep(
        Options(concurrency=4, min_success_ratio=0.5, prune=prune), x=[1, 2, 3, 4], y=[0.5]
    )
    (t0, r0), (t1, r1), (t2, r2), (t3, r3) = [b.next() for _ in range(4)]
    r0([(STARTED, t0.id, 0, 1, 0.0), loss_metrics(t0, 0, (0, 1.0)), ok(t0, 0, value={"loss": 1.0})])
    r0([(ENDED, t0.id, None, False)])
    r1([(STARTED, t1.id, 1, 1, 0.0), loss_metrics(t1, 1, (0, 3.0))])  # pruned: 3 > 1
    boom = ItemError("exception", "ValueError", "boom")
    r2([(FINISHED, t2.id, 2, 1, False, boom, 0.0, 0.0), (ENDED, t2.id, None, False)])
    r3([loss_metrics(t3, 3, (0, 0.6)), ok(t3, 3, value={"loss": 0.5}), (ENDED, t3.id, None, False)])
    assert eng.done.wait(10) and run.statuses[1] is Status.PRUNED
    study = run.to_optuna()
    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [S.COMPLETE, S.PRUNED, S.FAIL, S.COMPLETE]
    assert [t.value for t in trials] == [1.0, 3.0, None, 0.5]
    assert [t.intermediate_values for t in trials] == [{0: 1.0}, {0: 3.0}, {}, {0: 0.6}]
    assert trials[2].user_attrs["mapnb_error"] == "ValueError: boom"
    assert study.best_params == {"x": 4, "y": 0.5} and study.best_trial.user_attrs["mapnb_index"] == 3
    dist = study.best_trial.distributions
    assert dist["x"] == optuna.distributions.IntDistribution(1, 4)
    assert dist["y"] == optuna.distributions.FloatDistribution(0.5, 0.5)
    best = run.to_optuna(direction="maximize", study_name="mine")
    assert best.study_name == "mine" and best.best_params["x"] == 1


def test_to_optuna_on_a_real_sweep_that_grew():
    optuna = pytest.importorskip("optuna")
    run = mapnb.map_task(sweep_tasks.loss, concurrency=2).submit_product(
        lr=[0.01, 0.3], depth=[1, 2], seed=[0]
    )
    assert run.wait(120)
    run.extend(lr=[0.1])
    assert run.wait(120) and run.state == "succeeded"
    study = run.to_optuna("loss")
    assert len(study.trials) == 6 and study.user_attrs["mapnb_metric"] == "loss"
    assert study.best_params == {"lr": 0.1, "depth": 1, "seed": 0}
    assert study.best_trial.distributions["lr"] == optuna.distributions.FloatDistribution(0.01, 0.3)
    assert study.best_trial.intermediate_values == {
        0: pytest.approx(1.01),
        1: pytest.approx(0.51),
        2: pytest.approx(0.3433333),
    }


def test_to_optuna_says_what_is_wrong(monkeypatch):
    pytest.importorskip("optuna")
    run = mapnb.map_task(str, backend="sequential").submit(object=["a"])
    assert run.wait(60)
    with pytest.raises(InvalidMapError, match="no metric to use"):
        run.to_optuna()
    with pytest.raises(InvalidMapError, match="direction=...\\) must be 'minimize' or 'maximize'; got 'up'"):
        run.to_optuna("output", direction="up")
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'mapnb\[optuna\]'"):
        run.to_optuna()


def test_a_shown_grid_follows_a_done_sweep_that_grows(frontends):  # noqa: F811  (the fixture)
    run, backend = start(0, fn=lambda lr, depth: lr * depth, product={"lr": [1, 2], "depth": [2, 4]})
    grid = run._grid = LiveGrid(run, kind="anywidget")  # as showing it in a notebook does
    fe = grid_front(grid, frontends)
    while not run.done():
        play(backend, values=lambda i: i)
    assert grid.wait(10) and fe.statuses() == "ssss"
    until(lambda: grid._thread is None)  # the updater stops once a run ends ...
    assert run.extend(depth=[8]) == 2  # ... and follows it again when it grows
    while not run.done():
        play(backend, values=lambda i: i)
    until(lambda: grid._thread is None)  # its updater caught up and stopped: nobody flushes now
    until(lambda: fe.state["n"] == 6 and fe.statuses() == "ssssss" and fe.state["state"] == "succeeded")
    assert fe.state["sheet"]["x"]["labels"] == ["2", "4", "8"] and fe.state["sheet"]["cells"] == [
        0,
        1,
        4,
        2,
        3,
        5,
    ]
    assert fe.state["state"] == "succeeded" and fe.state["counts"]["succeeded"] == 6
