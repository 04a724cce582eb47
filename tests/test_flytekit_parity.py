# Tally (2026-11-27; flytekit 1.16.31 installed, flytekit's and flytesnacks' tests read at
# their GitHub HEAD): 54 flytekit/flytesnacks cases ported, all 54 pass.
#   test_array_node_map_task 16 local + 7 serialisation cases on what backend="flyte" sends
#   (*_sent), test_map_task 10, test_partials 4, test_array_node 2, test_checkpoint 9,
#   flytesnacks 6 (map_task.py examples 1, 2, 4, 5, 6; checkpoint.py).
# Before this port's fixes 40 of the 54 passed: 11 cases mapping the legacy map_task object
# (now mapped like the ArrayNode one); with_overrides(container_image=) (now accepted, and
# set on the node for backend="flyte"); the map's metadata= on backend="flyte" (2 cases:
# now it replaces the task's, as flytekit serialises it).
# Also: lists of different lengths; 9 objects whose mapnb outputs equal flytekit's own
# local run; a fresh-pool check of SIGINT handling (a regression found while porting).
# Deliberate differences (asserted as mapnb behaves, listed in the README's table): a
# single value for a list is InvalidMapError, a ValueError (flytekit: TypeError); a wrong
# element type fails its item, not the map; launch plans are refused; lists of different
# lengths are refused; a list given for an input bound by bound_inputs_values is refused
# (flytekit uses the bound value); requests=Resources(cpu="10M") is refused; a plain partial binds
# lists (the legacy map_task refuses them).
"""Parity with flytekit's own local map-task tests and flytesnacks' examples (issue 11).

Each test is one case of flytekit's tests/flytekit/unit/core/{test_array_node_map_task,
test_map_task, test_partials, test_array_node, test_checkpoint}.py or of flytesnacks'
examples/advanced_composition/advanced_composition/{map_task,checkpoint}.py, run with the
SAME task objects (tests/flyte_parity_tasks.py) through ``mapnb.map_task`` and checked
against flytekit's expected values. Cases that only test flytekit's serialisation to IDL
or its internals are listed at the end of this docstring, not ported.

Deliberate differences (the README's flytekit/mapnb/cluster table lists them):

- a bad input list (a scalar instead of a list) is mapnb's ``InvalidMapError`` (a
  ``ValueError``), where flytekit raises ``TypeError``;
- a list element of the wrong type fails *that item* (flytekit's
  ``TypeTransformerFailedError`` message in its error), not the whole map up front;
- launch plans (and ``array_node(lp)``) are refused: only a cluster maps them;
- lists of different lengths are refused (flytekit truncates to the shortest silently);
- the legacy ``map_task``'s refusal of list values in partials is flytekit's own (it
  raises in ``legacy_map_task(...)``); a plain partial follows the ArrayNode map task,
  which binds lists, as flytekit's ArrayNode does;
- ``with_overrides(requests=Resources(cpu="10M"))``: ten million CPUs; mapnb schedules
  items locally by their requests and refuses a value it cannot read as CPUs.

- a list given for an input that ``bound_inputs_values`` binds is refused (a value given
  twice); flytekit uses the bound value (for a partial's, flytekit raises TypeError).

Not ported (flytekit's own serialisation of its objects, or its internals):
test_array_node_map_task's test_remote_execution, test_serialization,
test_fast_serialization, test_metadata_in_task_name, test_bounded_inputs_vars_order,
test_mis_match (workflow compile), test_load_offloaded_literal, and the upstream-promise
cases of test_bound_inputs_serialization (workflow wiring); test_map_task's
test_serialization, test_serialization_of_custom_fields, test_serialization_workflow_def,
test_map_task_resolver, test_bounded_inputs_vars_order (the legacy array job's IDL, which
backend="flyte" never sends: it sends an ArrayNode); test_partials' serialisation asserts;
test_array_node's test_lp_serialization and its launch-plan run_all_sub_nodes cases.
The serialisation cases that say what a map of the user's settings becomes on a cluster
are ported onto what backend="flyte" sends (the ``*_sent`` tests below), next to
tests/test_flyte_remote.py's own.
"""

from __future__ import annotations

import datetime
import functools
import subprocess
import sys
import typing

import pytest

import mapnb
from mapnb import InvalidMapError, MapTaskError

flytekit = pytest.importorskip("flytekit")

from flytekit.core.array_node import array_node  # noqa: E402
from flytekit.core.array_node_map_task import ArrayNodeMapTask  # noqa: E402
from flytekit.core.array_node_map_task import map_task as array_node_map_task  # noqa: E402
from flytekit.core.legacy_map_task import map_task as legacy_map_task  # noqa: E402
from flytekit.core.task import TaskMetadata  # noqa: E402

from . import flyte_parity_tasks as pt  # noqa: E402  (needs flytekit)

KW: dict[str, typing.Any] = dict(backend="threads", progress=False)
BOTH = pytest.mark.parametrize("map_task_fn", [legacy_map_task, array_node_map_task])


def out(mt: mapnb.MapTask, **lists: typing.Any) -> list[typing.Any]:
    return mt(**lists)["output"].tolist()


# ======================================================================================
# test_array_node_map_task.py


def test_map():
    """flytekit test_array_node_map_task.py::test_map: map_task(say_hello)(name=[...]),
    on the default local pool."""
    assert out(mapnb.map_task(array_node_map_task(pt.say_hello), progress=False), name=["abc", "def"]) == [
        "hello abc!",
        "hello def!",
    ]


def test_map_on_fresh_workers_keeps_their_sigint_handling():
    """test_map's flytekit map object, on a fresh local pool: its workers still ignore
    Ctrl-C after importing flytekit (the map's TaskMetadata travels inside the item's own
    pickling, which keeps the handler; outside it, the first item found flytekit's)."""
    code = (
        "import flytekit, mapnb\n"
        "from tests import flyte_tasks as ft\n"
        "m = flytekit.map_task(ft.sigint_ignored)\n"
        "print(mapnb.map_task(m, concurrency=2, progress=False)(x=[1, 2])['output'].tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[True, True]", done.stderr[-2000:]


def test_execution():
    """flytekit test_array_node_map_task.py::test_execution: a map over a task's list
    output, then a map over the map's outputs."""
    xs = out(mapnb.map_task(array_node_map_task(pt.say_hello), **KW), name=pt.create_input_list())
    assert out(mapnb.map_task(array_node_map_task(pt.say_hello), **KW), name=xs) == [
        "hello hello earth!!",
        "hello hello mars!!",
    ]


def test_map_task_with_pickle():
    """flytekit test_array_node_map_task.py::test_map_task_with_pickle: a typing.Any input
    (flytekit pickles it) maps."""
    assert out(mapnb.map_task(array_node_map_task(pt.say_hello_any), **KW), name=["abc", "def"]) == [
        "hello abc!",
        "hello def!",
    ]


@pytest.mark.parametrize("map_task_fn", [array_node_map_task, legacy_map_task], ids=["array_node", "legacy"])
def test_inputs_outputs_length(map_task_fn):
    """flytekit test_array_node_map_task.py::test_inputs_outputs_length (and
    test_map_task.py's, legacy): partials bind c, then b, then a; what is left is mapped;
    a fully bound task given a list is refused (flytekit: TypeError; mapnb: InvalidMapError,
    a ValueError, before anything runs); a task of two outputs is refused (ValueError)."""
    kw = dict(b=["x", "y"], c=[1.0, 2.0])
    assert out(mapnb.map_task(map_task_fn(pt.many_inputs), **KW), a=[1, 2], **kw) == ["1 - x - 1.0", "2 - y - 2.0"]
    p1 = functools.partial(pt.many_inputs, c=1.0)
    assert out(mapnb.map_task(map_task_fn(p1), **KW), a=[1, 2], b=["x", "y"]) == ["1 - x - 1.0", "2 - y - 1.0"]
    p2 = functools.partial(p1, b="hello")
    assert out(mapnb.map_task(map_task_fn(p2), **KW), a=[1, 2]) == ["1 - hello - 1.0", "2 - hello - 1.0"]
    p3 = functools.partial(p2, a=1)
    with pytest.raises(InvalidMapError, match="'a' is fixed by functools.partial"):
        mapnb.map_task(map_task_fn(p3), **KW)(a=[1, 2, 3])
    with pytest.raises(ValueError, match="outputs"):
        mapnb.map_task(pt.many_outputs)


def test_partials_local_execute():
    """flytekit test_array_node_map_task.py::test_partials_local_execute: partials and
    bound_inputs_values bind c whatever the parameter order; list-typed inputs map over
    lists of lists; a list bound to a str input is a ValueError."""
    a, b, c = [1, 2, 3], [0.1, 0.2, 0.3], "c"
    expected = ["1 - 0.1 - c", "2 - 0.2 - c", "3 - 0.3 - c"]
    for t in (pt.task1, pt.task2, pt.task3):
        assert out(mapnb.map_task(array_node_map_task(functools.partial(t, c=c)), **KW), a=a, b=b) == expected
        assert out(mapnb.map_task(ArrayNodeMapTask(t, bound_inputs_values={"c": c}), **KW), a=a, b=b) == expected
    la = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    lb = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
    lc = ["c", "d", "e"]
    expected_lists = [
        ["1 - 0.1 - c", "2 - 0.2 - d", "3 - 0.3 - e"],
        ["4 - 0.4 - c", "5 - 0.5 - d", "6 - 0.6 - e"],
        ["7 - 0.7 - c", "8 - 0.8 - d", "9 - 0.9 - e"],
    ]
    m7 = mapnb.map_task(array_node_map_task(functools.partial(pt.task4, c=lc)), **KW)
    m8 = mapnb.map_task(ArrayNodeMapTask(pt.task4, bound_inputs_values={"c": lc}), **KW)
    assert out(m7, a=la, b=lb) == out(m8, a=la, b=lb) == expected_lists
    with pytest.raises(ValueError, match="wrong type"):
        mapnb.map_task(array_node_map_task(functools.partial(pt.task1, c=lc)))(a=a, b=b)


def test_bound_inputs_collision():
    """flytekit test_array_node_map_task.py::test_bound_inputs_collision: bound values win
    over a partial's; flytekit's own ValueError for mismatched bound_inputs keys."""
    a, b = [1, 2, 3], [0.1, 0.2, 0.3]
    m1 = ArrayNodeMapTask(functools.partial(pt.task1, c="c"), bound_inputs_values={"c": "d"})
    assert out(mapnb.map_task(m1, **KW), a=a, b=b) == ["1 - 0.1 - d", "2 - 0.2 - d", "3 - 0.3 - d"]
    with pytest.raises(ValueError, match="bound_inputs and bound_inputs_values should have the same keys"):
        mapnb.map_task(ArrayNodeMapTask(pt.task1, bound_inputs_values={"c": "c"}, bound_inputs={"b"}))
    ok = ArrayNodeMapTask(pt.task1, bound_inputs_values={"c": "c"}, bound_inputs={"c"})
    assert out(mapnb.map_task(ok, **KW), a=a, b=b) == ["1 - 0.1 - c", "2 - 0.2 - c", "3 - 0.3 - c"]


@pytest.mark.parametrize("min_success_ratio, should_raise_error", [(None, True), (1, True), (0.75, False), (0.5, False)])
def test_raw_execute_with_min_success_ratio(min_success_ratio, should_raise_error):
    """flytekit test_array_node_map_task.py::test_raw_execute_with_min_success_ratio:
    [1, None, 3, 4] unless the ratio needs every item (None is flytekit's default: all).
    flytekit raises ValueError; mapnb raises MapTaskError naming the failure."""
    mt = mapnb.map_task(array_node_map_task(pt.some_task1, min_success_ratio=min_success_ratio), **KW)
    if should_raise_error:
        with pytest.raises(MapTaskError, match="Unexpected inputs: 2"):
            mt(inputs=[1, 2, 3, 4])
    else:
        assert out(mt, inputs=[1, 2, 3, 4]) == [1, None, 3, 4]


@pytest.mark.parametrize("map_task_fn", [array_node_map_task, legacy_map_task], ids=["array_node", "legacy"])
def test_map_task_override(map_task_fn):
    """flytekit test_array_node_map_task.py::test_map_task_override (and test_map_task.py's):
    ``with_overrides(container_image=...)`` is accepted; it has no meaning for a local run
    (flytekit's local run ignores it too) and the map runs; backend="flyte" sets it on the
    node, where flytekit's test looks (``wf.nodes[0]._container_image == "random:image"``)."""
    mt = mapnb.map_task(map_task_fn(pt.my_mappable_task), **KW).with_overrides(container_image="random:image")
    assert out(mt, a=[1, 2]) == ["1", "2"]
    again = mt.with_overrides(retries=1)  # kept through further overrides
    assert again.options.retries == 1
    assert mapnb.flyte.to_flyte(again, a=[1, 2]).workflow.nodes[0]._container_image == "random:image"


def test_serialization_metadata():
    """flytekit test_array_node_map_task.py::test_serialization_metadata, what a local run
    sees: map_task(t, metadata=TaskMetadata(retries=2)) replaces the task's metadata."""
    m = array_node_map_task(pt.interruptible_t1, metadata=TaskMetadata(retries=2))
    assert not m.metadata.interruptible
    mt = mapnb.map_task(m, **KW)
    assert mt.options.retries == 2
    assert out(mt, a=[1, 2]) == [2, 3]


def test_serialization_metadata2():
    """flytekit test_array_node_map_task.py::test_serialization_metadata2, what a local run
    sees: min_success_ratio=0.9, concurrency=10 and the metadata's retries=2, timeout=10 s."""
    m = array_node_map_task(
        pt.optional_t1,
        min_success_ratio=0.9,
        concurrency=10,
        metadata=TaskMetadata(retries=2, interruptible=True, timeout=datetime.timedelta(seconds=10)),
    )
    mt = mapnb.map_task(m, **KW)
    o = mt.options
    assert (o.min_success_ratio, o.concurrency, o.retries, o.timeout) == (0.9, 10, 2, 10.0)
    assert out(mt, a=[1, 2]) == [2, 3]


def test_run_all_sub_nodes_default():
    """flytekit test_array_node_map_task.py::test_run_all_sub_nodes_default: off."""
    assert mapnb.map_task(array_node_map_task(pt.plain_t1)).options.run_all_sub_nodes is False


def test_run_all_sub_nodes_set():
    """flytekit test_array_node_map_task.py::test_run_all_sub_nodes_set: taken from the map."""
    mt = mapnb.map_task(array_node_map_task(pt.plain_t1, run_all_sub_nodes=True), **KW)
    assert mt.options.run_all_sub_nodes is True
    assert out(mt, a=[1, 2]) == [2, 3]


@pytest.mark.parametrize("t", [pt.gpu_t1, pt.shm_t1], ids=["accelerator", "shared_memory"])
def test_serialization_extended_resources(t):
    """flytekit test_array_node_map_task.py::test_serialization_extended_resources(_shared_memory),
    what a local run sees: a task with an accelerator or shared_memory is accepted and runs
    (those reach the cluster through backend="flyte")."""
    assert out(mapnb.map_task(array_node_map_task(t), **KW), a=[1, 2]) == [2, 3]


def test_supported_node_type():
    """flytekit test_array_node_map_task.py::test_supported_node_type: a task of no inputs
    and no outputs is a valid map task."""
    mt = mapnb.map_task(array_node_map_task(pt.no_io_task), **KW)
    assert mt.name == "no_io_task"


@pytest.mark.parametrize("target", [pt.test_dynamic, pt.test_eager, pt.test_wf], ids=["dynamic", "eager", "workflow"])
def test_unsupported_node_types(target):
    """flytekit test_array_node_map_task.py::test_unsupported_node_types: @dynamic, @eager
    and @workflow are refused with a ValueError (mapnb's InvalidMapError is one)."""
    with pytest.raises(ValueError, match="does not map|not workflows"):
        mapnb.map_task(target)


# ======================================================================================
# test_map_task.py (the legacy map_task)


def test_map_docs():
    """flytekit test_map_task.py::test_map_docs: legacy map_task(metadata=TaskMetadata(retries=1),
    concurrency=10, min_success_ratio=0.75) gives ["1", "2", "3"]; its
    ``with_overrides(requests=Resources(cpu="10M"))`` is refused (deliberate: ten million
    CPUs, which mapnb, scheduling by requests locally, cannot read as a CPU count)."""
    m = legacy_map_task(pt.my_mappable_task, metadata=TaskMetadata(retries=1), concurrency=10, min_success_ratio=0.75)
    mt = mapnb.map_task(m, **KW)
    assert (mt.options.retries, mt.options.concurrency, mt.options.min_success_ratio) == (1, 10, 0.75)
    assert out(mt, a=[1, 2, 3]) == ["1", "2", "3"]
    with pytest.raises(InvalidMapError, match="cpu must be"):
        mt.with_overrides(requests=flytekit.Resources(cpu="10M"))
    assert out(mt.with_overrides(requests=flytekit.Resources(cpu="10m")), a=[1, 2, 3]) == ["1", "2", "3"]


def test_map_task_types():
    """flytekit test_map_task.py::test_map_task_types: ["7", "8"]; a scalar for a list is
    refused (flytekit: TypeError; mapnb: InvalidMapError before anything runs); elements of
    the wrong type fail their items with flytekit's message (flytekit: TypeError for the map)."""
    mt = mapnb.map_task(legacy_map_task(pt.t1_legacy, metadata=TaskMetadata(retries=1)), **KW)
    assert out(mt, a=[5, 6]) == ["7", "8"]
    with pytest.raises(InvalidMapError, match="a= must be a finite iterable"):
        mt(a=1)
    with pytest.raises(MapTaskError, match="Failed to convert inputs of task.*Expected value of type <class 'int'>"):
        mt(a=["invalid", "args"])


def test_map_tasks_only():
    """flytekit test_map_task.py::test_map_tasks_only: a workflow and a launch plan are
    refused with a ValueError (a launch plan: deliberate for mapnb, only a cluster maps it)."""
    with pytest.raises(ValueError, match="is a flytekit workflow"):
        mapnb.map_task(pt.wf1)
    with pytest.raises(ValueError, match="is a flytekit launch plan"):
        mapnb.map_task(pt.lp_wf1)


def test_map_task_metadata():
    """flytekit test_map_task.py::test_map_task_metadata: the map's metadata replaces the
    task's; without one the task's (cache=True, cache_version="1") applies."""
    mt = mapnb.map_task(legacy_map_task(pt.t2_legacy, metadata=TaskMetadata(retries=1)))
    assert mt.options.retries == 1 and not mt.cache.enabled
    mt2 = mapnb.map_task(legacy_map_task(pt.t2_legacy))
    assert mt2.cache.enabled and mt2.cache.version == "1"


@pytest.mark.parametrize("min_success_ratio", [None, 1, 0.5])
def test_map_task_min_success_ratio(min_success_ratio):
    """flytekit test_map_task.py::test_map_task_min_success_ratio: every ratio runs."""
    mt = mapnb.map_task(legacy_map_task(pt.some_task_ok, min_success_ratio=min_success_ratio), **KW)
    assert out(mt, inputs=[1, 2, 3, 4]) == [1, 2, 3, 4]


def test_map_task_parameter_order():
    """flytekit test_map_task.py::test_map_task_parameter_order, on the default local pool."""
    a, b = [1, 2, 3], [0.1, 0.2, 0.3]
    results = [
        out(mapnb.map_task(legacy_map_task(functools.partial(t, c="c")), progress=False), a=a, b=b)
        for t in (pt.task1, pt.task2, pt.task3)
    ]
    assert results[0] == results[1] == results[2] == ["1 - 0.1 - c", "2 - 0.2 - c", "3 - 0.3 - c"]


@pytest.mark.parametrize("min_success_ratio, should_raise_error", [(None, True), (1, True), (0.75, False), (0.5, False)])
def test_raw_execute_with_min_success_ratio_legacy(min_success_ratio, should_raise_error):
    """flytekit test_map_task.py::test_raw_execute_with_min_success_ratio (legacy map_task)."""
    mt = mapnb.map_task(legacy_map_task(pt.some_task1, min_success_ratio=min_success_ratio), **KW)
    if should_raise_error:
        with pytest.raises(MapTaskError, match="Unexpected inputs: 2"):
            mt(inputs=[1, 2, 3, 4])
    else:
        assert out(mt, inputs=[1, 2, 3, 4]) == [1, None, 3, 4]


def test_map_task_pod_template_override():
    """flytekit test_map_task.py::test_map_task_pod_template_override: accepted, no meaning
    for a local run (as in flytekit's local run); backend="flyte" sets it on the node, with
    the name, labels and annotations flytekit's test checks there. (flytekit's test builds
    its pod_spec with the kubernetes client, not installed here: a plain dict stands in.)"""
    template = flytekit.PodTemplate(
        primary_container_name="primary1",
        labels={"lKeyA": "lValA", "lKeyB": "lValB"},
        annotations={"aKeyA": "aValA", "aKeyB": "aValB"},
        pod_spec={"containers": [{"name": "primary1", "image": "random:image"}]},
    )
    mt = mapnb.map_task(legacy_map_task(pt.my_mappable_task), **KW).with_overrides(pod_template=template)
    assert out(mt, a=[3]) == ["3"]
    node = mapnb.flyte.to_flyte(mt, a=[3]).workflow.nodes[0]
    assert node._pod_template.primary_container_name == "primary1"
    assert node._pod_template.labels == {"lKeyA": "lValA", "lKeyB": "lValB"}
    assert node._pod_template.annotations["aKeyA"] == "aValA"


# ======================================================================================
# test_partials.py


def test_basics_1():
    """flytekit test_partials.py::test_basics_1, what a local run sees: partial(t1,
    b="hello", c=3.14) maps over a; a partial of a partial too."""
    outside_p = functools.partial(pt.partials_t1, b="hello", c=3.14)
    assert out(mapnb.map_task(outside_p, **KW), a=[1, 2]) == [1 + 5 + 3, 2 + 5 + 3]
    bind_c = functools.partial(pt.partials_t1, c=2.7)
    assert out(mapnb.map_task(functools.partial(bind_c, b="got str"), **KW), a=[1]) == [1 + 7 + 2]


@BOTH
def test_partials_map_task_types(map_task_fn):
    """flytekit test_partials.py::test_map_task_types: partials of partials with
    metadata=TaskMetadata(cache=True, cache_version="1"); a second run is served from the cache."""
    t3_bind_c1 = functools.partial(functools.partial(pt.partials_t3, b="hello"), c=3.14)
    t3_bind_c2 = functools.partial(functools.partial(pt.partials_t3, b="world"), c=2.78)
    meta = TaskMetadata(cache=True, cache_version="1")
    mt1 = mapnb.map_task(map_task_fn(t3_bind_c1, metadata=meta), **KW)
    mt2 = mapnb.map_task(map_task_fn(t3_bind_c2, metadata=meta), **KW)
    assert mt1.cache.enabled and mt1.cache.version == "1"
    assert out(mt1, a=[1, 2]) == ["1hello3.14", "2hello3.14"]
    assert out(mt2, a=[3, 4, 5]) == ["3world2.78", "4world2.78", "5world2.78"]
    assert mt1(a=[1, 2])["status"].tolist() == ["cached", "cached"]


def test_lists_cannot_be_used_in_partials():
    """flytekit test_partials.py::test_lists_cannot_be_used_in_partials (legacy map_task):
    flytekit's own ValueError. A plain partial follows the ArrayNode map task, which binds
    list values to list-typed inputs (deliberate: mapnb follows the ArrayNode)."""
    with pytest.raises(ValueError, match="do not support partial tasks with lists"):
        mapnb.map_task(legacy_map_task(functools.partial(pt.list_partial_t, b=["hello", "world"])))
    mt = mapnb.map_task(functools.partial(pt.list_partial_t, b=["hello", "world"]), **KW)
    assert out(mt, a=[1, 2]) == ["1['hello', 'world']", "2['hello', 'world']"]


@BOTH
def test_everything(map_task_fn):
    """flytekit test_partials.py::test_everything, the map tasks inside its @dynamic: list
    and DataFrame inputs, b bound, then a2 (a DataFrame) bound too; flytekit's expected strings."""
    import pandas as pd

    df1 = pd.DataFrame({"Name": ["Tom", "Joseph"], "Age": [20, 22]})
    df2 = pd.DataFrame({"Name": ["Rachel", "Eve", "Mary"], "Age": [22, 23, 24]})
    sl = [3.14, 2.718]
    t3_bind_b2 = functools.partial(pt.everything_t3, b="world")
    mt1 = mapnb.map_task(map_task_fn(t3_bind_b2), **KW)
    i = out(mt1, a=[1, 2], a2=[df1, df2], c=[[1.1, 2.0, 3.0], [1.1, 2.0, 3.0]], d=[sl, sl])
    j = out(mt1, a=[3, 4, 5], a2=[df1, df2, df1], c=[[1.0], [2.0], [3.0]], d=[sl, sl, sl])
    mt3 = mapnb.map_task(map_task_fn(functools.partial(t3_bind_b2, a2=df1)), **KW)
    k = out(mt3, a=[3, 4, 5], c=[[1.0], [2.0], [3.0]], d=[sl, sl, sl])
    assert f"{i}-{j}-{k}" == (
        "['1pdsize2world[1.1, 2.0, 3.0]&&[3.14, 2.718]', '2pdsize3world[1.1, 2.0, 3.0]&&[3.14, 2.718]']-"
        "['3pdsize2world[1.0]&&[3.14, 2.718]', '4pdsize3world[2.0]&&[3.14, 2.718]', "
        "'5pdsize2world[3.0]&&[3.14, 2.718]']-['3pdsize2world[1.0]&&[3.14, 2.718]', "
        "'4pdsize2world[2.0]&&[3.14, 2.718]', '5pdsize2world[3.0]&&[3.14, 2.718]']"
    )


# ======================================================================================
# test_array_node.py


@pytest.mark.parametrize(
    "min_successes, min_success_ratio, should_raise_error",
    [
        (None, None, True),
        (None, 1, True),
        (None, 0.75, False),
        (None, 0.5, False),
        (1, None, False),
        (3, None, False),
        (4, None, True),
        (1, 1.0, False),  # min_successes takes precedence over min_success_ratio
        (4, 0.1, True),
    ],
)
def test_local_exec_lp_min_successes(min_successes, min_success_ratio, should_raise_error):
    """flytekit test_array_node.py::test_local_exec_lp_min_successes: the same table with
    the launch plan's task (mapnb refuses the launch plan: deliberate, only a cluster maps it)."""
    with pytest.raises(InvalidMapError, match="only a Flyte cluster runs"):
        mapnb.map_task(array_node(pt.ex_lp, min_successes=min_successes, min_success_ratio=min_success_ratio))
    m = array_node_map_task(pt.ex_task, min_successes=min_successes, min_success_ratio=min_success_ratio)
    mt = mapnb.map_task(m, **KW)
    if should_raise_error:
        with pytest.raises(MapTaskError, match="Test"):
            mt(val=[1, 2, 3, 4])
    else:
        assert out(mt, val=[1, 2, 3, 4]) == [None, 2, 3, 4]


def test_map_task_wrapper():
    """flytekit test_array_node.py::test_map_task_wrapper: [14, 96, 270] over a Union input,
    on the default local pool; the launch plan map is refused (deliberate)."""
    mt = mapnb.map_task(array_node_map_task(pt.multiply), progress=False)
    assert out(mt, val=[1, 3, 5], val1=[2, 4, 6], val2=[7, 8, 9]) == [14, 96, 270]
    with pytest.raises(InvalidMapError, match="launch plan"):
        mapnb.map_task(array_node_map_task(pt.ex_lp))


# ======================================================================================
# test_checkpoint.py: flytekit's SyncCheckpoint cases, inside a subtask, across a retry.


def _one(t: typing.Any) -> typing.Any:
    df = mapnb.map_task(t, **KW)(x=[1])
    assert df["attempts"].tolist() == [2], df.to_dict("records")
    return df["output"].tolist()[0]


def test_sync_checkpoint_write():
    """flytekit test_checkpoint.py::test_sync_checkpoint_write: read() and restore() are
    None without a previous checkpoint; write() stores bytes the retry reads."""
    assert _one(pt.cp_write) == "bytes"


def test_sync_checkpoint_save_file():
    """flytekit test_checkpoint.py::test_sync_checkpoint_save_file: save(an open file);
    save(an unsupported object) raises ValueError."""
    assert _one(pt.cp_save_file) == "blah"


def test_sync_checkpoint_save_filepath():
    """flytekit test_checkpoint.py::test_sync_checkpoint_save_filepath: save(a path) keeps
    the file's name; the retry restores it."""
    assert _one(pt.cp_save_filepath) == "test"


def test_sync_checkpoint_restore():
    """flytekit test_checkpoint.py::test_sync_checkpoint_restore: restore() into a missing
    folder is a ValueError; into a folder returns it; again returns the same folder."""
    assert _one(pt.cp_restore) == "True True True"


def test_sync_checkpoint_restore_corrupt():
    """flytekit test_checkpoint.py::test_sync_checkpoint_restore_corrupt: a previous
    checkpoint that is gone is FlyteDataNotFoundException, every time."""
    assert _one(pt.cp_restore_corrupt) == "FlyteDataNotFoundException FlyteDataNotFoundException"


def test_sync_checkpoint_restore_default_path():
    """flytekit test_checkpoint.py::test_sync_checkpoint_restore_default_path: read() gives
    the bytes; restore() without a path returns the folder read() downloaded to."""
    assert _one(pt.cp_restore_default_path) == "prev-bytes True True"


def test_sync_checkpoint_read_empty_dir():
    """flytekit test_checkpoint.py::test_sync_checkpoint_read_empty_dir: read() of an empty
    previous checkpoint is None."""
    assert _one(pt.cp_read_empty_dir) == "None"


def test_sync_checkpoint_read_multiple_files():
    """flytekit test_checkpoint.py::test_sync_checkpoint_read_multiple_files: read() of two
    files is ValueError("Expected exactly one checkpoint - found 2")."""
    assert _one(pt.cp_read_multiple_files) == "Expected exactly one checkpoint - found 2"


def test_checkpoint_task():
    """flytekit test_checkpoint.py::test_checkpoint_task: t1(n=5) == 6, on the local pool."""
    assert out(mapnb.map_task(pt.cp_t1, progress=False), n=[5]) == [6]


# ======================================================================================
# flytesnacks examples/advanced_composition/advanced_composition/map_task.py, checkpoint.py


def test_flytesnacks_map_task_example_1_detect_anomalies():
    """flytesnacks map_task.py example 1: map_workflow()'s default data, on the local pool."""
    data = [10, 12, 11, 10, 13, 12, 100, 11, 12, 10]
    mt = mapnb.map_task(array_node_map_task(pt.detect_anomalies), progress=False)
    assert out(mt, data_point=data) == [False, True, False, False, True, True, True, False, True, False]


def test_flytesnacks_map_task_example_2_suboptimal_mappable_task():
    """flytesnacks map_task.py example 2: a task calling a task. As written it returns a
    float for an int, which flytekit refuses locally ("Failed to convert outputs of task
    '...upperhalf'"); mapnb fails every item with flytekit's message."""
    mt = mapnb.map_task(array_node_map_task(pt.suboptimal_mappable_task), **KW)
    with pytest.raises(MapTaskError, match="Failed to convert outputs of task .*upperhalf"):
        mt(a=[1, 2, 3])


def test_flytesnacks_map_task_example_4_partial():
    """flytesnacks map_task.py example 4: multiple_inputs_map_workflow()'s defaults."""
    mt = mapnb.map_task(array_node_map_task(functools.partial(pt.multi_input_task, price=6.0, shipping=7.0)), **KW)
    assert out(mt, quantity=[1, 2, 3, 4, 5]) == [42.0, 84.0, 126.0, 168.0, 210.0]


def test_flytesnacks_map_task_example_5_partial_with_task_output():
    """flytesnacks map_task.py example 5: a partial bound to a task's output (get_price())."""
    p = pt.get_price()
    mt = mapnb.map_task(array_node_map_task(functools.partial(pt.multi_input_task, price=p, shipping=6.0)), **KW)
    assert out(mt, quantity=[1, 2, 3, 4, 5]) == [42.0, 84.0, 126.0, 168.0, 210.0]


def test_flytesnacks_map_task_example_6_multiple_lists():
    """flytesnacks map_task.py example 6: two lists and a bound input."""
    list_q, list_p = [1, 2, 3, 4, 5], [6.0, 9.0, 8.7, 6.5, 1.2]
    mt = mapnb.map_task(array_node_map_task(functools.partial(pt.multi_input_task, shipping=6.0)), **KW)
    assert out(mt, quantity=list_q, price=list_p) == [q * p * 6.0 for q, p in zip(list_q, list_p)]


def test_flytesnacks_lists_of_different_lengths():
    """Multiple lists of different lengths: flytekit truncates to the shortest silently;
    mapnb refuses them before anything runs (deliberate)."""
    mt = mapnb.map_task(array_node_map_task(functools.partial(pt.multi_input_task, shipping=6.0)), **KW)
    with pytest.raises(InvalidMapError, match="same length"):
        mt(quantity=[1, 2, 3], price=[6.0, 9.0])


def test_flytesnacks_checkpoint_example():
    """flytesnacks checkpoint.py: use_checkpoint(n_iterations=10) fails a third of the way
    on per attempt and resumes from its checkpoint: 9 after 4 attempts (flytekit's local run
    has no retries and fails), on the default local pool."""
    df = mapnb.map_task(pt.use_checkpoint, progress=False)(n_iterations=[10])
    assert df["output"].tolist() == [9] and df["attempts"].tolist() == [4]


# ======================================================================================
# test_array_node_map_task.py's serialisation cases, on what backend="flyte" sends (the
# ArrayNode mapnb builds, serialised by flytekit's get_serializable, as pyflyte register).


def _sent(m: typing.Any, **lists: typing.Any) -> typing.Any:
    return mapnb.flyte.to_flyte(mapnb.map_task(m), **lists)


def test_serialization_metadata_sent():
    """flytekit test_array_node_map_task.py::test_serialization_metadata: the map's
    metadata=TaskMetadata(retries=2) replaces the task's, so the task's interruptible=True
    is not sent (nor on the node)."""
    fm = _sent(array_node_map_task(pt.interruptible_t1, metadata=TaskMetadata(retries=2)), a=[1])
    assert not fm.serialize()[fm.map_task].template.metadata.interruptible
    assert not fm.workflow_spec().template.nodes[0].metadata.interruptible


def test_serialization_metadata2_sent():
    """flytekit test_array_node_map_task.py::test_serialization_metadata2: the ArrayNode's
    min_success_ratio 0.9 and parallelism 10, no run_all_sub_nodes, the node's timeout
    unset; the task template's retries 2, interruptible, timeout 10 s."""
    m = array_node_map_task(
        pt.optional_t1,
        min_success_ratio=0.9,
        concurrency=10,
        metadata=TaskMetadata(retries=2, interruptible=True, timeout=datetime.timedelta(seconds=10)),
    )
    fm = _sent(m, a=[1, 2])
    node = fm.workflow_spec().template.nodes[0]
    assert node.metadata.timeout == datetime.timedelta()
    an = node.array_node
    assert an._min_success_ratio == 0.9 and an._parallelism == 10 and not an._run_all_sub_nodes
    meta = fm.serialize()[fm.map_task].template.metadata
    assert meta.retries.retries == 2 and meta.interruptible and meta.timeout == datetime.timedelta(seconds=10)


@pytest.mark.parametrize("run_all", [True, False], ids=["set", "default"])
def test_run_all_sub_nodes_serialization_sent(run_all):
    """flytekit test_array_node_map_task.py::test_run_all_sub_nodes_serialization(_default)."""
    kw = {"run_all_sub_nodes": True} if run_all else {}
    an = _sent(array_node_map_task(pt.plain_t1, **kw), a=[1]).array_node()
    assert an._run_all_sub_nodes is run_all and an.to_flyte_idl().run_all_sub_nodes is run_all


def test_serialization_extended_resources_sent():
    """flytekit test_array_node_map_task.py::test_serialization_extended_resources and
    ..._shared_memory: the accelerator and shared memory reach the task template."""
    fm = _sent(array_node_map_task(pt.gpu_t1), a=[1])
    assert fm.serialize()[fm.map_task].template.extended_resources.gpu_accelerator.device == "test_gpu"
    fm = _sent(array_node_map_task(pt.shm_t1), a=[1])
    assert fm.serialize()[fm.map_task].template.extended_resources.shared_memory.size_limit == "2Gi"


@pytest.mark.parametrize(
    "make, value",
    [
        (lambda: ArrayNodeMapTask(pt.task_1, bound_inputs_values={"a": 1}), 1),
        (lambda: ArrayNodeMapTask(functools.partial(pt.task_1, a=1)), 1),
        (lambda: ArrayNodeMapTask(functools.partial(pt.task_1, a=1), bound_inputs_values={"a": 2}), 2),
    ],
    ids=["bound_input", "partials", "bound_input_partials_collision"],
)
def test_bound_inputs_serialization_sent(make, value):
    """flytekit test_array_node_map_task.py::test_bound_inputs_serialization (its cases of
    static values; its upstream-promise cases are workflow wiring): ``a`` is a scalar
    binding on the node, ``_bound_inputs == {"a"}``; b and c come from the workflow's
    inputs (mapnb sends the lists as the execution's inputs, not in the workflow). Its
    bound_input_overrides case (a list given for the bound ``a`` too; flytekit sends the
    bound value) is refused by mapnb (deliberate: a value given twice)."""
    fm = _sent(make(), b=[1, 2, 3], c=["a", "b", "c"])
    node = fm.workflow_spec().template.nodes[0]
    inputs = {i.var: i.binding for i in node.inputs}
    assert set(inputs) == {"a", "b", "c"}
    assert inputs["a"].scalar.primitive.integer == value
    # The lists are the workflow's inputs (flytekit's test binds them as static lists).
    assert inputs["b"].promise.var == "b" and inputs["c"].promise.var == "c"
    assert fm.inputs == {"b": [1, 2, 3], "c": ["a", "b", "c"]}
    assert node.array_node._bound_inputs == {"a"}
    with pytest.raises(InvalidMapError, match="'a' is fixed"):
        mapnb.map_task(make(), **KW)(a=[1, 2, 3], b=[1, 2, 3], c=["a", "b", "c"])


# ======================================================================================
# The same objects run by flytekit itself: mapnb's outputs are flytekit's, value for value.


@pytest.mark.parametrize(
    "make, lists",
    [
        (lambda: array_node_map_task(pt.say_hello), {"name": ["abc", "def"]}),
        (lambda: array_node_map_task(functools.partial(pt.task2, c="c")), {"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]}),
        (lambda: ArrayNodeMapTask(pt.task4, bound_inputs_values={"c": ["c", "d"]}), {"a": [[1, 2]], "b": [[0.1, 0.2]]}),
        (lambda: array_node_map_task(pt.some_task1, min_success_ratio=0.5), {"inputs": [1, 2, 3, 4]}),
        (lambda: legacy_map_task(pt.t1_legacy, metadata=TaskMetadata(retries=1)), {"a": [5, 6]}),
        (lambda: array_node_map_task(pt.multiply), {"val": [1, 3, 5], "val1": [2, "x", 6], "val2": [7, 8, 9]}),
        (lambda: array_node_map_task(pt.detect_anomalies), {"data_point": [10, 12, 11, 100]}),
        (
            lambda: array_node_map_task(functools.partial(pt.multi_input_task, shipping=6.0)),
            {"quantity": [1, 2, 3, 4, 5], "price": [6.0, 9.0, 8.7, 6.5, 1.2]},
        ),
        (lambda: array_node_map_task(pt.cp_t1), {"n": [5, 6]}),
    ],
    ids=[
        "test_map", "parameter_order", "bound_list_inputs", "min_success_ratio", "legacy",
        "union_input", "flytesnacks_1", "flytesnacks_6", "checkpoint_task",
    ],
)  # fmt: skip
def test_outputs_are_flytekits_own(make, lists):
    """Each object run by flytekit's local map (outside a workflow, as flytekit's
    test_partials_local_execute does) and by mapnb: the same list of outputs (None where an
    item failed and the map allows it)."""
    expected = make()(**lists)
    assert out(mapnb.map_task(make(), **KW), **lists) == expected
