"""flytekit 1.x tasks in mapnb.map_task: parallel, with their own settings, as Flyte runs them.

Real flytekit objects throughout (tests/flyte_tasks.py); several cases are flytekit's own
local map-task tests (test_array_node_map_task) and the flytesnacks checkpoint example,
with flytekit's expected values.
"""

from __future__ import annotations

import datetime
import functools
import os
import pathlib
import subprocess
import sys

import pytest

import mapnb
from mapnb import InvalidMapError, MapTaskError, Resources, Status

flytekit = pytest.importorskip("flytekit")

from . import flyte_tasks as ft  # noqa: E402  (needs flytekit)


@pytest.fixture(params=["fast", "full"])
def path(request, monkeypatch):
    """Either way an item of a simple-typed task can take (mapnb.flyte._fast): the fast
    path, or flytekit's full dispatch_execute (forced here). Runs on threads see it."""
    if request.param == "full":
        from mapnb.flyte import _fast

        monkeypatch.setattr(_fast, "plan_for", lambda t: None)
    return request.param


def _spans(outputs: list[str]) -> list[tuple[float, float]]:
    return [tuple(map(float, o.split())) for o in outputs]  # type: ignore[misc]


def test_items_of_a_flytekit_task_run_at_the_same_time_on_the_local_pool():
    """flytekit runs a map serially (3 x 1 s take 3 s); here the items overlap in time.

    Proven from when each item ran, not from the wall clock of the whole run, which a
    loaded machine stretches."""
    df = mapnb.map_task(ft.sleepy, concurrency=3, progress=False)(x=[1, 2, 3])
    spans = _spans(df["output"].tolist())
    # How many items were running at once, at the moment each one started.
    overlap = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert overlap >= 2, spans


def test_a_flytekit_map_task_object_runs_with_its_concurrency_and_bound_inputs():
    """Today's failure: every item failed with TypeTransformerFailedError ('...-arraynode')."""
    m = flytekit.map_task(functools.partial(ft.scale, factor=10), concurrency=2)
    mt = mapnb.map_task(m, backend="threads", progress=False)
    assert mt.options.concurrency == 2 and mt.name == "scale"
    assert mt(a=[1, 2, 3])["output"].tolist() == [10, 20, 30]
    # Explicit mapnb arguments win over the map's own.
    assert mapnb.map_task(m, concurrency=1, progress=False).options.concurrency == 1


def test_partials_as_in_flytekits_tests():
    """test_array_node_map_task: map_task(functools.partial(t1, b="hello"))."""
    expected = ["1hello", "2hello", "3hello"]
    p = functools.partial(ft.t1, b="hello")
    assert mapnb.map_task(p, backend="threads", progress=False)(a=[1, 2, 3])["output"].tolist() == expected
    m = flytekit.map_task(p)
    assert mapnb.map_task(m, backend="threads", progress=False)(a=[1, 2, 3])["output"].tolist() == expected
    bound = flytekit.map_task(ft.t1, bound_inputs_values={"b": "hello"})
    assert (
        mapnb.map_task(bound, backend="threads", progress=False)(a=[1, 2, 3])["output"].tolist() == expected
    )


def test_map_and_execution_as_in_flytekits_tests():
    """test_array_node_map_task's test_map and test_execution (a map of a map's outputs)."""
    mt = mapnb.map_task(flytekit.map_task(ft.say_hello), backend="threads", progress=False)
    assert mt(name=["abc", "def"])["output"].tolist() == ["hello abc!", "hello def!"]
    xs = mt(name=["earth", "mars"])["output"].tolist()
    assert mt(name=xs)["output"].tolist() == ["hello hello earth!!", "hello hello mars!!"]


def test_nested_partials_as_in_flytekits_tests():
    """test_inputs_outputs_length: partial(partial(many_inputs, c=1.0), b="hello")."""
    p2 = functools.partial(functools.partial(ft.many_inputs, c=1.0), b="hello")
    for target in (p2, flytekit.map_task(p2)):
        df = mapnb.map_task(target, backend="threads", progress=False)(a=[1, 2])
        assert df["output"].tolist() == ["1 - hello - 1.0", "2 - hello - 1.0"]
    with pytest.raises(InvalidMapError, match="'a' is fixed by functools.partial"):
        mapnb.map_task(functools.partial(p2, a=1))(a=[1, 2, 3])


@pytest.mark.parametrize(
    "min_success_ratio, should_raise_error",
    [(None, True), (1, True), (0.75, False), (0.5, False)],
)
def test_min_success_ratio_as_in_flytekits_tests(min_success_ratio, should_raise_error):
    """test_array_node_map_task: [1, None, 3, 4] unless the ratio asks for every item."""
    m = flytekit.map_task(ft.some_task1, min_success_ratio=min_success_ratio)
    mt = mapnb.map_task(m, backend="threads", progress=False)
    if should_raise_error:
        with pytest.raises(MapTaskError, match="Unexpected inputs: 2"):
            mt(inputs=[1, 2, 3, 4])
    else:
        assert mt(inputs=[1, 2, 3, 4])["output"].tolist() == [1, None, 3, 4]


def test_min_successes_of_a_flytekit_map_task():
    ok = mapnb.map_task(flytekit.map_task(ft.some_task1, min_successes=3), backend="threads", progress=False)
    assert ok(inputs=[1, 2, 3, 4])["output"].tolist() == [1, None, 3, 4]
    too_many = flytekit.map_task(ft.some_task1, min_successes=4)
    with pytest.raises(MapTaskError, match="of 4 items succeeded, 4 needed"):
        mapnb.map_task(too_many, backend="threads", progress=False)(inputs=[1, 2, 3, 4])
    # An explicit min_success_ratio wins over the map's min_successes.
    mt = mapnb.map_task(too_many, min_success_ratio=0.5, backend="threads", progress=False)
    assert mt(inputs=[1, 2, 3, 4])["status"].tolist() == ["succeeded", "failed", "succeeded", "succeeded"]


def test_a_wrong_element_type_fails_that_item_with_flytekits_message():
    df = mapnb.map_task(ft.scale, min_success_ratio=0.5, progress=False)(a=[1, "x", 3])
    assert df["status"].tolist() == ["succeeded", "failed", "succeeded"]
    assert df["output"].tolist() == [1, None, 3]
    assert df.loc[1, "error"].startswith("TypeTransformerFailedError: Failed to convert inputs of task")
    assert "Expected value of type <class 'int'> but got 'x'" in df.loc[1, "error"]


def test_a_bound_input_of_the_wrong_type_is_refused_before_anything_runs():
    """flytekit runs it (and fails every item); mapnb refuses it with flytekit's message."""
    with pytest.raises(InvalidMapError, match="bound input of .*scale has the wrong type.*factor"):
        mapnb.map_task(functools.partial(ft.scale, factor=[1, 2]))
    with pytest.raises(InvalidMapError, match="wrong type"):
        mapnb.map_task(flytekit.map_task(functools.partial(ft.scale, factor="ten")))


def test_the_error_column_and_map_task_error_show_flytekits_cause():
    """flytekit puts the cause on line 2 ("Error encountered while executing '...':" first)."""
    run = mapnb.map_task(ft.some_task1, progress=False).submit(inputs=[1, 2])
    with pytest.raises(MapTaskError) as info:
        run.result()
    assert "ValueError: Error encountered while executing 'tests.flyte_tasks.some_task1': " in str(info.value)
    assert "Unexpected inputs: 2" in str(info.value)
    assert run.df.loc[1, "error"].endswith("some_task1': Unexpected inputs: 2")
    # The item's traceback starts in the task's own code, not in flytekit's plumbing.
    tb = run.errors[1].traceback
    assert tb.splitlines()[1].strip().startswith('File "') and tb.splitlines()[1].endswith("in some_task1")


def test_the_tasks_own_exception_chain_is_kept():
    run = mapnb.map_task(ft.chained, backend="threads", progress=False).submit(x=[1])
    run.wait(60)
    tb = run.errors[0].traceback
    assert "KeyError: 'missing'" in tb and "direct cause" in tb and "RuntimeError: Error encountered" in tb


def test_the_tasks_retries_and_timeout_are_honoured():
    df = mapnb.map_task(ft.fails_first_attempt, progress=False)(x=[1, 2])
    assert df["output"].tolist() == [2, 2] and df["attempts"].tolist() == [2, 2]
    with pytest.raises(MapTaskError, match="first attempt fails"):
        mapnb.map_task(ft.fails_first_attempt, retries=0, progress=False)(x=[1])  # explicit wins
    mt = mapnb.map_task(ft.hangs, min_success_ratio=0.5, progress=False)
    assert mt.options.timeout == 2.0
    df = mt(x=[0, 1])
    assert df["status"].tolist() == ["succeeded", "failed"]
    assert df.loc[1, "error"].startswith("TimeoutError: attempt 1 ran longer than timeout=2s")


def test_flytesnacks_checkpoint_example_resumes_across_retries():
    """Each attempt fails a third of the way on; a retry resumes from the checkpoint."""
    df = mapnb.map_task(ft.use_checkpoint, progress=False)(n_iterations=[10, 10])
    assert df["output"].tolist() == [9, 9] and df["attempts"].tolist() == [4, 4]


def test_checkpoint_restore_without_a_path_and_read_of_several_files_as_flytekit():
    df = mapnb.map_task(ft.two_checkpoint_files, progress=False)(x=[1])
    assert df.loc[0, "output"] == "['a', 'b'] Expected exactly one checkpoint - found 2"


def test_an_item_that_leaves_its_checkpoint_alone_makes_no_temporary_folder(monkeypatch, path):
    """flytekit's SyncCheckpoint makes a temporary folder per item in __init__; making and
    removing it was half of a trivial item's time. Made on first use only, it still works
    (the checkpoint tests around this one)."""
    import tempfile

    made = []
    real = tempfile.TemporaryDirectory
    monkeypatch.setattr(tempfile, "TemporaryDirectory", lambda *a, **k: made.append(1) or real(*a, **k))
    df = mapnb.map_task(ft.scale, backend="threads", progress=False)(a=[1, 2, 3])
    assert df["output"].tolist() == [1, 2, 3]
    assert made == []
    df = mapnb.map_task(ft.two_checkpoint_files, backend="threads", progress=False)(x=[1])
    assert df.loc[0, "output"] == "['a', 'b'] Expected exactly one checkpoint - found 2"
    assert made  # restore() and save() have their folder


def test_read_after_save_of_a_file_as_flytekit(path):
    df = mapnb.map_task(ft.saves_a_file, backend="threads", progress=False)(x=[7])
    assert df.loc[0, "output"] == "done 7" and df.loc[0, "attempts"] == 2


def test_current_context_identifies_the_item(path):
    run = mapnb.map_task(ft.where_am_i, backend="threads", progress=False).submit(x=[5, 6])
    assert run.result()["output"].tolist() == [f"{run.id} 0 1", f"{run.id} 1 1"]


def test_the_tasks_cache_settings_become_mapnbs(tmp_path):
    for t in (ft.counted, ft.counted_old_style):
        log = tmp_path / f"{t.name}.log"
        mt = mapnb.map_task(functools.partial(t, log=str(log)), backend="threads", progress=False)
        assert mt.cache.enabled and mt.cache.ignore == ("log",)
        first = mt(x=[1, 2, 3])
        again = mapnb.map_task(functools.partial(t, log=str(tmp_path / "other.log")), progress=False)(
            x=[1, 2, 3, 4]
        )
        assert again["status"].tolist() == ["cached"] * 3 + ["succeeded"]
        assert again["output"].tolist()[:3] == first["output"].tolist()
        assert sorted(log.read_text().split()) == ["1", "2", "3"]  # each item computed once
    assert mapnb.map_task(ft.counted).cache.version == "1"
    old = mapnb.map_task(ft.counted_old_style).cache
    assert old.version == "2" and old.serialize


def test_requests_and_limits_become_mapnb_resources():
    mt = mapnb.map_task(ft.modest, progress=False)
    assert mt.requests == Resources(cpu="500m", mem="100Mi") and mt.requests.cpus == 0.5
    assert mt.limits == Resources(mem="1Gi", gpu=0)
    assert mt(x=[1, 2])["output"].tolist() == [1, 2]
    # resources=: (request, limit) pairs, a single value the request, as flytekit reads them.
    ranged = mapnb.map_task(ft.ranged)
    assert ranged.requests == Resources(cpu="500m", mem="200Mi") and ranged.limits == Resources(cpu="1")


def test_file_and_directory_outputs_stay_whole_and_usable():
    """Not split into path/metadata/... columns: one usable object per item."""
    df = mapnb.map_task(ft.make_file, progress=False)(x=[1, 2])
    assert "path" not in df.columns
    assert [open(f).read() for f in df["output"]] == ["content 1", "content 2"]
    d = mapnb.map_task(ft.make_dir, progress=False)(x=[3])["output"][0]
    assert isinstance(d, flytekit.types.directory.FlyteDirectory)
    assert open(f"{d.path}/part").read() == "3"


def test_structured_dataset_outputs_stay_whole():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = mapnb.map_task(ft.make_frame, progress=False)(n=[1, 2])
    assert "uri" not in df.columns
    assert df["output"][1].open(pd.DataFrame).all()["n"].tolist() == [2, 3]


@pytest.mark.parametrize(
    "target, message",
    [
        (ft.two_outputs, r"has 2 outputs \(o0, o1\); a Flyte map task needs one output"),
        (ft.dyn, "is a @dynamic task, which Flyte does not map"),
        (ft.eager_one, "is an @eager workflow, which Flyte does not map"),
        (ft.wf, "is a flytekit workflow; mapnb maps tasks, not workflows: map a @task"),
        (ft.wf_lp, "is a flytekit launch plan"),
        (functools.partial(ft.scale, 2), "bind a flytekit task's inputs by name"),
    ],
)
def test_what_flyte_does_not_map_is_refused_before_anything_runs(target, message):
    with pytest.raises(InvalidMapError, match=message):
        mapnb.map_task(target)


def test_lists_of_different_lengths_are_refused():
    """flytekit truncates to the shorter list silently."""
    with pytest.raises(InvalidMapError, match="same length: a has 2 items, factor has 1 item"):
        mapnb.map_task(ft.scale)(a=[1, 2], factor=[3])


def test_mapnb_and_its_workers_import_flytekit_only_for_a_flytekit_task():
    code = (
        "import sys, mapnb\n"
        "df = mapnb.map_task(lambda x: 'flytekit' in sys.modules, progress=False)(x=[1])\n"
        "print(df['output'].tolist(), 'flytekit' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[False] False"


def test_status_of_items_is_as_for_plain_functions():
    run = mapnb.map_task(ft.scale, backend="sequential", progress=False).submit(a=[1, 2])
    run.wait(60)
    assert run.statuses == [Status.SUCCEEDED, Status.SUCCEEDED]


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "mapnb")
    return sh


def test_the_magic_maps_a_task_of_the_notebook_by_name(shell):
    shell.user_ns.update(scale=ft.scale, tasks=ft, m=flytekit.map_task(ft.some_task1, min_success_ratio=0.5))
    df = shell.run_line_magic("map_task", "--backend threads --task scale a=[1, 2] factor=[3, 4]")
    assert df["output"].tolist() == [3, 8]
    df = shell.run_line_magic("map_task", "--backend threads --task tasks.scale a=[5]")
    assert df["output"].tolist() == [5]
    # The map's own min_success_ratio holds: the magic has no default of its own.
    df = shell.run_line_magic("map_task", "--backend threads --task m inputs=[1, 2, 3, 4]")
    assert df["output"].tolist() == [1, None, 3, 4]


@pytest.mark.parametrize(
    "line, body, message",
    [
        ("--task scale a=[1]", "print(a)", "leave the cell body empty"),
        ("--task nowhere a=[1]", None, "--task nowhere: NameError"),
        ("--task 'x y' a=[1]", None, "must name a function or task"),
        ("--task answer a=[1]", None, "--task answer must be a function or task; answer is a int"),
    ],
)
def test_the_magics_task_option_says_what_is_wrong(shell, line, body, message):
    from IPython.core.error import UsageError

    shell.user_ns.update(scale=ft.scale, answer=42)
    with pytest.raises(UsageError, match=message):
        if body is None:
            shell.run_line_magic("map_task", line)
        else:
            shell.run_cell_magic("map_task", line, body)


def test_a_maps_metadata_applies_to_its_subtasks():
    """flytekit.map_task(t, metadata=TaskMetadata(...)) sets the subtasks' retries, timeout."""
    from flytekit.core.base_task import TaskMetadata

    m = flytekit.map_task(ft.fails_first_attempt, metadata=TaskMetadata(retries=1, timeout=30))
    mt = mapnb.map_task(m, backend="threads", progress=False)
    assert mt.options.retries == 1 and mt.options.timeout == 30.0
    assert mt(x=[1])["attempts"].tolist() == [2]


def test_with_overrides_on_the_map_applies_to_every_subtask_as_on_a_cluster():
    mt = mapnb.map_task(ft.fails_first_attempt, backend="threads", progress=False)
    over = mt.with_overrides(
        retries=0,
        timeout=datetime.timedelta(seconds=45),
        resources=flytekit.Resources(cpu=("250m", "1"), mem="200Mi"),
        cache=flytekit.Cache(version="v7", serialize=True),
    )
    assert over.options.retries == 0 and over.options.timeout == 45.0
    assert over.requests == Resources(cpu="250m", mem="200Mi") and over.limits == Resources(cpu="1")
    assert over.cache.enabled and over.cache.version == "v7" and over.cache.serialize
    assert mt.options.retries == 2 and not mt.cache.enabled  # the original is unchanged
    with pytest.raises(MapTaskError, match="first attempt fails"):
        over.with_overrides(cache=False)(x=[1])
    limited = mt.with_overrides(requests=flytekit.Resources(cpu="500m"), limits=Resources(mem="1Gi"))
    assert limited.requests == Resources(cpu="500m") and limited.limits == Resources(mem="1Gi")
    with pytest.raises(InvalidMapError, match=r"with_overrides\(interruptible=...\) has no meaning"):
        mt.with_overrides(interruptible=True)


def test_flytekit_resources_are_accepted_where_mapnb_resources_are():
    @mapnb.task(requests=flytekit.Resources(cpu="500m", mem="1Gi"), limits=flytekit.Resources(gpu="1"))
    def f(x: int) -> int:
        return x

    assert f.requests == Resources(cpu="500m", mem="1Gi") and f.requests.cpus == 0.5
    assert f.limits == Resources(gpu=1)
    with pytest.raises(InvalidMapError, match="pass requests and limits separately"):
        mapnb.task(requests=flytekit.Resources(cpu=("1", "2")))


def _fails_second(inputs: int) -> int:
    if inputs == 2:
        raise ValueError("Unexpected inputs: 2")
    return inputs


@pytest.mark.parametrize("how", ["flytekit.map_task", "mapnb.map_task", "plain function"])
def test_run_all_sub_nodes_runs_every_item_and_then_fails_the_run(how):
    """Flyte's ArrayNode run_all_sub_nodes (flyteidl: "continue to run all sub-nodes even
    after the failure threshold has been met"): no abort; the map fails at the end."""

    def make(run_all: bool) -> mapnb.MapTask:
        kw = dict(concurrency=1, backend="threads", progress=False)
        if how == "flytekit.map_task":
            return mapnb.map_task(flytekit.map_task(ft.some_task1, run_all_sub_nodes=run_all), **kw)
        fn = ft.some_task1 if how == "mapnb.map_task" else _fails_second
        return mapnb.map_task(fn, run_all_sub_nodes=run_all, **kw)

    inputs = [1, 2, 3, 4, 5, 6]
    run = make(True).submit(inputs=inputs)
    with pytest.raises(MapTaskError, match="5 of 6 items succeeded, 6 needed"):
        run.result()
    assert [s.value for s in run.statuses] == ["succeeded", "failed"] + ["succeeded"] * 4
    assert run.outputs == [1, None, 3, 4, 5, 6]
    # Without it the map stops as soon as the ratio cannot be met: later items are aborted.
    run = make(False).submit(inputs=inputs)
    with pytest.raises(MapTaskError):
        run.result()
    assert "aborted" in [s.value for s in run.statuses]


def test_min_successes_and_metadata_as_map_task_arguments():
    """flytekit's map_task(t, min_successes=N, metadata=TaskMetadata(...)) signature, here
    directly on mapnb.map_task (not only through a flytekit.map_task object)."""
    from flytekit.core.base_task import TaskMetadata

    kw = dict(backend="threads", progress=False)
    assert mapnb.map_task(ft.some_task1, min_successes=3, **kw)(inputs=[1, 2, 3, 4])["output"].tolist() == [
        1, None, 3, 4,
    ]  # fmt: skip
    with pytest.raises(MapTaskError, match="of 4 items succeeded, 4 needed"):
        mapnb.map_task(ft.some_task1, min_successes=4, **kw)(inputs=[1, 2, 3, 4])
    # A plain function too; and min_successes wins over min_success_ratio, as in flytekit.
    mt = mapnb.map_task(_fails_second, min_successes=3, min_success_ratio=1.0, **kw)
    assert "min_successes=3" in repr(mt)
    assert mt(inputs=[1, 2, 3, 4])["status"].tolist() == ["succeeded", "failed", "succeeded", "succeeded"]
    # An explicit min_successes wins over a flytekit map's ratio, and the other way round.
    m = flytekit.map_task(ft.some_task1, min_success_ratio=1.0)
    assert mapnb.map_task(m, min_successes=3, **kw)(inputs=[1, 2, 3, 4])["output"].tolist()[1] is None
    mt = mapnb.map_task(ft.fails_first_attempt, metadata=TaskMetadata(retries=1, timeout=30), **kw)
    assert mt.options.retries == 1 and mt.options.timeout == 30.0
    assert mt(x=[1])["attempts"].tolist() == [2]
    assert mapnb.map_task(ft.fails_first_attempt, metadata=TaskMetadata(retries=1), retries=0).options.retries == 0


@pytest.mark.parametrize(
    "fn, kwargs, message",
    [
        (_fails_second, {"min_successes": -1}, "min_successes must be an integer >= 0 or None; got int -1"),
        (_fails_second, {"min_successes": "3"}, "min_successes must be an integer >= 0 or None; got str '3'"),
        (_fails_second, {"min_successes": True}, "min_successes must be an integer >= 0 or None; got bool True"),
        (_fails_second, {"run_all_sub_nodes": "yes"}, "run_all_sub_nodes must be True or False; got str 'yes'"),
        (ft.scale, {"metadata": {"retries": 1}}, "metadata must be a flytekit.TaskMetadata.*got dict"),
        (_fails_second, {"metadata": "x"}, "metadata= takes a flytekit TaskMetadata for a flytekit task; _fails_second"),
    ],
)
def test_bad_flyte_map_settings_are_refused_naming_argument_value_and_what_is_allowed(fn, kwargs, message):
    with pytest.raises(InvalidMapError, match=message):
        mapnb.map_task(fn, **kwargs)


def test_more_min_successes_than_items_is_refused_before_anything_runs():
    """Flyte fails such an ArrayNode at once (it can never succeed)."""
    mt = mapnb.map_task(_fails_second, min_successes=5, backend="threads", progress=False)
    with pytest.raises(InvalidMapError, match="min_successes=5 but the map has 4 items; it must be at most"):
        mt(inputs=[1, 3, 4, 5])
    assert mt(inputs=[1, 3, 4, 5, 6])["status"].tolist() == ["succeeded"] * 5


def test_a_worker_keeps_ignoring_sigint_after_importing_flytekit():
    """flytekit installs a SIGINT handler on import; a worker leaves Ctrl-C to the caller."""
    df = mapnb.map_task(ft.sigint_ignored, progress=False)(x=[1, 2])
    assert df["output"].tolist() == [True, True]


def test_a_flytekit_task_runs_on_every_backend(backend):
    """Type checks, the checkpoint across retries and file outputs hold on each backend."""
    mt = mapnb.map_task(ft.use_checkpoint, backend=backend, progress=False)
    assert mt(n_iterations=[10, 6])["output"].tolist() == [9, 5]
    df = mapnb.map_task(ft.scale, backend=backend, min_success_ratio=0.5, progress=False)(a=[2, "x"])
    assert df["output"].tolist() == [2, None] and "Failed argument 'a'" in df.loc[1, "error"]


def test_an_instance_task_such_as_shell_task_is_mapped_as_flytekit_maps_it():
    mt = mapnb.map_task(ft.shout, min_success_ratio=0.5, progress=False)
    assert mt.name == "shout"
    run = mt.submit(x=[1, 2, 5])
    assert run.result()["status"].tolist() == ["succeeded", "succeeded", "failed"]
    assert "item 2" in run.logs(1) and run.errors[2].type == "FlyteRecoverableException"


def test_items_that_write_no_files_leave_no_folders(path):
    run = mapnb.map_task(ft.scale, backend="threads", progress=False).submit(a=[1, 2, 3])
    run.result()
    flyte = mapnb.journal.run_dir(run.id) / "flyte"
    assert not flyte.exists() or not any(flyte.iterdir())


def test_an_item_that_does_not_ask_for_its_working_folder_makes_none(monkeypatch, path):
    """Making and removing a folder per item was most of a trivial item's time; the folder
    is made when the item asks for current_context().working_directory (a FlyteFile)."""
    made: list[str] = []
    mkdir, makedirs = pathlib.Path.mkdir, os.makedirs

    def counted_mkdir(self, *a, **k):
        made.extend([str(self)] if "flyte" in self.parts else [])
        return mkdir(self, *a, **k)

    def counted_makedirs(name, *a, **k):
        made.extend([str(name)] if "flyte" in pathlib.Path(name).parts else [])
        return makedirs(name, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", counted_mkdir)
    monkeypatch.setattr(os, "makedirs", counted_makedirs)
    run = mapnb.map_task(ft.scale, backend="threads", progress=False).submit(a=[1, 2, 3])
    assert run.result()["output"].tolist() == [1, 2, 3]
    assert made == []
    df = mapnb.map_task(ft.make_file, backend="threads", progress=False)(x=[1])
    assert open(df["output"][0]).read() == "content 1"
    assert made  # the item that asked has its folder, kept with its file


@pytest.mark.parametrize("target", ["ft.slow", "lambda x: time.sleep(60)"])
def test_an_interrupt_cancels_the_run_although_flytekit_turns_it_into_system_exit(target, tmp_path):
    """flytekit's SIGINT handler raises SystemExit(1); the run is cancelled all the same,
    for a flytekit task and for a plain function in a process that imported flytekit."""
    code = (
        "import os, signal, sys, threading, time\n"
        "import mapnb\n"
        "from tests import flyte_tasks as ft\n"
        "def interrupt_soon():\n"
        "    while mapnb.last_run() is None or 'running' not in [s.value for s in mapnb.last_run().statuses]:\n"
        "        time.sleep(0.05)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "threading.Thread(target=interrupt_soon, daemon=True).start()\n"
        "try:\n"
        f"    mapnb.map_task({target}, progress=False)(x=[1, 2])\n"
        "except KeyboardInterrupt as e:\n"
        "    print(type(e).__name__, mapnb.last_run().state)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert out.stdout.strip() == "RunInterrupted cancelled", out.stdout + out.stderr[-2000:]


def test_file_inputs_from_paths_or_flyte_files(tmp_path):
    paths = []
    for i in range(3):
        (tmp_path / f"f{i}.txt").write_text("x" * (i + 1))
        paths.append(str(tmp_path / f"f{i}.txt"))
    mt = mapnb.map_task(ft.file_size, progress=False)
    assert mt(f=paths)["output"].tolist() == [1, 2, 3]
    FlyteFile = flytekit.types.file.FlyteFile
    assert mt(f=[FlyteFile(p) for p in paths])["output"].tolist() == [1, 2, 3]


# -- the fast path (mapnb.flyte._fast) -----------------------------------------------------

_SAME = object()


def _echo(arg: object, ret: object, value: object = _SAME):
    """A task ``echo(x: arg) -> ret`` returning ``x`` (or ``value``)."""

    def echo(x):
        return x if value is _SAME else value

    echo.__annotations__ = {"x": arg, "return": ret}
    return flytekit.task(echo)


def _typed(v: object) -> object:
    """``v`` with the type of every value in it: 1 and 1.0, [1] and [1.0] differ."""
    if isinstance(v, list):
        return [_typed(x) for x in v]
    if isinstance(v, dict):
        return {k: _typed(x) for k, x in v.items()}
    return (type(v).__name__, v)


def _outcome(call):
    try:
        return "ok", _typed(call())
    except Exception as e:  # the exception's type and message, as the error column shows them
        return "error", type(e).__qualname__, str(e)


def _both_ways(t, kwargs):
    """The item through flytekit's full path, and through the fast path (with whether the
    fast path handed it to the full path)."""
    from mapnb.flyte import _fast, _flytekit

    plan = _fast.plan_for(t)
    assert plan is not None, t
    handed = []

    def full(t, kw):
        handed.append(kw)
        return _flytekit._execute(t, kw)

    return _outcome(lambda: _flytekit._execute(t, dict(kwargs))), _outcome(
        lambda: _fast.run(plan, t, dict(kwargs), full)
    ), bool(handed)


_OPT_FLOATS = dict[str, "float | None"]
INPUTS = [
    (int, 1, True), (int, True, False), (int, 1.0, False), (int, "1", False), (int, None, False),
    (float, 1.5, True), (float, 1, False), (float, True, False),
    (str, "a", True), (str, 1, False), (bool, True, True), (bool, 1, False),
    ("int | None", None, True), ("int | None", 2, True), ("int | None", "a", False),
    (list[int], [1, 2], True), (list[int], [1, "a"], False), (list[int], [True], False),
    (list[int], (1, 2), False), (list[int], None, False), (list[int], [], True),
    (list[float], [1, 2.0], False), (dict[str, int], {"a": 1}, True), (dict[str, int], {"a": "b"}, False),
    (dict[str, int], {1: 1}, False), (dict[str, list[str]], {"k": ["v"]}, True),
    (dict[str, list[str]], {"k": "v"}, False), ("list[dict[str, float | None]]", [{"a": None, "b": 1.0}], True),
    ("list[dict[str, float | None]]", [{"a": 1}], False),
]


@pytest.mark.parametrize("arg, value, fast", INPUTS, ids=[f"{a}={v!r}" for a, v, _ in INPUTS])
def test_fast_and_full_paths_give_the_same_input_values_and_errors(arg, value, fast):
    """Each input as flytekit's type engine takes it: the same value and types, or the same
    TypeTransformerFailedError with the same words. What the fast check does not take
    exactly is handed to flytekit, which words the error."""
    arg = eval(arg) if isinstance(arg, str) else arg  # (`X | None` of typing objects)
    full, quick, handed = _both_ways(_echo(arg, arg), {"x": value})
    assert quick == full
    assert handed is not fast
    if not fast and full[0] == "error" and full[1] == "TypeTransformerFailedError":
        assert full[2].startswith("Failed to convert inputs of task")


OUTPUTS = [
    (int, 1), (int, True), (int, "a"), (int, None), (float, 1), (float, 1.0), (str, 1.5),
    (list[int], [1, "a"]), (list[int], (1,)), (dict[str, int], {"a": "b"}), (dict[str, int], {1: 1}),
    ("str | None", None), ("str | None", 3), ("list[int | None]", [None, 1]),
    (dict[str, list[float]], {"a": [1.0]}), (None, 5),
]


@pytest.mark.parametrize("ret, value", OUTPUTS, ids=[f"{r}={v!r}" for r, v in OUTPUTS])
def test_fast_and_full_paths_give_the_same_outputs_and_errors(ret, value):
    ret = eval(ret) if isinstance(ret, str) else ret
    full, quick, handed = _both_ways(_echo(int, ret, value), {"x": 1})
    assert quick == full and not handed


def test_fast_and_full_paths_word_the_tasks_own_error_alike():
    boom = _echo(int, int, _SAME)
    boom._task_function = lambda x: 1 / 0  # noqa: SLF001 (as if the function raised)
    full, quick, _ = _both_ways(boom, {"x": 1})
    assert quick == full == ("error", "ZeroDivisionError", f"Error encountered while executing '{boom.name}':\n  division by zero")


def test_simple_types_take_the_fast_path_and_others_flytekits_full_one(monkeypatch):
    from mapnb.flyte import _fast, _flytekit

    assert all(_fast.plan_for(t) for t in (ft.scale, ft.t1, ft.many_inputs, ft.where_am_i, ft.use_checkpoint))
    for t in (ft.make_file, ft.make_dir, ft.make_frame, ft.file_size, ft.dyn, ft.shout):
        assert _fast.plan_for(t) is None, t
    for arg in (dict, dict[int, int], "typing.Union[int, str]", "typing.Annotated[int, 'x']", datetime.datetime):
        arg = eval(arg, {"typing": __import__("typing")}) if isinstance(arg, str) else arg
        assert _fast.plan_for(_echo(arg, int, 1)) is None, arg
    # A real map: the simple task's items never go through dispatch_execute; a FlyteFile's do.
    calls = []
    real = _flytekit._execute
    monkeypatch.setattr(_flytekit, "_execute", lambda t, kw: calls.append(t.name) or real(t, kw))
    assert mapnb.map_task(ft.scale, backend="threads", progress=False)(a=[1, 2])["output"].tolist() == [1, 2]
    assert calls == []
    df = mapnb.map_task(ft.make_file, backend="threads", progress=False)(x=[1, 2])
    assert [open(f).read() for f in df["output"]] == ["content 1", "content 2"]
    assert calls == [ft.make_file.name] * 2


def test_a_wrong_element_type_fails_alike_on_both_paths(monkeypatch):
    """The error column of a map, fast path or not: flytekit's type and words."""
    from mapnb.flyte import _fast

    task = _echo(list[int], int, 0)
    run = functools.partial(mapnb.map_task, backend="threads", min_success_ratio=0, progress=False)
    fast = run(task)(x=[[1], [1, "a"]])
    monkeypatch.setattr(_fast, "plan_for", lambda t: None)
    full = run(task)(x=[[1], [1, "a"]])
    assert fast["error"].tolist() == full["error"].tolist()
    assert fast.loc[1, "error"].startswith("TypeTransformerFailedError: Failed to convert inputs of task")
    assert "Expected value of type <class 'int'> but got 'a'" in fast.loc[1, "error"]


@pytest.mark.parametrize("backend", ["local", "threads"])
def test_an_input_of_the_wrong_type_is_not_retried(backend, path):
    """The same inputs fail flytekit's conversion the same way on every attempt: the item
    fails at once (attempts = 1) with flytekit's type and message, whatever its retries.
    (A wrong input leaves the fast path for the full one: both end in the same error.)"""
    from flytekit.core.base_task import TaskMetadata

    for mt in (
        mapnb.map_task(ft.scale, retries=3, min_success_ratio=0.5, backend=backend, progress=False),
        mapnb.map_task(ft.scale, metadata=TaskMetadata(retries=3), min_success_ratio=0.5, backend=backend, progress=False),
    ):
        assert mt.options.retries == 3
        df = mt(a=[1, "x", 3])
        assert df["status"].tolist() == ["succeeded", "failed", "succeeded"]
        assert df["attempts"].tolist() == [1, 1, 1]
        assert df.loc[1, "error"].startswith(
            "TypeTransformerFailedError: Failed to convert inputs of task 'tests.flyte_tasks.scale':"
        )
        assert "Expected value of type <class 'int'> but got 'x' of type <class 'str'>" in df.loc[1, "error"]


def test_the_input_type_error_is_flytekits_and_mapnbs_not_retried():
    from flytekit.core.type_engine import TypeTransformerFailedError

    from mapnb.flyte._flytekit import FlyteItem

    with pytest.raises(TypeTransformerFailedError) as info:
        FlyteItem(ft.scale)(a="x")
    assert isinstance(info.value, mapnb.NotRetried)
    assert type(info.value).__name__ == "TypeTransformerFailedError"
    # A task's own error stays retried.
    df = mapnb.map_task(ft.fails_first_attempt, backend="threads", progress=False)(x=[1])
    assert df["attempts"].tolist() == [2]


def test_the_fast_path_builds_one_flytekit_context_per_thread_and_leaves_the_stack_as_it_was():
    from flytekit.core.context_manager import FlyteContextManager

    from mapnb.context import enter_items, leave_item
    from mapnb.flyte import _fast
    from mapnb.flyte._flytekit import FlyteItem, _execute

    seen = []

    def record(x):  # the flytekit context the function runs in, and what it says of the item
        ctx = FlyteContextManager.current_context()
        p = ctx.user_space_params
        seen.append((ctx, p.execution_id.name, p.array_index, p.attempt))
        return x

    item = FlyteItem(_echo(int, int, _SAME))
    size = FlyteContextManager.size()
    real = _fast.plan_for(item._flyte_task)
    item._run = _fast.runner(_fast.Plan(record, real.inputs, real.output), item._flyte_task, _execute)
    slot, token = enter_items(None, "run1", lambda *a: None)  # as run_items does: one slot, per item its index
    try:
        for i in range(3):
            slot.index, slot.attempt = i, 1
            assert item(x=i) == i
            assert seen[-1][1:] == ("run1", i, 1)
            assert FlyteContextManager.size() == size
    finally:
        leave_item(token)
    seen = [c for c, *_ in seen]
    assert seen[0] is seen[1] is seen[2]  # built once, pushed per item
    with pytest.raises(TypeError):  # an input that fails flytekit's check: the stack is restored too
        item(x="no")
    assert FlyteContextManager.size() == size


def test_a_context_the_task_leaves_pushed_is_popped_with_the_items_own():
    """flytekit's with_context pops what a block left on the stack; the fast path, which
    pushes the item's context itself, does the same."""
    from flytekit.core.context_manager import FlyteContextManager

    from mapnb.flyte import _fast
    from mapnb.flyte._flytekit import FlyteItem, _execute

    def leaky(x):
        FlyteContextManager.push_context(FlyteContextManager.current_context())
        return x

    item = FlyteItem(_echo(int, int, _SAME))
    real = _fast.plan_for(item._flyte_task)
    item._run = _fast.runner(_fast.Plan(leaky, real.inputs, real.output), item._flyte_task, _execute)
    size = FlyteContextManager.size()
    assert [item(x=i) for i in range(3)] == [0, 1, 2]
    assert FlyteContextManager.size() == size


def test_what_the_fast_check_hands_to_flytekit_carries_no_context_of_its_own():
    """An error on the full path (here the task's own) does not read "During handling of
    the above exception" with the fast check's internal miss."""
    from mapnb.flyte import _fast, _flytekit

    boom = _echo(int, int, _SAME)
    boom._task_function = lambda x: 1 / 0  # noqa: SLF001
    plan = _fast.plan_for(boom)

    def never(v):
        raise _fast._Miss  # noqa: SLF001 (as for a value the check does not take)

    with pytest.raises(ZeroDivisionError) as info:
        _fast.run(_fast.Plan(plan.fn, {"x": never}, plan.output), boom, {"x": 1}, _flytekit._execute)
    assert info.value.__context__ is None


def test_a_flytekit_map_starts_from_the_durations_of_the_last_run_like_a_function():
    """The engine knows a function by its code and starts a map of the same code again
    from the durations it measured (no probing with one-item tasks): a flytekit task's
    item carries its function's code for that, and a worker calls it by position."""
    from mapnb import engine

    mt = mapnb.map_task(ft.scale, progress=False)  # (the local pool remembers durations)
    item = mt.fn.__wrapped__
    assert item.__code__ is ft.scale.task_function.__code__
    assert item(3) == item(a=3) == 3
    assert mt(a=[1, 2, 3])["output"].tolist() == [1, 2, 3]
    assert ("local", ft.scale.task_function.__code__) in engine._HISTORY


def test_inputs_by_position_are_checked_as_by_name():
    """A worker passes an item's inputs by position: the same values, the same errors."""
    item = mapnb.map_task(ft.scale, progress=False).fn.__wrapped__
    assert item(3, 2) == item(a=3, factor=2) == item(3, factor=2) == 6
    for args, kwargs in (((True,), {}), ((), {"a": True})):  # a bool is not an int to flytekit
        with pytest.raises(Exception, match="Failed to convert inputs of task") as e:
            item(*args, **kwargs)
        assert type(e.value).__name__ == "TypeTransformerFailedError"
    with pytest.raises(TypeError, match="too many positional arguments"):
        item(1, 2, 3)


def test_an_item_pickled_the_older_way_still_loads():
    """Journals written before the task travelled unnested hold ``_restore(bytes)``."""
    import pickle

    import cloudpickle

    from mapnb.flyte import _flytekit

    class Old:
        def __reduce__(self):
            return (_flytekit._restore, (cloudpickle.dumps(ft.scale),))

    item = pickle.loads(pickle.dumps(Old()))
    assert isinstance(item, _flytekit.FlyteItem) and item(a=2, factor=3) == 6
    again = pickle.loads(cloudpickle.dumps(item))
    assert isinstance(again, _flytekit.FlyteItem) and again(4) == 4


def test_inputs_bound_by_a_partial_keep_the_fast_path(monkeypatch):
    """A worker passes the mapped inputs by position and the bound ones by name."""
    from mapnb.flyte import _flytekit

    calls = []
    real = _flytekit._execute
    monkeypatch.setattr(_flytekit, "_execute", lambda t, kw: calls.append(kw) or real(t, kw))
    mt = mapnb.map_task(functools.partial(ft.scale, factor=3), progress=False, backend="threads")
    assert mt(a=[1, 2])["output"].tolist() == [3, 6]
    item = mt.fn.func.__wrapped__ if isinstance(mt.fn, functools.partial) else mt.fn.__wrapped__
    assert item(2, factor=5) == 10
    assert calls == []  # never flytekit's full path
    with pytest.raises(TypeError, match="multiple values"):
        item(2, a=5)


def test_each_item_on_the_fast_path_gets_its_own_folder_and_a_failed_ones_is_removed():
    """current_context().working_directory is the item's (made when asked), kept after a
    success that left files in it, removed after a failure; items that never ask make none."""

    @flytekit.task
    def write_here(x: int) -> str:
        folder = flytekit.current_context().working_directory
        if x == 2:
            open(os.path.join(folder, "partial"), "w").close()
            raise ValueError("no")
        if x == 1:
            open(os.path.join(folder, "out"), "w").close()
        return folder if x else ""

    from mapnb.flyte import _fast

    assert _fast.plan_for(write_here) is not None  # (the fast path is what is tested)
    df = mapnb.map_task(write_here, min_success_ratio=0, progress=False)(x=[0, 1, 2, 3])
    folders = df["output"].tolist()
    assert folders[0] == "" and len({folders[1], folders[3]}) == 2
    assert os.listdir(folders[1]) == ["out"]  # a success's files stay
    assert not os.path.exists(folders[3])  # an empty folder goes
    failed = os.path.join(os.path.dirname(os.path.dirname(folders[1])), "2")
    assert not os.path.exists(failed)  # a failure's folder goes
    assert "ValueError" in df.loc[2, "error"]


@pytest.mark.parametrize("name", ["scale", "t1", "make_file", "make_frame", "where_am_i"])
def test_a_pickled_item_rebuilds_its_tasks_interface_where_it_is_loaded(name):
    """The task travels without its interface's output class (made again by flytekit's
    Interface on load): a smaller, quicker pickle, and the same task."""
    import pickle

    import cloudpickle

    t = getattr(ft, name)
    item = mapnb.map_task(t, progress=False).fn.__wrapped__
    blob = cloudpickle.dumps(item)
    assert len(blob) < len(cloudpickle.dumps(t))
    back = pickle.loads(blob)._flyte_task
    for attr in ("inputs_with_defaults", "outputs", "output_tuple_name"):
        assert getattr(back.python_interface, attr) == getattr(t.python_interface, attr), attr
    docs = back.python_interface.docstring, t.python_interface.docstring
    assert [(d.short_description, d.input_descriptions, d.output_descriptions) for d in docs] == [
        (docs[1].short_description, docs[1].input_descriptions, docs[1].output_descriptions)
    ] * 2
    assert back.python_interface.output_tuple._fields == t.python_interface.output_tuple._fields
    assert back._native_interface is back.python_interface
    assert back._get_command_fn.__self__ is back
    assert back.interface == t.interface and back.name == t.name and back.metadata == t.metadata
