"""Intermediate metrics (mapnb.report) and pruning (map_task(prune=MedianStopping(...)))."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import mapnb
from mapnb.engine import Engine
from mapnb.events import ItemMetrics, RunStatus, Status
from mapnb.protocol import ENDED, FINISHED, METRICS, STARTED, Metrics

from . import report_tasks
from .test_engine import Scripted, make, ok, succeed_the_rest

# -- report(): its arguments, and outside an item ---------------------------------------


@pytest.mark.parametrize(
    "step, metrics, error, match",
    [
        (1.5, {"loss": 1.0}, TypeError, r"report\(step=1.5\): step must be an int, got float"),
        (True, {"loss": 1.0}, TypeError, r"step must be an int, got bool"),
        ("3", {"loss": 1.0}, TypeError, r"step must be an int, got str"),
        (-1, {"loss": 1.0}, ValueError, r"step must be >= 0"),
        (0, {}, TypeError, r"give at least one metric"),
        (0, {"loss": "0.5"}, TypeError, r"report\(step=0, loss='0.5'\): a metric must be a real number, got str"),
        (0, {"loss": None}, TypeError, r"loss=None\): a metric must be a real number, got NoneType"),
        (0, {"loss": [1.0]}, TypeError, r"got list"),
        (0, {"ok": True}, TypeError, r"ok=True\): a metric must be a real number, got bool"),
    ],
)
def test_report_rejects_bad_input_naming_the_value(step, metrics, error, match):
    with pytest.raises(error, match=match):
        mapnb.report(step, **metrics)


def test_report_outside_an_item_warns_and_does_nothing():
    with pytest.warns(RuntimeWarning, match="outside a map task's item"):
        mapnb.report(np.int64(2), loss=np.float32(0.5))  # NumPy numbers are numbers


def test_median_stopping_validates_its_arguments():
    with pytest.raises(mapnb.InvalidMapError, match=r"metric=\.\.\.\) must be a metric's name \(a str\); got 3"):
        mapnb.MedianStopping(3)  # type: ignore[arg-type]
    with pytest.raises(mapnb.InvalidMapError, match=r"mode=\.\.\.\) must be 'min' or 'max'; got 'minimize'"):
        mapnb.MedianStopping("loss", mode="minimize")
    with pytest.raises(mapnb.InvalidMapError, match=r"grace=\.\.\.\) must be an integer >= 0; got -1"):
        mapnb.MedianStopping("loss", grace=-1)
    with pytest.raises(mapnb.InvalidMapError, match=r"min_items=\.\.\.\) must be an integer >= 1; got 2.5"):
        mapnb.MedianStopping("loss", min_items=2.5)  # type: ignore[arg-type]
    with pytest.raises(mapnb.InvalidMapError, match=r"prune must be a mapnb.MedianStopping\(\.\.\.\) or None"):
        mapnb.map_task(abs, prune="median")  # type: ignore[arg-type]


def test_median_stopping_judges_against_the_median_of_the_others():
    rule = mapnb.MedianStopping("loss", mode="min", grace=2, min_items=3)
    assert rule.judge(1, 9.0, [1.0, 1.0, 1.0]) is None  # within grace
    assert rule.judge(2, 9.0, [1.0, 1.0]) is None  # too few others
    assert rule.judge(2, 9.0, [1.0, 2.0, 3.0]) == "pruned at step 2: loss 9 > median 2"
    assert rule.judge(2, 2.0, [1.0, 2.0, 3.0]) is None  # equal is not worse
    assert rule.judge(2, math.nan, [1.0, 2.0, 3.0]) == "pruned at step 2: loss is NaN (median 2)"
    assert rule.judge(2, 9.0, [1.0, 2.0, math.nan]) is None  # NaN others are not counted
    best = mapnb.MedianStopping("acc", mode="max", grace=0, min_items=1)
    assert best.judge(0, 0.1, [0.5]) == "pruned at step 0: acc 0.1 < median 0.5"
    assert best.judge(0, 0.9, [0.5]) is None


# -- the engine's decisions, with the scripted backend ------------------------------------


def metrics(task, i, *steps):
    attempt = next(a for j, a, _ in task.items if j == i)
    return (METRICS, task.id, i, attempt, [(s, {"loss": v}) for s, v in steps])


def started(task, i):
    return (STARTED, task.id, i, 1, time.monotonic())


def test_a_worse_item_is_pruned_its_task_killed_and_the_others_requeued_uncharged():
    b = Scripted()
    eng: Engine = make(8, b, per_item=5e-3, prune=mapnb.MedianStopping("loss", grace=1, min_items=2))
    task, report = b.next()
    assert [i for i, _, _ in task.items] == [0, 1, 2, 3]
    report([
        started(task, 0), metrics(task, 0, (0, 1.0), (1, 0.5)), ok(task, 0),
        started(task, 1), metrics(task, 1, (0, 1.0), (1, 0.4)), ok(task, 1),
        started(task, 2), metrics(task, 2, (0, 5.0)),  # step 0 < grace: not judged
    ])  # fmt: skip
    report([metrics(task, 2, (1, 0.9))])  # worse than the median of 0.5 and 0.4
    nxt, report2 = b.next()  # the pruned task's slot is free again
    assert task.id in b.killed
    v = eng.view
    assert v.status[2] is Status.PRUNED and v.outputs[2] is None and v.errors[2] is None
    assert v.pruned_why[2] == "pruned at step 1: loss 0.9 > median 0.45"
    assert v.attempts[2] == 1 and v.attempts[3] == 0  # item 3 never ran: uncharged
    assert 3 in [i for i, _, _ in nxt.items]
    report([metrics(task, 2, (2, 0.1)), ok(task, 2, value="late"), (ENDED, task.id, None, False)])  # ignored
    report2([ok(nxt, i) for i, _, _ in nxt.items] + [(ENDED, nxt.id, None, False)])
    succeed_the_rest(eng, b)
    assert v.outputs[2] is None and v.status[2] is Status.PRUNED
    assert v.last_metrics[2] == {"loss": 0.9} and [s for s, _ in v.metric_history(2)] == [0, 1]
    # min_success_ratio=1.0: a pruned item counts like a success
    assert v.lifecycle is RunStatus.SUCCEEDED and v.counts[Status.PRUNED] == 1 and v.succeeded() == 7


def test_no_pruning_before_min_items_others_reported_the_step():
    b = Scripted()
    eng = make(3, b, concurrency=3, prune=mapnb.MedianStopping("loss", grace=0, min_items=2))
    (t0, r0), (t1, r1), (t2, r2) = b.next(), b.next(), b.next()
    r0([started(t0, 0), metrics(t0, 0, (0, 1.0))])
    r1([started(t1, 1), metrics(t1, 1, (0, 9.0))])  # one other: not judged
    r2([started(t2, 2), metrics(t2, 2, (0, 5.0))])  # median of 1 and 9 is 5: not worse
    r1([metrics(t1, 1, (0, 9.5))])  # the same step again, now with two others: worse
    for t, r in ((t0, r0), (t1, r1), (t2, r2)):  # the pruned one's answer is ignored
        r([ok(t, t.items[0][0]), (ENDED, t.id, None, False)])
    assert eng.done.wait(10) and t1.id in b.killed
    assert eng.view.status == [Status.SUCCEEDED, Status.PRUNED, Status.SUCCEEDED]
    assert eng.view.last_metrics[1] == {"loss": 9.5}


def test_pruned_items_count_like_successes_for_min_success_ratio():
    """4 items, 3 needed: one pruned and one failed leave the run able to succeed (had the
    pruned item counted as a failure, the run would have aborted at the failure)."""
    b = Scripted()
    prune = mapnb.MedianStopping("loss", grace=0, min_items=1)
    eng = make(4, b, concurrency=4, min_success_ratio=0.75, prune=prune)
    (t0, r0), (t1, r1), (t2, r2), (t3, r3) = [b.next() for _ in range(4)]
    r0([started(t0, 0), metrics(t0, 0, (0, 1.0)), ok(t0, 0), (ENDED, t0.id, None, False)])
    r1([started(t1, 1), metrics(t1, 1, (0, 3.0))])  # pruned: 3 > 1
    boom = mapnb.ItemError("exception", "ValueError", "boom")
    r2([started(t2, 2), (FINISHED, t2.id, 2, 1, False, boom, 0.0, 0.0), (ENDED, t2.id, None, False)])
    r3([started(t3, 3), ok(t3, 3), (ENDED, t3.id, None, False)])
    assert eng.done.wait(10)
    v = eng.view
    assert list(v.status) == [Status.SUCCEEDED, Status.PRUNED, Status.FAILED, Status.SUCCEEDED]
    assert v.lifecycle is RunStatus.SUCCEEDED and t1.id in b.killed and t2.id not in b.killed


def test_the_metrics_record_travels_as_a_plain_tuple():
    import pickle

    rec = Metrics(3, 1, 2, [(0, {"loss": 1.0})])
    back = pickle.loads(pickle.dumps([rec]))[0]
    assert type(back) is tuple and back[0] == METRICS and mapnb.protocol.typed(back).steps == [(0, {"loss": 1.0})]


# -- real runs: the local pool and threads ------------------------------------------------

BACKENDS = ["local", "threads", "dask"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "dask":
        from .conftest import HAVE_DASK

        if not HAVE_DASK:
            pytest.skip("distributed is not installed")
        request.getfixturevalue("dask_client")  # the current client, which backend="dask" uses
    return request.param


def _until(cond, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.timeout(300)
def test_reported_metrics_stream_while_the_item_runs(backend, tmp_path):
    run = mapnb.map_task(report_tasks.report_then_wait, backend=backend, progress=False).submit(
        x=[4], folder=[str(tmp_path)]
    )
    try:
        assert _until(lambda: run.view.last_metrics[0] is not None)  # before the item can end
        assert run.view.status[0] is Status.RUNNING and run.view.last_metrics[0] == {"loss": 4.0, "acc": 0.5}
    finally:
        (tmp_path / "go").touch()
    assert run.wait(120) and run.state == "succeeded"
    hist = run.metrics(0)
    assert list(hist.columns) == ["step", "loss", "acc"] and hist["step"].tolist() == [0, 1]
    assert hist["loss"].tolist() == [4.0, 2.0] and hist["acc"].iloc[0] == 0.5 and math.isnan(hist["acc"].iloc[1])
    df = run.df
    assert df.loc[0, "loss"] == 2.0 and df.loc[0, "acc"] == 0.5  # the last value of each
    with pytest.raises(IndexError, match="item index 1 out of range"):
        run.metrics(1)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["local", "threads", "sequential"])
def test_a_tight_loop_of_reports_does_not_flood_the_caller(backend):
    batches: list[int] = []
    run = mapnb.map_task(report_tasks.tight_loop, backend=backend, progress=False).submit(n=[10_000])
    run.subscribe(lambda events: batches.extend(len(e.steps) for e in events if isinstance(e, ItemMetrics)))
    assert run.wait(120) and run.state == "succeeded"
    assert 1 <= len(batches) < 500  # batched at the outbox's cadence, not 10,000 records
    hist = run.metrics(0)
    assert len(hist) == 1000 and hist["step"].iloc[0] == 9000 and hist["step"].iloc[-1] == 9999
    assert run.df.loc[0, "loss"] == 1.0 / 10_000


@pytest.mark.timeout(300)
def test_a_sweep_where_half_the_items_are_pruned(backend, tmp_path):
    """Three good items (identical curves) and three bad ones; the bad ones are pruned at
    step 2 (grace) against the good ones' median; the run succeeds."""
    _sweep(backend, tmp_path)


@pytest.mark.timeout(300)
def test_a_sweep_on_the_sequential_backend_prunes_too(tmp_path):
    """Items run in the engine's thread: the pruned ones run to their end, their results
    are ignored, and the items of their task that ran after them still count."""
    _sweep("sequential", tmp_path)


def _sweep(backend: str, tmp_path) -> None:
    prune = mapnb.MedianStopping("loss", mode="min", grace=2, min_items=3)
    # concurrency 2: a bad item waiting for the good ones never holds the slot one needs
    mt = mapnb.map_task(report_tasks.train, backend=backend, concurrency=2, progress=False, prune=prune)
    quality = ["good"] * 3 + ["bad"] * 3
    run = mt.submit(quality=quality, lr=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], folder=[str(tmp_path)] * 6)
    assert run.wait(180)
    assert run.statuses == [Status.SUCCEEDED] * 3 + [Status.PRUNED] * 3
    assert run.state == "succeeded" and run.counts["pruned"] == 3 and run.exception() is None
    df = run.df
    assert df["output"].tolist()[:3] == [1.0] * 3 and df["output"].tolist()[3:] == [None] * 3
    assert df["status"].tolist()[3:] == ["pruned"] * 3
    assert df["error"].tolist()[3:] == ["pruned at step 2: loss 3.333 > median 0.3333"] * 3
    assert df["error"].tolist()[:3] == [None] * 3
    assert df["loss"].tolist() == [1 / 6] * 3 + [10 / 3] * 3  # the last value each reported (pruned: at step 2)
    assert df["metric.lr"].tolist() == df["lr"].tolist()  # a metric named like an input
    assert run.retry_failed() == 0  # pruned is not failed


# -- the grid: pruned status, the panel's metrics -------------------------------------------


def test_the_grid_shows_pruned_items_and_the_panels_metrics(tmp_path):
    from mapnb.jupyter.grid import CODES, COLORS, GLYPHS, TEXT_ON, GridModel, render_html, sparkline_svg
    from mapnb.jupyter.widget import _detail_html

    assert CODES[Status.PRUNED] == "p" and "pruned" in COLORS and "pruned" in TEXT_ON and GLYPHS["pruned"]
    prune = mapnb.MedianStopping("loss", grace=2, min_items=3)
    mt = mapnb.map_task(report_tasks.train, backend="threads", concurrency=3, progress=False, prune=prune)
    run = mt.submit(quality=["good"] * 3 + ["bad"], lr=[0.1, 0.2, 0.3, 0.4], folder=[str(tmp_path)] * 4)
    assert run.wait(180) and run.statuses[3] is Status.PRUNED
    model = GridModel(run)
    first = model.changes()
    assert first["statuses"].endswith("p") and first["counts"]["pruned"] == 1
    model.selected = 3
    d = model.changes()["detail"]
    assert d["status"] == "pruned" and d["pruned"].startswith("pruned at step 2: loss") and d["error"] == ""
    m = d["metrics"]
    assert m["chosen"] == "loss" and m["steps"] == 3 and [k for k, _ in m["last"]] == ["loss", "lr"]
    assert m["spark"].startswith("<svg") and "<polyline" in m["spark"] and "script" not in m["spark"]
    core = _detail_html(d)
    assert "<svg" in core and "pruned at step 2" in core and "metrics (last)" in core
    page = render_html(model.snapshot())
    assert "pruned 1" in page and COLORS["pruned"] in page
    assert sparkline_svg([]) == "" and sparkline_svg([(0, math.nan)]) == ""
    assert sparkline_svg([(s, float(s)) for s in range(5000)]).count(" ") < 400  # thinned to <= 200 points


def test_a_retried_item_starts_a_new_history_and_late_metrics_are_ignored():
    b = Scripted()
    eng = make(1, b, retries=1)
    task, report = b.next()
    boom = mapnb.ItemError("exception", "ValueError", "boom")
    report([started(task, 0), metrics(task, 0, (0, 1.0), (1, 0.9)), (FINISHED, task.id, 0, 1, False, boom, 0.0, 0.0)])
    report([(ENDED, task.id, None, False)])
    again, report2 = b.next()
    assert eng.view.metric_history(0) == [(0, {"loss": 1.0}), (1, {"loss": 0.9})]
    report([metrics(task, 0, (2, 0.8))])  # attempt 1 is settled: ignored
    report2([(METRICS, again.id, 0, 2, [(0, {"loss": 0.7, "acc": 0.1})]), (METRICS, again.id, 0, 2, [(0, {"acc": 0.2})])])
    report2([ok(again, 0), (ENDED, again.id, None, False)])
    assert eng.done.wait(10)
    assert eng.view.metric_history(0) == [(0, {"loss": 0.7, "acc": 0.2})]  # a step reported again: merged
    assert eng.view.last_metrics[0] == {"loss": 0.7, "acc": 0.2} and eng.view.metric_names == ["loss", "acc"]


def test_pruned_cells_in_the_static_picture_pass_aa_and_differ_beyond_hue():
    from mapnb.jupyter.grid import COLORS, TEXT_ON, contrast, render_html

    from .test_contrast import AA, parse

    assert contrast(parse(COLORS["pruned"])[:3], parse(TEXT_ON["pruned"])[:3]) >= AA
    sheet = {"y": {"name": "a", "labels": ["1", "2"]}, "x": {"name": "b", "labels": ["3"]}}
    snap = {"run_id": "r", "title": "t", "n": 2, "statuses": "ps", "state": "succeeded",
            "counts": {"succeeded": 1, "pruned": 1}, "elapsed": 1.0, "sheet": sheet,
            "heat_field": "", "heat": [], "heat_scale": {}}  # fmt: skip
    html = render_html(snap)
    assert f"background:{COLORS['pruned']};color:{TEXT_ON['pruned']}\">\u2702 pruned 1" in html  # the chip
    assert ">\u2702</td>" in html  # the sheet's cell carries the glyph
    plain = render_html({**snap, "sheet": {}})
    assert "box-shadow:inset 0 -4px 0" in plain  # a square: a cut across it


def test_a_failed_runs_error_counts_the_pruned_items():
    b = Scripted()
    eng = make(3, b, concurrency=3, min_success_ratio=1.0, prune=mapnb.MedianStopping("loss", grace=0, min_items=1))
    (t0, r0), (t1, r1), (t2, r2) = b.next(), b.next(), b.next()
    r0([started(t0, 0), metrics(t0, 0, (0, 1.0)), ok(t0, 0), (ENDED, t0.id, None, False)])
    r1([started(t1, 1), metrics(t1, 1, (0, 3.0))])  # pruned
    boom = mapnb.ItemError("exception", "ValueError", "boom")
    r2([started(t2, 2), (FINISHED, t2.id, 2, 1, False, boom, 0.0, 0.0), (ENDED, t2.id, None, False)])
    assert eng.done.wait(10) and eng.view.lifecycle is RunStatus.FAILED
    from mapnb.run import MapRun

    err = MapRun(eng, "train").exception()
    assert err is not None and "1 of 3 items succeeded (+1 pruned, which count), 3 needed" in str(err)
