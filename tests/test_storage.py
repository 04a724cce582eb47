"""A run's per-item storage: compact arrays that read like the lists they replaced."""

from __future__ import annotations

import math

from mapnb.backends.base import Job
from mapnb.backends.threads import ThreadBackend
from mapnb.engine import Engine
from mapnb.frame import build_frame
from mapnb.spec import Options
from mapnb.state import Ints, OptionalFloats

from . import tasks


def test_optional_floats_hold_none_as_nan_and_read_it_back_as_none():
    d = OptionalFloats(3)
    assert list(d) == [None, None, None] and d == [None, None, None] and len(d) == 3
    d[1] = 0.25
    d[2] = None
    assert d[1] == 0.25 and d[2] is None and d[-1] is None and d[0:2] == [None, 0.25]
    d.extend([1.5, None])
    d.append(None)
    assert d == [None, 0.25, None, 1.5, None, None]
    assert d.itemsize == 8 and math.isnan(d.tolist()[0])  # 8 bytes an item, NaN inside


def test_ints_grow_and_compare_like_lists():
    a = Ints(2)
    a[1] = 3
    a.extend([0, 7])
    assert a == [0, 3, 0, 7] and list(a) == [0, 3, 0, 7] and a.itemsize == 4
    assert a != [0, 3] and a != (0, 3, 0, 7)  # a list's equality, not a tuple's


def test_the_arrays_copy_as_themselves():
    import copy

    d = OptionalFloats(2)
    d[0] = 1.0
    for c in (copy.copy(d), copy.deepcopy(d)):
        assert type(c) is OptionalFloats and c == [1.0, None]
    a = Ints(1)
    assert type(copy.deepcopy(a)) is Ints and copy.copy(a) == [0]


def test_the_frame_reads_the_arrays():
    eng = Engine(
        run_id="t", job=Job("t", tasks.fail_on, ("x",)), inputs=[(1,), (2,), (3,)], backend=ThreadBackend(),
        options=Options(concurrency=1, min_success_ratio=0),
    )  # fmt: skip
    eng.start()
    assert eng.done.wait(60)
    df = build_frame(eng.view)
    assert df["status"].tolist() == ["succeeded", "failed", "succeeded"]
    assert str(df["attempts"].dtype) == "int64" and df["attempts"].tolist() == [1, 1, 1]
    assert str(df["duration_s"].dtype) == "float64" and not df["duration_s"].isna().any()
    assert df["error"][0] is None and "bad input 2" in df["error"][1]
    assert df["output"][0] == 1 and df["output"][1] is None


def test_the_journal_writes_succeeded_items_column_by_column_and_reads_them_back():
    import array
    import pickle

    from mapnb import journal
    from mapnb.state import RunState

    st = RunState(run_id="r", names=("x",), inputs=[(i,) for i in range(4)], backend="b", concurrency=1, need=0)
    st.outputs[:] = ["a", {"b": 2}, None, 3.5]
    st.attempts[:] = array.array("i", [1, 2, 1, 1])
    st.durations[0], st.durations[1], st.durations[3] = 0.5, 1.5, 2.5  # item 2's unknown
    blob = journal._dump_columns("r", st, array.array("q", [0, 1, 2, 3]))
    assert pickle.loads(blob)[0] == "cols"
    assert list(journal._records_of(pickle.loads(blob))) == [
        (0, "a", 1, 0.5), (1, {"b": 2}, 2, 1.5), (2, None, 1, None), (3, 3.5, 1, 2.5),
    ]  # fmt: skip
    one = journal._dump_columns("r", st, array.array("q", [1]))
    assert list(journal._records_of(pickle.loads(one))) == [(1, {"b": 2}, 2, 1.5)]
    old = pickle.dumps([(0, "a", 1, 0.5)])  # a row of records, as earlier versions wrote them
    assert journal._records_of(pickle.loads(old)) == [(0, "a", 1, 0.5)]


def test_an_output_that_cannot_be_pickled_leaves_only_itself_out_of_the_journal():
    import array
    import pickle
    import threading

    from mapnb import journal
    from mapnb.state import RunState

    st = RunState(run_id="r", names=("x",), inputs=[(0,), (1,)], backend="b", concurrency=1, need=0)
    st.outputs[:] = [threading.Lock(), 7]
    st.attempts[:] = array.array("i", [1, 1])
    blob = journal._dump_columns("r", st, array.array("q", [0, 1]))
    assert list(journal._records_of(pickle.loads(blob))) == [(1, 7, 1, None)]


def test_large_number_columns_keep_the_dtypes_pandas_would_infer():
    import pandas as pd

    from mapnb.frame import _plain

    for values in ([1, 2] * 600, [0.5, 1.0] * 600, [True, False] * 600, [2**70, 1] * 600, [1, 1.5] * 600):
        assert pd.Series(_plain(values)).dtype == pd.Series(values).dtype, values[:2]
