"""What crosses to other processes: plain pickle where it is enough, cloudpickle where not."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import cloudpickle
import pytest

from mapnb import _pickling
from mapnb._pickling import Rows


def test_plain_data_is_pickled_by_the_standard_pickler():
    blob = _pickling.dumps([(1, "a"), (2, None)])
    assert blob == pickle.dumps([(1, "a"), (2, None)], protocol=5)


def test_a_lambda_and_a_local_class_go_by_value():
    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

    out = pickle.loads(_pickling.dumps((lambda y: y + 1, Local(3))))
    assert out[0](1) == 2 and out[1].v == 3


def test_what_is_defined_in_main_travels_by_value_to_another_process():
    # A class defined in a script (or a notebook) is not importable by another process:
    # the standard pickler would write "__main__.Point" and the load there would fail.
    script = textwrap.dedent(
        """
        import sys
        from mapnb import _pickling

        class Point:
            def __init__(self, x):
                self.x = x

        sys.stdout.buffer.write(_pickling.dumps([Point(7)]))
        """
    )
    blob = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    assert pickle.loads(blob)[0].x == 7


def test_a_module_registered_by_value_is_honoured():
    from tests import tasks

    by_reference = pickle.dumps(tasks.counted, protocol=5)  # the module's name and the function's
    cloudpickle.register_pickle_by_value(tasks)
    try:
        blob = _pickling.dumps(tasks.counted)
    finally:
        cloudpickle.unregister_pickle_by_value(tasks)
    assert len(blob) > 5 * len(by_reference)  # its code went too
    assert _pickling.dumps(tasks.counted) == by_reference


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [(1, "a", (1, 2)), (2, "b", (3, 4))],
        [(1, 2), (3,)],  # unequal: zip would cut them, so the plain list goes
        [[1], [2]],  # not tuples
        [(None,)] * 3,
        [(i, float(i)) for i in range(1000)],
    ],
)
def test_rows_load_as_the_same_list_of_tuples(rows):
    out = pickle.loads(pickle.dumps(Rows(rows), protocol=5))
    assert type(out) is list and out == list(rows)


def test_rows_are_smaller_and_pickled_without_a_memo_entry_per_row():
    rows = [(i,) for i in range(10_000)]
    assert len(pickle.dumps(Rows(rows), protocol=5)) < len(pickle.dumps(rows, protocol=5)) * 0.8
