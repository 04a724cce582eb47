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
    assert a != [0, 3]


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
