"""Steering a sweep: selection, re-running and cancelling a subset, growing a sweep,
and handing it to Optuna. Engine-level tests use the scripted backend of test_engine
(no processes, no sleeps); the others run on the real local pool."""

from __future__ import annotations

import threading

import pytest

from mapnb.backends.base import Job
from mapnb.engine import Engine
from mapnb.run import MapRun
from mapnb.spec import Options

from .test_engine import Scripted, succeed_the_rest


def scripted_run(n: int, **kw: object) -> tuple[MapRun, Engine, Scripted]:
    b = Scripted()
    opts = Options(**(dict(concurrency=1, min_success_ratio=1.0, retries=0, timeout=None) | kw))
    eng = Engine(run_id="t", job=Job("t", abs, ("x",)), inputs=[(i,) for i in range(n)], backend=b, options=opts)
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
