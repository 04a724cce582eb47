"""Bad input gets a clear error before anything starts, naming the problem."""

from __future__ import annotations

import datetime
import functools
import itertools
import time

import numpy as np
import pandas as pd
import pytest

import mapnb
from mapnb import InvalidMapError, map_task, task

from . import tasks


def raises(match: str):
    return pytest.raises(InvalidMapError, match=match)


def test_lists_of_different_lengths_name_each_parameter():
    with raises(r"a has 2 items, b has 3 items"):
        map_task(tasks.add)(a=[1, 2], b=[1, 2, 3])


def test_unknown_parameter_lists_the_known_ones():
    with raises(r"double has no parameter 'y'; its parameters are x"):
        map_task(tasks.double)(y=[1])


def test_missing_parameter():
    with raises(r"add needs 'a'"):
        map_task(tasks.add)(b=[1])


def test_no_lists_at_all():
    with raises(r"no inputs"):
        map_task(tasks.double)()


def test_positional_lists_are_refused():
    with raises(r"by keyword"):
        map_task(tasks.double)([1, 2])


def test_partial_bound_and_mapped():
    with raises(r"'b' is fixed by functools.partial"):
        map_task(functools.partial(tasks.add, b=1))(a=[1], b=[2])


@pytest.mark.parametrize(
    "value, match",
    [
        (5, r"x= must be a finite iterable .* got int 5"),
        ("abc", r"x= got str 'abc', which is not a list of inputs; pass a list"),
        ({"a": 1}, r"x=list\(d.values\(\)\)"),
        ({1, 2}, r"sets have no order"),
        (np.array(3), r"x= could not be iterated"),
        (pd.DataFrame({"a": [1]}), r"pass a column"),
    ],
)
def test_non_lists_are_refused(value, match):
    with raises(match):
        map_task(tasks.double)(x=value)


def test_iterables_of_every_kind_work():
    mt = map_task(tasks.double, backend="sequential")
    assert mt(x=range(3))["output"].tolist() == [0, 2, 4]
    assert mt(x=(i for i in range(2)))["output"].tolist() == [0, 2]  # generators are materialised
    assert mt(x=np.arange(2))["output"].tolist() == [0, 2]
    assert mt(x=pd.Series([5, 6]))["output"].tolist() == [10, 12]
    assert mt(x=(1,))["output"].tolist() == [2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"concurrency": 0}, r"concurrency must be an integer >= 1 or None; got int 0"),
        ({"concurrency": 1.5}, r"concurrency must be an integer"),
        ({"concurrency": True}, r"concurrency must be an integer"),
        ({"min_success_ratio": 1.5}, r"min_success_ratio must be a number between 0 and 1; got float 1.5"),
        ({"min_success_ratio": -0.1}, r"min_success_ratio"),
        ({"retries": -1}, r"retries must be an integer >= 0; got int -1"),
        ({"timeout": -1}, r"timeout must be a number of seconds > 0 or None; got int -1"),
        ({"timeout": 0}, r"timeout must be"),
        ({"backend": "nope"}, r"backend must be one of 'dask', 'flyte', 'local', 'sequential', 'threads'.*got 'nope'"),
        ({"progress": "yes"}, r"progress must be True, False or None"),
    ],
)
def test_bad_options_fail_when_the_map_task_is_made(kwargs, match):
    with raises(match):
        map_task(tasks.double, **kwargs)


def test_task_validates_too():
    with raises(r"retries must be an integer >= 0"):
        task(retries=-2)
    with raises(r"timeout must be"):
        task(timeout="soon")
    with raises(r"needs a function"):
        map_task(42)


def test_timedelta_timeouts():
    t = task(timeout=datetime.timedelta(seconds=90))(tasks.double)
    assert t.timeout == 90.0
    assert map_task(t).options.timeout == 90.0
    assert map_task(tasks.double, timeout=datetime.timedelta(minutes=1)).options.timeout == 60.0


def test_errors_are_value_errors_too():
    with pytest.raises(ValueError):
        map_task(tasks.double, concurrency=-1)
    assert issubclass(InvalidMapError, mapnb.MapnbError)


class _HugeRepr:
    """A callable object whose repr is thousands of characters (a model, a Flyte 2 task)."""

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name

    def __repr__(self) -> str:
        return "HugeRepr(" + "weights " * 1000 + ")"

    def __call__(self, x: int) -> int:
        raise ValueError("bad item")


@pytest.mark.parametrize(
    "fn, start",
    [(_HugeRepr(), "HugeRepr(weights weights"), (_HugeRepr("train_model"), "train_model: 0 of 1")],
)
def test_failure_headline_names_the_task_shortly(fn, start):
    with pytest.raises(mapnb.MapTaskError) as info:
        map_task(fn, backend="sequential", progress=False)(x=[1])
    headline = str(info.value).splitlines()[0]
    assert headline.startswith(start) and len(headline) < 160, headline
    assert len(info.value.run.name) <= 60


def test_task_names_are_qualified_and_short():
    from mapnb.spec import function_name

    assert function_name(str.upper) == "str.upper"
    assert function_name(lambda x: x) == "<lambda>"  # not test_task_names_....<locals>.<lambda>
    assert function_name(functools.partial(mapnb.task(tasks.add), b=1)) == "add"
    with raises(r"map_task needs a function; got list \[0, 0, .*\.\.\.$"):
        map_task([0] * 10_000)


def test_failure_headline_cuts_long_inputs():
    with pytest.raises(mapnb.MapTaskError) as info:
        map_task(tasks.fail_on, backend="sequential", progress=False)(x=[2], bad=[(2,) * 5000])
    assert len(str(info.value).splitlines()[1]) < 300


@pytest.mark.parametrize(
    "endless", [itertools.count(), itertools.cycle([1, 2]), itertools.repeat(7)], ids=repr
)
def test_endless_iterators_are_refused_before_anything_is_taken(endless):
    with raises(r"^x= got .* which never ends; pass a finite list"):
        map_task(tasks.double)(x=endless)


def test_repeat_with_times_is_finite():
    df = map_task(tasks.double, backend="sequential", progress=False)(x=itertools.repeat(4, 3))
    assert list(df["output"]) == [8, 8, 8]


def test_inputs_are_bounded_by_mapnb_max_items(monkeypatch):
    monkeypatch.setenv("MAPNB_MAX_ITEMS", "1000")
    taken = []

    def endless():  # an unknown endless generator: taken one past the bound, then refused
        n = 0
        while True:
            taken.append(n)
            yield n
            n += 1

    with raises(r"^x= has more than 1,000 items \(it may never end\); a run maps at most 1,000"):
        map_task(tasks.double)(x=endless())
    assert len(taken) == 1001
    with raises(r"^x= has 1,000,000,000,000 items; .*MAPNB_MAX_ITEMS"):  # sized: not even iterated
        map_task(tasks.double)(x=range(10**12))
    with raises(r"the product of a, b has 100 x 100 = 10,000 items"):
        map_task(tasks.add).product(a=range(100), b=range(100))
    assert len(map_task(tasks.double, backend="sequential", progress=False)(x=range(1000))) == 1000


def test_a_bad_mapnb_max_items_is_named(monkeypatch):
    monkeypatch.setenv("MAPNB_MAX_ITEMS", "lots")
    with raises(r"MAPNB_MAX_ITEMS must be a whole number >= 1; got 'lots'"):
        map_task(tasks.double)(x=[1])


def _yields(x: int):
    yield x


async def _async_yields(x: int):
    yield x


class _YieldingCallable:
    def __call__(self, x: int):
        yield x


@pytest.mark.parametrize(
    "fn, kind",
    [
        (_yields, "a generator"),
        (_async_yields, "an async generator"),
        (functools.partial(task(retries=1)(_yields)), "a generator"),
        (_YieldingCallable(), "a generator"),
    ],
)
def test_generator_functions_are_refused_before_anything_runs(fn, kind):
    with raises(rf"is {kind} function \(it yields\); an item must return its output: return a list"):
        map_task(fn)


def sequential(fn, **kw):
    return map_task(fn, backend="sequential", progress=False, **kw)


def test_positional_only_parameters_are_mapped_by_name():
    assert list(sequential(len)(obj=["ab", [1, 2, 3]])["output"]) == [2, 3]
    assert list(sequential(divmod)(y=[3, 4], x=[10, 10])["output"]) == [(3, 1), (2, 2)]
    assert list(sequential(functools.partial(divmod, 10))(y=[3])["output"]) == [(3, 1)]
    with raises(r"divmod has no parameter 'a'; its parameters are x \(positional-only\), y \(positional-only\)"):
        sequential(divmod)(a=[1], x=[1], y=[1])
    with raises(r"divmod needs 'y'"):
        sequential(divmod)(x=[1])


def _with_recover(x: int, recover: str) -> str:
    return f"{x}:{recover}"


def test_self_and_recover_can_be_mapped():
    # The docstring's own example: `self` is str.upper's parameter, not MapTask's.
    assert list(sequential(str.upper)(self=["a", "b"])["output"]) == ["A", "B"]
    assert list(sequential(str.upper).product(self=["a"])["output"]) == ["A"]
    assert list(sequential(str.upper).submit(self=["c"]).result()["output"]) == ["C"]
    # A task with a `recover` parameter maps it; mapnb's recover= is for other tasks.
    assert list(sequential(_with_recover).submit(x=[1], recover=["r"]).result()["output"]) == ["1:r"]
    assert list(sequential(_with_recover).submit_product(x=[1], recover=["s"]).result()["output"]) == ["1:s"]
    with raises(r"recover must be a run id"):
        sequential(tasks.double).submit(x=[1], recover=5)


def _fails_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    if x >= 4:
        time.sleep(60)  # still running when 1 and 3 have failed: the abort stops it
    return x


def test_min_successes_names_itself_where_the_run_says_what_was_needed():
    """A count set with min_successes is what the failure headline and the abort reason
    name, not min_success_ratio."""
    mt = map_task(_fails_odd, min_successes=5, progress=False)
    run = mt.submit(x=range(6))  # once 1 and 3 failed, 5 successes are out of reach
    run.wait()
    assert run.state == "failed"
    with pytest.raises(mapnb.MapTaskError, match=r"5 needed \(min_successes\)"):
        run.result()
    reasons = [e.message for e in run.errors if e is not None and e.kind == "aborted"]
    assert reasons and all("min_successes can no longer be met" in r for r in reasons)
