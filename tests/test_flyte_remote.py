"""backend="flyte": the translation to flytekit's ArrayNode map task, and following a run.

No Flyte cluster runs here. The translation is checked on flytekit's own serialised
models (``get_serializable``, as ``pyflyte register`` sends them); the following logic on
flytekit's own model objects (``flytekit.models``) built from recorded phase sequences.
"""

from __future__ import annotations

import datetime
import functools
import json

import pytest

import mapnb
from mapnb import InvalidMapError, Resources

flytekit = pytest.importorskip("flytekit")

from mapnb.flyte import to_flyte  # noqa: E402

from . import flyte_tasks as ft  # noqa: E402  (needs flytekit)


def scaled(x: int, factor: float) -> float:
    return x * factor


def untyped(x, y) -> float:  # noqa: ANN001 - inputs without annotations on purpose
    return x + y


def no_return_type(x: int):  # noqa: ANN201
    return x


def _simple(t) -> str:
    from flyteidl.core import types_pb2

    return types_pb2.SimpleType.Name(t.simple)


def _quantities(entries) -> set[tuple[str, str]]:
    from flyteidl.core import tasks_pb2

    return {(tasks_pb2.Resources.ResourceName.Name(r.name), r.value) for r in entries}


def _sub_task(fm):
    """The registered task the ArrayNode's sub-node runs (its template, as a protobuf)."""
    ref = fm.array_node().node.task_node.reference_id
    return next(
        m.template.to_flyte_idl()
        for m in fm.serialize().values()
        if getattr(m, "template", None) is not None and m.template.id == ref
    )


def test_a_plain_function_becomes_an_array_node_with_the_users_settings():
    mt = mapnb.map_task(
        functools.partial(scaled, factor=1.5), concurrency=3, min_success_ratio=0.5, retries=2,
        timeout=datetime.timedelta(minutes=2), cache=True, cache_version="v7", cache_serialize=True,
    ).with_overrides(requests=Resources(cpu="500m", mem="1Gi"), limits=Resources(mem="2Gi", gpu=1))  # fmt: skip
    fm = to_flyte(mt, x=[1, 2, 3])
    an = fm.array_node().to_flyte_idl()
    assert an.parallelism == 3
    assert an.min_success_ratio == pytest.approx(0.5)
    assert list(an.bound_inputs) == ["factor"]
    node = an.node
    bindings = {b.var: b.binding for b in node.inputs}
    assert bindings["factor"].scalar.primitive.float_value == 1.5  # bound: a scalar, not a list
    assert bindings["x"].promise.var == "x"  # mapped: the workflow's list input
    assert node.metadata.retries.retries == 2
    assert node.metadata.timeout.seconds == 120
    res = node.task_node.overrides.resources
    assert _quantities(res.requests) == {("CPU", "500m"), ("MEMORY", "1Gi")}
    assert _quantities(res.limits) == {("GPU", "1"), ("MEMORY", "2Gi")}
    meta = _sub_task(fm).metadata
    assert meta.discoverable and meta.discovery_version == "v7" and meta.cache_serializable
    assert meta.retries.retries == 2
    # The workflow takes the mapped list; its output is a list of optionals (failed slots None).
    iface = fm.workflow_spec().template.to_flyte_idl().interface
    assert list(iface.inputs.variables) == ["x"]
    assert _simple(iface.inputs.variables["x"].type.collection_type) == "INTEGER"
    out = iface.outputs.variables["o0"].type.collection_type
    assert {_simple(v) for v in out.union_type.variants} == {"FLOAT", "NONE"}
    assert fm.inputs == {"x": [1, 2, 3]} and fm.bound == {"factor": 1.5}


def test_defaults_leave_parallelism_to_the_workflow_and_need_every_item():
    fm = to_flyte(mapnb.map_task(functools.partial(scaled, factor=2.0)), x=[1])
    an = fm.array_node().to_flyte_idl()
    assert not an.HasField("parallelism")  # flytekit's None: the workflow's parallelism
    assert an.min_success_ratio == 1.0
    meta = _sub_task(fm).metadata
    assert not meta.discoverable and meta.retries.retries == 0 and not meta.HasField("timeout")


def test_cache_without_a_version_takes_mapnbs_version_from_the_source():
    fm = to_flyte(mapnb.map_task(functools.partial(scaled, factor=2.0), cache=True), x=[1])
    version = _sub_task(fm).metadata.discovery_version
    assert len(version) == 16
    # The same function: the same version, whatever is bound or mapped.
    again = to_flyte(mapnb.map_task(scaled, cache=True), x=[1], factor=[1.0])
    assert _sub_task(again).metadata.discovery_version == version


def test_a_flytekit_task_keeps_its_own_settings_and_ignored_inputs():
    fm = to_flyte(mapnb.map_task(ft.counted), x=[1, 2], log=["a", "b"])
    meta = _sub_task(fm).metadata
    assert meta.discoverable and meta.discovery_version == "1"
    assert list(meta.cache_ignore_input_vars) == ["log"]
    fm = to_flyte(mapnb.map_task(ft.fails_first_attempt, retries=5), x=[1])
    assert fm.array_node().to_flyte_idl().node.metadata.retries.retries == 5  # mapnb's argument wins
    assert fm.task is ft.fails_first_attempt
    res = to_flyte(mapnb.map_task(ft.modest), x=[1]).array_node().to_flyte_idl().node.task_node.overrides
    assert _quantities(res.resources.requests) == {("CPU", "500m"), ("MEMORY", "100Mi")}


def test_a_flytekit_map_task_keeps_min_successes_and_bound_values():
    fmt = flytekit.map_task(functools.partial(ft.t1, b="!"), concurrency=2, min_successes=2)
    an = to_flyte(mapnb.map_task(fmt), a=[1, 2, 3]).array_node().to_flyte_idl()
    assert an.parallelism == 2
    assert an.WhichOneof("success_criteria") == "min_successes" and an.min_successes == 2
    assert {b.var: b.binding.scalar.primitive.string_value for b in an.node.inputs if b.var == "b"} == {
        "b": "!"
    }


def test_min_successes_and_run_all_sub_nodes_given_to_map_task_reach_the_array_node():
    an = to_flyte(
        mapnb.map_task(ft.t1, min_successes=2, run_all_sub_nodes=True), a=[1, 2, 3], b=["x"] * 3
    ).array_node().to_flyte_idl()
    assert an.WhichOneof("success_criteria") == "min_successes" and an.min_successes == 2
    assert an.run_all_sub_nodes is True
    an = to_flyte(mapnb.map_task(scaled, min_success_ratio=0.5), x=[1, 2], factor=[1.0, 2.0]).array_node()
    idl = an.to_flyte_idl()
    assert idl.WhichOneof("success_criteria") == "min_success_ratio" and idl.run_all_sub_nodes is False


def test_a_mapnb_task_brings_its_settings_and_bad_maps_are_refused_clearly():
    t = mapnb.task(retries=2, timeout=30, requests=Resources(cpu=2))(scaled)
    an = to_flyte(mapnb.map_task(functools.partial(t, factor=1.0)), x=[1]).array_node().to_flyte_idl()
    assert (an.node.metadata.retries.retries, an.node.metadata.timeout.seconds) == (2, 30)
    assert _quantities(an.node.task_node.overrides.resources.requests) == {("CPU", "2")}
    with pytest.raises(InvalidMapError, match=r"binds inputs by name: use functools.partial\(f, b=...\)"):
        to_flyte(mapnb.map_task(functools.partial(scaled, 1)), factor=[1.0])
    with pytest.raises(InvalidMapError, match=r"has no input 'y'; its inputs are x, factor"):
        to_flyte(mapnb.map_task(scaled), x=[1], factor=[1.0], y=[2])


def test_a_flyte2_task_is_refused_with_what_to_do_instead():
    pytest.importorskip("flyte")
    from . import flyte2_tasks

    with pytest.raises(InvalidMapError, match=r"square is a Flyte 2 task, which a Flyte 2 cluster runs"):
        to_flyte(mapnb.map_task(flyte2_tasks.square), x=[1])


def test_unannotated_inputs_take_their_values_type_or_ask_for_an_annotation():
    fm = to_flyte(mapnb.map_task(untyped, backend="sequential"), x=[1, 2], y=[0.5, 1.5])
    inputs = fm.task.python_interface.inputs
    assert inputs == {"x": int, "y": float}
    with pytest.raises(InvalidMapError, match=r"type of untyped's input 'y'.*annotate it"):
        to_flyte(mapnb.map_task(untyped), x=[1, 2], y=[1, "a"])
    with pytest.raises(InvalidMapError, match=r"return type of no_return_type: annotate it"):
        to_flyte(mapnb.map_task(no_return_type), x=[1])


def test_a_map_task_cell_is_translated_with_its_values_types():
    from mapnb.jupyter.magic import compile_body

    cell = compile_body("y = x * 2\ny", ["x"], {}, "<cell>")
    fm = to_flyte(mapnb.map_task(cell, retries=1), x=[1, 2])
    assert fm.task.python_interface.inputs == {"x": int}
    assert fm.array_node().to_flyte_idl().node.metadata.retries.retries == 1
    assert fm.task.execute(x=4) == 8  # the wrapped cell runs as flytekit calls it


def test_the_idl_prints_as_json_blocks():
    text = to_flyte(mapnb.map_task(functools.partial(scaled, factor=2.0), concurrency=4), x=[1]).idl()
    assert text.startswith("# TaskSpec ")
    blocks = text.split("\n\n# ")
    wf = json.loads(blocks[-1].split("\n", 1)[1])
    node = wf["template"]["nodes"][0]["arrayNode"]
    assert node["parallelism"] == 4


# --------------------------------------------------------------------------------------
# Following a run: flytekit's own models (as FlyteRemote's client returns them), built from
# phase sequences an ArrayNode reports (propeller sends one ExternalResourceInfo per
# subtask attempt; admin keeps the latest per (index, attempt)).


def _read(*subtasks, phase: str = "RUNNING"):
    """One read of the ArrayNode's task execution: ``subtasks`` are
    (index, attempt, phase, cache_status) tuples; -> flytekit's TaskExecution model."""
    from flyteidl.admin import task_execution_pb2
    from flyteidl.core import catalog_pb2, execution_pb2, identifier_pb2
    from flyteidl.event import event_pb2
    from flytekit.models.admin.task_execution import TaskExecution

    resources = [
        event_pb2.ExternalResourceInfo(
            external_id=f"abc-n0-0-n{i}-{a}",
            index=i,
            retry_attempt=a,
            phase=execution_pb2.TaskExecution.Phase.Value(p),
            cache_status=catalog_pb2.CatalogCacheStatus.Value(cache),
            logs=[execution_pb2.TaskLog(uri=f"https://logs/{i}/{a}", name="Kubernetes Logs")]
            if p not in ("QUEUED", "WAITING_FOR_RESOURCES") and cache != "CACHE_HIT"
            else [],
        )
        for i, a, p, cache in ((*s, "CACHE_DISABLED") if len(s) == 3 else s for s in subtasks)
    ]
    pb = task_execution_pb2.TaskExecution(
        id=identifier_pb2.TaskExecutionIdentifier(
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id="n0",
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name="abc"),
            )
        ),
        closure=task_execution_pb2.TaskExecutionClosure(
            phase=execution_pb2.TaskExecution.Phase.Value(phase),
            metadata=event_pb2.TaskExecutionMetadata(external_resources=resources),
        ),
    )
    return TaskExecution.from_flyte_idl(pb)


def _wf(phase: str) -> int:
    from flyteidl.core import execution_pb2

    return execution_pb2.WorkflowExecution.Phase.Value(phase)


def _follow(n, reads, end: str, outputs_at_end=True):
    """Drive a Follower through the reads, the last with the execution's end phase; return
    (final states, every change)."""
    from mapnb.flyte._follow import Follower

    f = Follower(n)
    seen = []
    for r in reads[:-1]:
        seen += f.update([r], execution_phase=_wf("RUNNING"))
    seen += f.update([reads[-1]], execution_phase=_wf(end), outputs_ready=outputs_at_end)
    return f, seen


def test_the_enums_read_by_value_are_flyteidls():
    from flyteidl.core import catalog_pb2, execution_pb2

    from mapnb.flyte import _follow

    assert _follow._TASK_PHASES == {v: k for k, v in execution_pb2.TaskExecution.Phase.items()}
    assert _follow._WORKFLOW_PHASES == {v: k for k, v in execution_pb2.WorkflowExecution.Phase.items()}
    assert _follow._CACHE_STATUSES == {v: k for k, v in catalog_pb2.CatalogCacheStatus.items()}


def test_following_a_map_that_succeeds():
    reads = [
        _read((0, 0, "QUEUED"), (1, 0, "WAITING_FOR_RESOURCES")),
        _read((0, 0, "RUNNING"), (1, 0, "INITIALIZING")),
        _read((0, 0, "SUCCEEDED"), (1, 0, "RUNNING")),
        _read((0, 0, "SUCCEEDED"), (1, 0, "SUCCEEDED"), phase="SUCCEEDED"),
    ]
    f, seen = _follow(2, reads, "SUCCEEDED")
    assert [(s.status, s.attempts) for s in f.states] == [(mapnb.Status.SUCCEEDED, 1)] * 2
    assert f.done
    # Each item: started once, its log link once, finished once, and only when outputs are in.
    for i in range(2):
        kinds = [c.kind for c in seen if c.index == i]
        assert kinds.count("started") == 1 and kinds.count("finished") == 1 and kinds[-1] == "finished"
        links = [c.text for c in seen if c.index == i and "log (" in c.text]
        assert links == [f"[flyte] attempt 1 log (Kubernetes Logs): https://logs/{i}/0\n"]
    early = [c for c in seen[: len(seen) // 2] if c.kind == "finished"]
    assert not early


def test_following_a_partial_failure():
    reads = [
        _read((0, 0, "RUNNING"), (1, 0, "RUNNING"), (2, 0, "RUNNING")),
        _read((0, 0, "SUCCEEDED"), (1, 0, "FAILED"), (2, 0, "RUNNING")),
        _read((0, 0, "SUCCEEDED"), (1, 0, "FAILED"), (2, 0, "SUCCEEDED"), phase="SUCCEEDED"),
    ]
    from mapnb.flyte._follow import Follower

    f = Follower(3)
    f.update([reads[0]], execution_phase=_wf("RUNNING"))
    mid = f.update([reads[1]], execution_phase=_wf("RUNNING"))
    # The failure is told at once; the success waits for the map's outputs.
    assert [(c.index, c.status) for c in mid if c.kind == "finished"] == [(1, mapnb.Status.FAILED)]
    assert "attempt 1 failed on Flyte; see its log: https://logs/1/0" in f.states[1].error
    end = f.update([reads[2]], execution_phase=_wf("SUCCEEDED"), outputs_ready=True)
    assert [(c.index, c.status) for c in end if c.kind == "finished"] == [
        (0, mapnb.Status.SUCCEEDED),
        (2, mapnb.Status.SUCCEEDED),
    ]
    assert f.done


def test_following_a_retry():
    reads = [
        _read((0, 0, "RUNNING")),
        _read((0, 0, "RETRYABLE_FAILED")),
        _read((0, 0, "RETRYABLE_FAILED"), (0, 1, "QUEUED")),
        _read((0, 0, "RETRYABLE_FAILED"), (0, 1, "RUNNING")),
        _read((0, 0, "RETRYABLE_FAILED"), (0, 1, "SUCCEEDED"), phase="SUCCEEDED"),
    ]
    from mapnb.flyte._follow import Follower

    f = Follower(1)
    statuses = []
    for r in reads[:-1]:
        f.update([r], execution_phase=_wf("RUNNING"))
        statuses.append((f.states[0].status, f.states[0].attempts))
    assert statuses == [
        (mapnb.Status.RUNNING, 1),
        (mapnb.Status.RETRYING, 1),
        (mapnb.Status.RETRYING, 1),
        (mapnb.Status.RUNNING, 2),
    ]
    f.update([reads[-1]], execution_phase=_wf("SUCCEEDED"), outputs_ready=True)
    s = f.states[0]
    assert (s.status, s.attempts) == (mapnb.Status.SUCCEEDED, 2)
    assert [uri for _, _, uri in s.logs] == ["https://logs/0/0", "https://logs/0/1"]


def test_a_retry_shows_in_the_items_log():
    reads = [
        _read((0, 0, "RUNNING")),
        _read((0, 0, "RETRYABLE_FAILED"), (0, 1, "RUNNING")),
        _read((0, 0, "RETRYABLE_FAILED"), (0, 1, "FAILED"), phase="FAILED"),
    ]
    f, seen = _follow(1, reads, "FAILED")
    text = "".join(c.text for c in seen)
    assert "[flyte] attempt 2 started (attempt 1 failed)" in text
    assert "attempt 2 log (Kubernetes Logs): https://logs/0/1" in text
    assert (f.states[0].status, f.states[0].attempts) == (mapnb.Status.FAILED, 2)


def test_a_failed_attempt_with_retries_left_waits_for_flytes_next_attempt():
    """Flyte before RETRYABLE_FAILED reports FAILED for an attempt it then retries."""
    from mapnb.flyte._follow import Follower

    f = Follower(1, retries=1)
    f.update([_read((0, 0, "FAILED"))], execution_phase=_wf("RUNNING"))
    assert (f.states[0].status, f.reported[0]) == (mapnb.Status.RETRYING, False)
    f.update([_read((0, 0, "FAILED"), (0, 1, "RUNNING"))], execution_phase=_wf("RUNNING"))
    f.update(
        [_read((0, 0, "FAILED"), (0, 1, "SUCCEEDED"))], execution_phase=_wf("SUCCEEDED"), outputs_ready=True
    )
    assert (f.states[0].status, f.states[0].attempts) == (mapnb.Status.SUCCEEDED, 2)


def test_a_failure_flyte_does_not_retry_ends_with_the_execution():
    """A non-recoverable error: FAILED with retries left, and no further attempt."""
    from mapnb.flyte._follow import Follower

    f = Follower(2, retries=2)
    seen = f.update([_read((0, 0, "FAILED"), (1, 0, "RUNNING"))], execution_phase=_wf("RUNNING"))
    assert not [c for c in seen if c.kind == "finished"]
    end = _read((0, 0, "FAILED"), (1, 0, "SUCCEEDED"))
    seen = f.update([end], execution_phase=_wf("SUCCEEDED"), outputs_ready=True)
    assert [(c.index, c.status, c.attempts) for c in seen if c.kind == "finished"] == [
        (0, mapnb.Status.FAILED, 1),
        (1, mapnb.Status.SUCCEEDED, 1),
    ]
    assert f.done


def test_every_item_ends_when_the_execution_does():
    """A last read that still shows an item running (stale) cannot leave the run waiting."""
    from mapnb.flyte._follow import Follower

    f = Follower(2)
    f.update(
        [_read((0, 0, "SUCCEEDED"), (1, 0, "RUNNING"))], execution_phase=_wf("SUCCEEDED"), outputs_ready=True
    )
    assert f.done and f.states[1].status is mapnb.Status.ABORTED


def test_following_cache_hits():
    reads = [
        _read((0, 0, "SUCCEEDED", "CACHE_HIT"), (1, 0, "RUNNING", "CACHE_MISS")),
        _read((0, 0, "SUCCEEDED", "CACHE_HIT"), (1, 0, "SUCCEEDED", "CACHE_POPULATED"), phase="SUCCEEDED"),
    ]
    f, seen = _follow(2, reads, "SUCCEEDED")
    assert [(s.status, s.attempts, s.cache) for s in f.states] == [
        (mapnb.Status.CACHED, 0, "CACHE_HIT"),
        (mapnb.Status.SUCCEEDED, 1, "CACHE_POPULATED"),
    ]
    assert [(c.index, c.status) for c in seen if c.kind == "finished"] == [
        (0, mapnb.Status.CACHED),
        (1, mapnb.Status.SUCCEEDED),
    ]


def test_following_an_aborted_execution():
    reads = [
        _read((0, 0, "SUCCEEDED"), (1, 0, "RUNNING")),
        _read((0, 0, "SUCCEEDED"), (1, 0, "ABORTED"), phase="ABORTED"),
    ]
    f, seen = _follow(3, reads, "ABORTED")  # item 2 never started
    assert [s.status for s in f.states] == [
        mapnb.Status.SUCCEEDED,
        mapnb.Status.CANCELLED,
        mapnb.Status.CANCELLED,
    ]
    assert f.states[2].error == "the Flyte execution was terminated"
    assert f.done


def test_following_a_map_that_fails_its_min_success_ratio():
    reads = [
        _read((0, 0, "FAILED"), (1, 0, "RUNNING")),
        _read((0, 0, "FAILED"), (1, 0, "ABORTED"), phase="FAILED"),
    ]
    f, _ = _follow(3, reads, "FAILED", outputs_at_end=False)
    assert [s.status for s in f.states] == [mapnb.Status.FAILED, mapnb.Status.ABORTED, mapnb.Status.ABORTED]
    assert "min_success_ratio" in f.states[1].error
    assert f.states[2].error == "the Flyte execution failed before this item ended"


# --------------------------------------------------------------------------------------
# The backend: its errors, and its wiring into a run (a stand-in for FlyteRemote that
# replays reads of flytekit's own models: no cluster runs here).


def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def no_flyte_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLYTECTL_CONFIG", raising=False)
    monkeypatch.delenv("_FLYTECTL_CONFIG_PYFLYTE_OVERRIDE", raising=False)


def test_without_a_flyte_config_the_error_names_both_places(no_flyte_config):
    mt = mapnb.map_task(double, backend="flyte", progress=False)
    with pytest.raises(mapnb.BackendError, match=r"FLYTECTL_CONFIG.*~/\.flyte/config\.yaml"):
        mt.submit(x=[1, 2])


def test_the_config_is_found_where_flytekit_looks(tmp_path, no_flyte_config, monkeypatch):
    from mapnb.backends.flyte import FlyteBackend, config_file

    assert config_file() is None
    home = tmp_path / ".flyte" / "config.yaml"
    home.parent.mkdir()
    home.write_text("admin:\n  endpoint: dns:///localhost:1\n")
    assert config_file() == home
    assert config_file("~/.flyte/config.yaml") == home  # "~" is the user's home
    other = tmp_path / "other.yaml"
    other.write_text("")
    monkeypatch.setenv("FLYTECTL_CONFIG", str(other))
    assert config_file() == other  # FLYTECTL_CONFIG first, as in flytekit
    monkeypatch.setenv("MAPNB_FLYTE_PROJECT", "ml")
    assert (FlyteBackend().project, FlyteBackend(project="p").project, FlyteBackend().domain) == (
        "ml",
        "p",
        "development",
    )
    FlyteBackend().prepare()  # a config exists: no error


def test_what_flyte_cannot_take_is_refused_before_anything_runs(tmp_path):
    from mapnb.backends.flyte import FlyteBackend

    cfg = tmp_path / "config.yaml"
    cfg.write_text("admin:\n  endpoint: dns:///localhost:1\n")
    backend = FlyteBackend(cfg)
    with pytest.raises(InvalidMapError, match="return type of no_return_type"):
        mapnb.map_task(no_return_type, backend=backend, progress=False).submit(x=[1])
    assert not backend._runs


class _Replay:
    """Stands in for FlyteRemote: launching records what was sent; each sync returns the
    next recorded read (flytekit's TaskExecution models) until the last, which stays."""

    def __init__(self, reads, outputs=None, end="SUCCEEDED"):
        self.reads, self.outputs, self.end = list(reads), outputs, end
        self.launched = None
        self.terminated = None

    def execute(self, workflow, inputs, **kw):
        from types import SimpleNamespace

        self.launched = (workflow, inputs, kw)
        return SimpleNamespace(id=SimpleNamespace(name="abc"), is_done=False)

    def sync_execution(self, execution, sync_nodes):
        from types import SimpleNamespace as NS

        last = len(self.reads) == 1 and self.end is not None
        read = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        phase = _wf(self.end if last else "RUNNING")
        outputs = NS(get=lambda name, as_type: self.outputs) if last and self.outputs is not None else None
        node = NS(task_executions=[read])
        return NS(
            id=execution.id, is_done=last, closure=NS(phase=phase), error=None, outputs=outputs,
            node_executions={"n0": node, "start-node": NS(task_executions=[])},
        )  # fmt: skip

    def terminate(self, execution, cause):
        self.terminated = cause


def _backend(tmp_path, remote):
    from mapnb.backends.flyte import FlyteBackend

    cfg = tmp_path / "config.yaml"
    cfg.write_text("admin:\n  endpoint: dns:///localhost:1\n")
    backend = FlyteBackend(cfg, poll_interval=0.01)
    backend._remote = remote
    return backend


def test_a_run_on_the_flyte_backend_follows_the_execution_into_the_dataframe(tmp_path):
    remote = _Replay(
        [
            _read((0, 0, "RUNNING"), (1, 0, "RUNNING"), (2, 0, "SUCCEEDED", "CACHE_HIT")),
            _read(
                (0, 0, "SUCCEEDED"),
                (1, 0, "RETRYABLE_FAILED"),
                (1, 1, "RUNNING"),
                (2, 0, "SUCCEEDED", "CACHE_HIT"),
            ),
            _read((0, 0, "SUCCEEDED"), (1, 1, "FAILED"), (2, 0, "SUCCEEDED", "CACHE_HIT"), phase="SUCCEEDED"),
        ],
        outputs=[2, None, 6],
    )
    mt = mapnb.map_task(
        double, backend=_backend(tmp_path, remote), min_success_ratio=0.5, retries=1, progress=False
    )
    run = mt.submit(x=[1, 2, 3])
    assert run.wait(timeout=60)
    workflow, inputs, kw = remote.launched
    assert inputs == {"x": [1, 2, 3]} and kw["wait"] is False
    assert [str(s) for s in run.statuses] == ["succeeded", "failed", "cached"]
    assert run.attempts == [1, 2, 0]  # Flyte's: item 1 ran twice, item 2 came from its cache
    assert run.outputs == [2, None, 6]
    assert "attempt 2 failed on Flyte; see its log: https://logs/1/1" in run.errors[1].message
    assert "[flyte] attempt 2 started (attempt 1 failed)" in run.logs(1)
    assert "cache: CACHE_HIT" in run.logs(2)
    assert "[flyte] attempt 1 log (Kubernetes Logs): https://logs/0/0" in run.logs(0)
    assert remote.terminated is None


def test_when_the_execution_fails_as_a_whole_no_item_pretends_to_have_an_output(tmp_path):
    remote = _Replay([_read((0, 0, "SUCCEEDED"), (1, 0, "FAILED"), phase="FAILED")], end="FAILED")
    backend = _backend(tmp_path, remote)
    run = mapnb.map_task(double, backend=backend, min_success_ratio=0.0, progress=False).submit(x=[1, 2])
    assert run.wait(timeout=60)
    assert [str(s) for s in run.statuses] == ["aborted", "failed"]
    assert "the map's outputs were not returned" in run.errors[0].message


def test_a_read_that_fails_now_and_then_is_retried(tmp_path):
    class Flaky(_Replay):
        calls = 0

        def sync_execution(self, execution, sync_nodes):
            self.calls += 1
            if self.calls in (1, 3):
                raise ConnectionError("UNAVAILABLE")
            return super().sync_execution(execution, sync_nodes)

    remote = Flaky([_read((0, 0, "RUNNING")), _read((0, 0, "SUCCEEDED"), phase="SUCCEEDED")], outputs=[2])
    run = mapnb.map_task(double, backend=_backend(tmp_path, remote), progress=False).submit(x=[1])
    assert run.wait(timeout=60)
    assert (run.outputs, remote.calls) == ([2], 4)


def test_cancelling_a_run_terminates_its_flyte_execution(tmp_path):
    remote = _Replay([_read((0, 0, "RUNNING"), (1, 0, "QUEUED"))], end=None)
    run = mapnb.map_task(double, backend=_backend(tmp_path, remote), progress=False).submit(x=[1, 2])
    deadline = __import__("time").monotonic() + 60
    while "running" not in [str(s) for s in run.statuses] and __import__("time").monotonic() < deadline:
        run.wait(timeout=0.05)
    run.cancel(wait=True)
    assert [str(s) for s in run.statuses] == ["cancelled", "cancelled"]
    assert remote.terminated.startswith("stopped from mapnb: the run was cancelled")


def test_interactive_modes_payload_carries_a_cell_and_runs_it():
    """What FlyteRemote uploads for notebook code in interactive mode: the pickled tasks."""
    import cloudpickle
    from flytekit.core.python_function_task import PythonFunctionTask
    from flytekit.remote.remote import _get_pickled_target_dict

    from mapnb.jupyter.magic import compile_body

    fm = to_flyte(mapnb.map_task(compile_body("x * 3", ["x"], {}, "<cell>")), x=[1, 2])
    _, payload = _get_pickled_target_dict(fm.workflow)
    loaded = cloudpickle.loads(cloudpickle.dumps(payload))
    (t,) = [e for e in loaded.entities.values() if isinstance(e, PythonFunctionTask)]
    assert "mapnb.flyte.wrapped." in t.name
    assert t.execute(x=4) == 12


def test_a_launch_that_fails_fails_every_item_with_the_reason(tmp_path):
    class Unreachable(_Replay):
        def execute(self, workflow, inputs, **kw):
            raise ConnectionError("failed to connect to dns:///localhost:1")

    backend = _backend(tmp_path, Unreachable([]))
    run = mapnb.map_task(double, backend=backend, min_success_ratio=0.0, progress=False).submit(x=[1, 2])
    assert run.wait(timeout=60)
    assert [str(s) for s in run.statuses] == ["failed", "failed"]
    assert "the flyte backend failed: ConnectionError: failed to connect" in run.errors[0].message


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "mapnb")
    return sh


def test_a_map_task_cell_without_a_flyte_config_says_where_to_put_one(shell, no_flyte_config):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="FLYTECTL_CONFIG"):
        shell.run_cell_magic("map_task", "--backend flyte x=[1, 2]", "x * 2")


def test_a_map_task_cell_runs_on_the_flyte_backend(shell, tmp_path, monkeypatch):
    import typing

    from mapnb import backends

    remote = _Replay([_read((0, 0, "SUCCEEDED"), (1, 0, "SUCCEEDED"), phase="SUCCEEDED")], outputs=[2, 4])
    backend = _backend(tmp_path, remote)
    monkeypatch.setitem(backends._REGISTRY, "flyte-replay", lambda: backend)
    monkeypatch.setitem(backends._INSTANCES, "flyte-replay", backend)
    df = shell.run_cell_magic("map_task", "--backend flyte-replay x=[1, 2]", "x * 2")
    workflow, inputs, _ = remote.launched
    assert inputs == {"x": [1, 2]}
    assert workflow.python_interface.inputs == {"x": typing.List[int]}  # noqa: UP006 - flytekit's
    assert list(df.output) == [2, 4]


def test_a_notebooks_flytekit_task_goes_to_flyte_with_its_own_settings(shell, tmp_path, monkeypatch):
    from mapnb import backends

    remote = _Replay([_read((0, 0, "SUCCEEDED"), phase="SUCCEEDED")], outputs=[1])
    backend = _backend(tmp_path, remote)
    monkeypatch.setitem(backends._REGISTRY, "flyte-replay", lambda: backend)
    monkeypatch.setitem(backends._INSTANCES, "flyte-replay", backend)
    shell.user_ns["fails_first_attempt"] = ft.fails_first_attempt  # @task(retries=2)
    df = shell.run_line_magic("map_task", "--task fails_first_attempt --backend flyte-replay x=[1]")
    assert list(df.output) == [1]
    workflow, _, _ = remote.launched
    (node,) = workflow.nodes
    assert node.flyte_entity.python_function_task is ft.fails_first_attempt
    assert node.flyte_entity.metadata.retries == 2
