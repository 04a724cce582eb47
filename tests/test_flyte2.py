"""Flyte 2 (the ``flyte`` SDK) tasks in mapnb: map_task of @env.task, and mapnb.flyte.map,
against Flyte 2's own local runs of the same task objects."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import pathlib
import subprocess
import sys

import pytest

flyte = pytest.importorskip("flyte")

import mapnb  # noqa: E402
from mapnb.errors import InvalidMapError, MapTaskError, RemoteError  # noqa: E402
from mapnb.resources import Resources  # noqa: E402
from tests import flyte2_tasks as ft  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _shown(r: object) -> str:
    return ft._shown(r)


# -- mapnb.map_task(env_task) ----------------------------------------------------------


def test_a_sync_task_maps_with_its_short_name():
    mt = mapnb.map_task(ft.square, progress=False)
    assert mt.name == "square"
    assert mt(x=[1, 2, 3])["output"].tolist() == [1, 4, 9]
    assert mapnb.map_task(ft.short).name == "sq"  # short_name= wins, as in Flyte's UI


def test_an_async_task_runs_to_completion_on_every_backend(backend):
    df = mapnb.map_task(ft.add, backend=backend, progress=False)(x=[1, 2], y=[10, 20])
    assert df["output"].tolist() == [11, 22]
    df = mapnb.map_task(ft.async_fails_on_two, backend=backend, min_success_ratio=0, progress=False)(x=[1, 2])
    assert df["status"].tolist() == ["succeeded", "failed"]
    assert df.loc[1, "error"] == "ValueError: two is not allowed: 2"


def test_the_traceback_starts_in_the_tasks_function():
    run = mapnb.map_task(ft.fails_on_two, backend="threads", min_success_ratio=0, progress=False).submit(
        x=[2]
    )
    run.wait(60)
    tb = run.errors[0].traceback.splitlines()
    assert tb[1].strip().startswith('File "') and tb[1].endswith("in fails_on_two")
    assert "_task.py" not in run.errors[0].traceback  # none of flyte's plumbing


def test_an_item_is_a_call_outside_a_flyte_run_with_mapnbs_context():
    df = mapnb.map_task(ft.where_am_i, backend="threads", progress=False)(x=[5, 6])
    assert df["output"].tolist() == ["0 1 False", "1 1 False"]


def test_bound_inputs_by_partial_positional_or_keyword():
    assert mapnb.map_task(functools.partial(ft.mul, y=3), progress=False)(x=[1, 2])["output"].tolist() == [
        3,
        6,
    ]
    assert mapnb.map_task(functools.partial(ft.mul, 5), progress=False)(y=[1, 2])["output"].tolist() == [
        5,
        10,
    ]
    with pytest.raises(InvalidMapError, match="has no input 'z'; its inputs are x, y"):
        mapnb.map_task(functools.partial(ft.mul, z=1))


@pytest.mark.parametrize("t", [ft.fails_first_attempt, ft.async_fails_first_attempt])
def test_the_tasks_retries_are_honoured(t, tmp_path):
    mt = mapnb.map_task(functools.partial(t, marks=str(tmp_path)), progress=False)
    assert mt.options.retries == (2 if t is ft.fails_first_attempt else 1)
    df = mt(x=[1, 2])
    assert df["output"].tolist() == [1, 2] and df["attempts"].tolist() == [2, 2]
    # An explicit mapnb argument wins over the task's.
    with pytest.raises(MapTaskError, match="first attempt fails"):
        mapnb.map_task(functools.partial(t, marks=str(tmp_path)), retries=0, progress=False)(x=[3])


def test_a_non_recoverable_error_is_not_retried_as_in_flyte():
    df = mapnb.map_task(ft.gives_up, backend="threads", min_success_ratio=0, progress=False)(x=[1])
    assert df["attempts"].tolist() == [1] and df["status"].tolist() == ["failed"]
    assert df.loc[0, "error"] == "NonRecoverableError: no point retrying 1"


@pytest.mark.parametrize("t", [ft.hangs, ft.async_hangs])
def test_the_tasks_timeout_is_honoured(t):
    mt = mapnb.map_task(t, min_success_ratio=0.5, progress=False)
    assert mt.options.timeout == 2.0
    df = mt(x=[0, 1])
    assert df["status"].tolist() == ["succeeded", "failed"]
    assert df.loc[1, "error"].startswith("TimeoutError: attempt 1 ran longer than timeout=2s")


def test_settings_mapnb_cannot_honour_are_said(recwarn):
    env = flyte.TaskEnvironment(name="mapnb_tests_warned")

    @env.task(
        retries=flyte.RetryStrategy(count=1, backoff=flyte.Backoff(base=__import__("datetime").timedelta(1))),
        timeout=flyte.Timeout(max_runtime=5, deadline=60),
        cache=flyte.Cache(behavior="auto", max_age=3600),
    )
    def f(x: int) -> int:
        return x

    mt = mapnb.map_task(f)
    assert mt.options.retries == 1 and mt.options.timeout == 5.0 and mt.cache.enabled
    said = " ".join(str(w.message) for w in recwarn.list)
    for what in ("backoff=", "deadline=", "max_age="):
        assert what in said


def test_the_tasks_cache_is_honoured_per_item(tmp_path):
    log = tmp_path / "ran.log"
    mt = mapnb.map_task(functools.partial(ft.counted, log=str(log)), backend="threads", progress=False)
    assert mt.cache.enabled
    first = mt(x=[1, 2, 3])
    again = mt(x=[1, 2, 3, 4])  # one item more: only it runs
    assert again["status"].tolist() == ["cached"] * 3 + ["succeeded"]
    assert again["output"].tolist() == [3, 6, 9, 12] and first["output"].tolist() == [3, 6, 9]
    assert sorted(log.read_text().split()) == ["1", "2", "3", "4"]


def test_the_cache_version_is_flytes_own():
    from flyte._cache.cache import VersionParameters

    auto = mapnb.map_task(ft.counted).cache
    assert auto.version == ft.counted.cache.get_version(VersionParameters(func=ft.counted.func))
    pinned = mapnb.map_task(ft.counted_v1).cache
    assert (pinned.version, pinned.serialize, pinned.ignore) == ("v1", True, ("log",))
    assert not mapnb.map_task(ft.square).cache.enabled  # Flyte 2's default: "disable"


def test_an_override_version_and_ignored_inputs_share_entries_across_logs(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    mapnb.map_task(functools.partial(ft.counted_v1, log=str(a)), progress=False)(x=[1, 2])
    df = mapnb.map_task(functools.partial(ft.counted_v1, log=str(b)), progress=False)(x=[1, 2])
    assert df["status"].tolist() == ["cached", "cached"] and not b.exists()


def test_the_environments_cache_and_resources_apply():
    mt = mapnb.map_task(ft.from_cached_env)
    assert mt.cache.enabled
    # A (request, limit) pair is both; a single value the request, as Flyte serialises them.
    assert mt.requests == Resources(cpu=1, mem="100Mi") and mt.limits == Resources(cpu=2)


@pytest.mark.parametrize(
    "target, message",
    [
        (ft.env, "'mapnb_tests' is a flyte.TaskEnvironment; pass one of its tasks"),
        (
            functools.partial(ft.mul, 1, 2, 3),
            "binds 3 positional inputs of mapnb_tests.mul, which has 2 left",
        ),
    ],
)
def test_what_mapnb_cannot_run_is_refused_before_anything_runs(target, message):
    with pytest.raises(InvalidMapError, match=message):
        mapnb.map_task(target)


def test_mapnb_and_its_workers_import_flyte_only_for_a_flyte_task():
    code = (
        "import sys, mapnb, mapnb.flyte\n"
        "mapnb.flyte.map\n"
        "df = mapnb.map_task(lambda x: 'flyte' in sys.modules, progress=False)(x=[1])\n"
        "print(df['output'].tolist(), 'flyte' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[False] False"


# -- mapnb.flyte.map: flyte.map, in parallel -------------------------------------------


@pytest.fixture(scope="module")
def flyte_local():
    """Flyte 2's own local run of parents that call flyte.map on the same tasks
    (tests/flyte2_tasks.py), in a process of its own: flyte.init() sets global state."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", "from tests.flyte2_tasks import flyte_local_results; flyte_local_results()"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULTS ")]
    assert line, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(line[0][len("RESULTS ") :])


@pytest.mark.timeout(360)  # the first one waits for Flyte's own run too
def test_map_gives_what_flytes_own_local_map_gives(flyte_local):
    """Ordering, return_exceptions (a RuntimeUserError whose code is the type), zip to the
    shortest, partials and iterators: as the same parent does under flyte.run."""
    m = mapnb.flyte.map
    ours = [_shown(r) for r in m(ft.square, range(6))]
    ours += [_shown(r) for r in m(ft.fails_on_two, range(4))]
    with pytest.warns(UserWarning, match=r"different lengths \(5, 3\).*stops at the shortest \(3 items\)"):
        ours += [_shown(r) for r in m(ft.mul, range(5), [10, 20, 30])]
    ours += [_shown(r) for r in m(functools.partial(ft.mul, y=7), [1, 2, 3])]
    ours += [_shown(r) for r in m(ft.mul, [1, 2], iter([5, 6, 7]), concurrency=1)]
    assert ours == flyte_local["map"]


@pytest.mark.timeout(360)  # the first one waits for Flyte's own run too
def test_map_without_return_exceptions_raises_as_flyte_does(flyte_local):
    seen = []
    with pytest.raises(flyte.errors.RuntimeUserError) as info:
        for r in mapnb.flyte.map(ft.fails_on_two, range(4), return_exceptions=False):
            seen.append(_shown(r))
    seen.append("raised " + _shown(info.value))
    assert seen == flyte_local["raising"]
    # The item's own traceback is the cause; the run stopped with it.
    assert isinstance(info.value.__cause__, RemoteError)
    assert "in fails_on_two" in str(info.value.__cause__)
    assert info.value.code == "ValueError"
    assert mapnb.last_run().done()


@pytest.mark.timeout(360)  # the first one waits for Flyte's own run too
def test_map_aio_gives_what_flytes_own_aio_gives(flyte_local):
    async def main():
        out = [_shown(r) async for r in mapnb.flyte.map.aio(ft.add, range(5), [100] * 5)]
        out += [_shown(r) async for r in mapnb.flyte.map.aio(ft.async_fails_on_two, range(4))]
        return out

    assert asyncio.run(main()) == flyte_local["aio"]


@pytest.mark.parametrize("t", [ft.rendezvous, ft.async_rendezvous])
def test_map_runs_items_at_the_same_time_on_the_local_pool(t, tmp_path):
    """Each item waits until every item has started: sequential items would time out.
    The items' own clocks show them overlapping."""
    times = list(mapnb.flyte.map(functools.partial(t, folder=str(tmp_path), n=2), [0, 1], concurrency=2))
    assert not any(isinstance(r, BaseException) for r in times), times
    (s0, e0), (s1, e1) = times
    assert max(s0, s1) < min(e0, e1)
    assert mapnb.last_run().statuses == [mapnb.Status.SUCCEEDED] * 2


def test_map_aio_runs_items_at_the_same_time_and_leaves_the_loop_free(tmp_path):
    """The items finish only once a coroutine of the caller's event loop has seen all three
    arrive and arrived itself: so the loop ran while the async for waited."""

    async def arrive_last():
        while len(list(tmp_path.iterdir())) < 3:
            await asyncio.sleep(0.02)
        (tmp_path / "loop").write_text("")

    async def main():
        last = asyncio.create_task(arrive_last())
        part = functools.partial(ft.async_rendezvous, folder=str(tmp_path), n=4)
        out = [r async for r in mapnb.flyte.map.aio(part, range(3), concurrency=3, backend="threads")]
        await last
        return out

    times = asyncio.run(main())
    assert not any(isinstance(r, BaseException) for r in times), times
    assert max(s for s, _ in times) < min(e for _, e in times)


def test_map_retries_and_caches_as_the_task_says(tmp_path):
    part = functools.partial(ft.fails_first_attempt, marks=str(tmp_path))
    assert list(mapnb.flyte.map(part, [1, 2], backend="threads")) == [1, 2]
    assert mapnb.last_run().attempts == [2, 2]
    log = tmp_path / "log"
    list(mapnb.flyte.map(functools.partial(ft.counted, log=str(log)), [5, 6], backend="threads"))
    assert list(mapnb.flyte.map(functools.partial(ft.counted, log=str(log)), [5, 6, 7])) == [15, 18, 21]
    assert mapnb.last_run().statuses[:2] == [mapnb.Status.CACHED] * 2
    assert sorted(log.read_text().split()) == ["5", "6", "7"]


def test_a_timeout_is_flytes_max_runtime_error():
    out = list(mapnb.flyte.map(ft.hangs, [0, 1], backend="threads"))
    assert out[0] == 0 and isinstance(out[1], flyte.errors.MaxRuntimeExceededError)
    assert "ran longer than timeout=2s" in str(out[1])


def test_map_starts_at_the_first_next_and_an_early_exit_cancels_the_rest():
    before = mapnb.last_run()
    results = mapnb.flyte.map(ft.first_quick, [0, 1, 2], concurrency=3)
    assert mapnb.last_run() is before  # nothing runs yet, as with flyte.map's generator
    assert next(results) == 0
    run = mapnb.last_run()
    assert run is not before and not run.done()
    results.close()  # leaving the loop early: what still runs is cancelled
    assert run.state == "cancelled"
    assert run.statuses[0] is mapnb.Status.SUCCEEDED
    assert list(mapnb.flyte.map(ft.square, [])) == [] and list(mapnb.flyte.map(ft.square)) == []


def test_min_success_ratio_stops_the_map_when_it_cannot_be_reached():
    got = []
    with pytest.raises(MapTaskError, match="2 of 4 items succeeded, 4 needed"):
        for r in mapnb.flyte.map(ft.fails_on_two, range(4), min_success_ratio=1.0, backend="sequential"):
            got.append(_shown(r))
    assert got == ["0", "10", "RuntimeUserError(ValueError: two is not allowed: 2)"]
    # Reachable: every item's result, failures in place.
    out = list(mapnb.flyte.map(ft.fails_on_two, range(4), min_success_ratio=0.5, backend="threads"))
    assert [_shown(r) for r in out][1:] == ["10", "RuntimeUserError(ValueError: two is not allowed: 2)", "30"]


def test_map_takes_plain_functions_and_the_run_is_named_after_the_task():
    assert list(mapnb.flyte.map(lambda a, b: a + b, [1, 2], itertools.repeat(10))) == [11, 12]
    list(mapnb.flyte.map(ft.short, [1]))
    assert mapnb.last_run().name == "sq"
    list(mapnb.flyte.map(ft.square, [1], group_name="squares"))
    assert mapnb.last_run().name == "squares"


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((ft.square, [1]), {"concurrency": -1}, "concurrency must be an integer >= 0"),
        ((ft.square, [1]), {"return_exceptions": "yes"}, "return_exceptions must be True or False"),
        ((ft.square, [1]), {"min_success_ratio": 2}, "min_success_ratio must be a number from 0 to 1"),
        ((ft.square, [1], [2]), {}, "map got 2 iterables for square, whose unbound inputs are x"),
        ((42, [1]), {}, "map needs a task or a function; got int 42"),
    ],
)
def test_map_says_what_is_wrong_when_called(args, kwargs, message):
    with pytest.raises(InvalidMapError, match=message):
        mapnb.flyte.map(*args, **kwargs)
    with pytest.raises(InvalidMapError, match=message):
        mapnb.flyte.map.aio(*args, **kwargs)


def test_the_magic_maps_a_flyte2_task_of_the_notebook_by_name():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "mapnb")
    shell.user_ns.update(mul=ft.mul)
    df = shell.run_line_magic("map_task", "--backend threads --task mul x=[1, 2] y=[3, 4]")
    assert df["output"].tolist() == [3, 8]
