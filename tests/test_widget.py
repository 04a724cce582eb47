"""The live grid's widget model, driven by a scripted event stream.

The widget is the real ipywidgets/anywidget model; only its comm is a recorder, which
plays the front end: it applies every message the kernel sends, as a browser would, and
sends the front end's own messages (select an item, Cancel, Retry failed) back in.
"""

from __future__ import annotations

import json
import pathlib
import queue
import time
from typing import Any

import comm
import pytest

import mapnb
from mapnb.jupyter.grid import CODES, PATCH_CAP, GridModel, _fmt_value, render_html
from mapnb.jupyter.widget import LiveGrid
from mapnb.protocol import ENDED, FINISHED, LOG, STARTED
from tests.test_engine import Scripted


class FrontEnd(comm.DummyComm):
    """A comm that records what the kernel sends and keeps the state a browser would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[dict[str, Any]] = []
        self.sizes: list[int] = []
        self.state: dict[str, Any] = {}
        self.custom: list[Any] = []
        super().__init__(*args, **kwargs)

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        self.sizes.append(len(json.dumps(data, default=str)))
        if msg_type == "comm_open":
            self.state.update(data["state"])
        elif msg_type == "comm_msg" and data.get("method") == "update":
            self.messages.append(data["state"])
            self.state.update(data["state"])
        elif msg_type == "comm_msg":
            self.custom.append(data)

    def statuses(self) -> str:
        codes = list(self.state["statuses"])
        for i, c in self.state["patch"].items():
            codes[int(i)] = c
        return "".join(codes)

    # what the browser sends
    def set(self, **state: Any) -> None:
        self.handle_msg(
            {"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []}
        )

    def send_custom(self, content: dict[str, Any]) -> None:
        self.handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


@pytest.fixture
def frontends(monkeypatch: pytest.MonkeyPatch) -> list[FrontEnd]:
    made: list[FrontEnd] = []

    def create(*args: Any, **kwargs: Any) -> FrontEnd:
        made.append(FrontEnd(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(comm, "create_comm", create)
    return made


def grid_front(grid: LiveGrid, frontends: list[FrontEnd]) -> FrontEnd:
    return next(f for f in frontends if f.comm_id == grid.widget.model_id)


def until(pred: Any, timeout: float = 10.0) -> Any:
    t0 = time.monotonic()
    while not (r := pred()):
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.01)
    return r


def start(n: int, fn: Any = lambda x: x, product: dict[str, list[Any]] | None = None, **kw: Any):
    backend = Scripted()
    mt = mapnb.map_task(fn, backend=backend, progress=False, **kw)
    run = mt.submit_product(**product) if product else mt.submit(x=list(range(n)))
    return run, backend


def play(backend: Scripted, values: Any = None, fail: set[int] = frozenset(), lines: int = 0) -> int:
    """Answer one task: every item starts, prints ``lines`` lines, then ends."""
    try:
        task, report = backend.tasks.get(timeout=0.05)
    except queue.Empty:
        return 0
    recs: list[tuple[Any, ...]] = []
    for i, a, _ in task.items:
        recs.append((STARTED, task.id, i, a, 0.0))
        recs += [(LOG, task.id, i, a, "stdout", f"line {k} of {i}\n") for k in range(lines)]
        ok = i not in fail
        value = (
            (values(i) if values else i)
            if ok
            else mapnb.ItemError("exception", "ValueError", "no", "Traceback: no\n")
        )
        recs.append((FINISHED, task.id, i, a, ok, value, 0.0, 0.01))
    recs.append((ENDED, task.id, None, False))
    report(recs)
    return len(task.items)


def test_the_front_end_ends_with_the_runs_state_in_few_messages(frontends):
    run, backend = start(3000, concurrency=4, min_success_ratio=0)
    grid = LiveGrid(run, kind="anywidget", interval=0.1)
    fe = grid_front(grid, frontends)
    t0 = time.monotonic()
    done = 0
    while not run.done():
        done += play(backend, fail={7, 2500}, lines=3)
    assert done == 3000
    assert grid.wait(10)
    took = time.monotonic() - t0
    assert fe.statuses() == "".join(CODES[s] for s in run.statuses)
    assert fe.statuses().count("f") == 2 and fe.statuses().count("s") == 2998
    assert fe.state["counts"]["succeeded"] == 2998 and fe.state["state"] == "succeeded"
    assert fe.state["can_retry"] is True and fe.state["elapsed"] is not None
    # thousands of events and 9000 log lines; the front end got about 10 messages a second
    assert len(fe.messages) <= took / 0.1 + 3, (len(fe.messages), took)
    assert max(fe.sizes[1:]) < 80_000  # a patch of <= PATCH_CAP changes, or the folded string


def test_the_opening_state_goes_with_the_widget_and_a_run_sends_under_ten_a_second(frontends):
    """The widget opens with the run's state (no message right after it), and every later
    message keeps to the pace, the final one included: fewer than 10 per second of the run."""
    run, backend = start(400, concurrency=4)
    t0 = time.monotonic()
    grid = LiveGrid(run, kind="anywidget", interval=0.1)
    fe = grid_front(grid, frontends)
    assert fe.state["n"] == 400 and fe.state["statuses"] == "q" * 400 and fe.state["run_id"] == run.id
    while not run.done():
        play(backend)
        time.sleep(0.005)
    assert grid.wait(10)
    took = time.monotonic() - t0
    assert fe.statuses() == "s" * 400 and fe.state["state"] == "succeeded"
    assert 1 <= len(fe.messages) <= max(1.0, took / 0.1), (len(fe.messages), took)


def test_a_large_change_is_folded_into_the_full_string_without_per_item_work(monkeypatch):
    """More changes than PATCH_CAP: the full string is made from the status bytes in one
    step; no changed index is ever turned into a Python int."""
    from mapnb.jupyter import grid as grid_mod

    run, backend = start(PATCH_CAP * 3, concurrency=4, min_success_ratio=0)
    model = GridModel(run)
    assert model.changes()["statuses"] == "q" * (PATCH_CAP * 3)
    while not run.done():
        play(backend, fail={5})
    run.wait()

    def no_iteration(self: Any) -> Any:
        raise AssertionError("a folded change iterated its indices")

    monkeypatch.setattr(grid_mod._Changed, "__iter__", no_iteration)
    out = model.changes()
    assert out["patch"] == {} and out["statuses"] == "sssssf" + "s" * (PATCH_CAP * 3 - 6)
    assert out["statuses"] == "".join(CODES[s] for s in run.statuses)


def test_statuses_travel_as_a_patch_folded_into_the_full_string(frontends):
    run, backend = start(PATCH_CAP * 2, concurrency=1)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    task, report = backend.next()  # one item first: a small patch
    i, a, _ = task.items[0]
    report([(STARTED, task.id, i, a, 0.0)])
    until(lambda: fe.state["patch"] == {"0": "r"})
    assert fe.state["statuses"] == "q" * (PATCH_CAP * 2)
    report([(FINISHED, task.id, i, a, True, 0, 0.0, 0.1), (ENDED, task.id, None, False)])
    while not run.done():
        play(backend)
    grid.wait(10)
    assert fe.statuses() == "s" * (PATCH_CAP * 2)
    assert all(len(m.get("patch", {})) <= PATCH_CAP for m in fe.messages)


def test_selecting_an_item_sends_its_log_and_follows_it(frontends):
    run, backend = start(3, concurrency=3)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    tasks = [backend.next() for _ in range(3)]
    (t1, r1) = tasks[1]
    r1(
        [
            (STARTED, t1.id, 1, 1, 0.0),
            (LOG, t1.id, 1, 1, "stdout", "hello\n"),
            (LOG, t1.id, 1, 1, "stderr", "warn\n"),
        ]
    )
    until(lambda: fe.state["patch"].get("1") == "r")
    assert "detail" not in fe.state or not fe.state["detail"]  # no log is sent unasked
    fe.set(selected=1)  # the user clicks item 1
    d = until(lambda: fe.state.get("detail"))
    assert d["index"] == 1 and d["status"] == "running"
    assert d["log"] == [["stdout", "hello\n"], ["stderr", "warn\n"]]
    assert d["inputs"] == [["x", "1"]]
    r1([(LOG, t1.id, 1, 1, "stdout", "more\n")])  # the log keeps streaming while selected
    until(lambda: fe.state["detail"]["log"][-1] == ["stdout", "more\n"])
    (t0, r0) = tasks[0]
    r0([(STARTED, t0.id, 0, 1, 0.0), (LOG, t0.id, 0, 1, "stdout", "other item\n")])
    time.sleep(0.3)
    assert all("other item" not in json.dumps(m) for m in fe.messages)  # never unselected logs
    fe.set(selected=-1)
    until(lambda: fe.state["detail"] == {})
    run.cancel()


def test_the_panel_follows_its_log_with_no_log_events_at_all():
    """The selected item's panel is compared whole at each flush: its log streams in although
    the grid is given no ItemLog event, and nothing is sent while it stays the same."""
    run, backend = start(2, concurrency=2)
    model = GridModel(run)
    run.subscribe(lambda evs: model.on_events([e for e in evs if type(e).__name__ != "ItemLog"]), statuses=False)
    model.changes()
    (t1, r1) = [backend.next() for _ in range(2)][1]
    r1([(STARTED, t1.id, 1, 1, 0.0), (LOG, t1.id, 1, 1, "stdout", "hello\n")])
    model.selected = 1
    panel: dict[str, Any] = {}

    def shows(log: list[list[str]]) -> bool:
        panel.update(model.changes().get("detail") or {})
        return panel.get("log") == log

    until(lambda: shows([["stdout", "hello\n"]]))
    r1([(LOG, t1.id, 1, 1, "stdout", "more\n")])
    until(lambda: shows([["stdout", "hello\n"], ["stdout", "more\n"]]))
    assert panel["index"] == 1 and panel["status"] == "running" and panel["inputs"] == [["x", "1"]]
    assert "detail" not in model.changes()  # the same panel: not sent again
    run.cancel()


def test_a_long_log_sends_only_its_tail(frontends):
    run, backend = start(1)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    task, report = backend.next()
    report([(STARTED, task.id, 0, 1, 0.0)] + [(LOG, task.id, 0, 1, "stdout", "x" * 1000 + "\n")] * 300)
    fe.set(selected=0)
    d = until(lambda: fe.state.get("detail"))
    assert sum(len(t) for _, t in d["log"]) == 64 * 1024
    assert d["log_dropped"] == 300 * 1001 - 64 * 1024
    run.cancel()


def test_cancel_button_cancels_the_run_and_keeps_finished_items(frontends):
    run, backend = start(10, concurrency=2)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    play(backend)
    task, report = backend.next()
    report([(STARTED, task.id, task.items[0][0], 1, 0.0)])
    fe.send_custom({"action": "cancel"})
    assert run.wait(10) and run.state == "cancelled"
    grid.wait(10)
    assert task.id in backend.killed
    assert fe.statuses()[0] == "s" and set(fe.statuses()[1:]) == {"x"}
    assert fe.state["can_retry"] is True


def test_retry_failed_reruns_only_those_items_in_place(frontends):
    run, backend = start(6, concurrency=6, min_success_ratio=0, retries=1)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    while not run.done():  # the failing items fail their one retry too
        play(backend, fail={2, 4})
    grid.wait(10)
    assert fe.statuses() == "ssfsfs" and fe.state["can_retry"] is True
    fe.send_custom({"action": "retry_failed"})
    until(lambda: not run.done())
    seen = []
    while not run.done():
        seen += [backend.tasks.queue[0][0].items] if backend.tasks.qsize() else []
        play(backend, values=lambda i: i * 10)
    assert sorted((i, a) for items in seen for i, a, _ in items) == [(2, 3), (4, 3)]  # only those
    grid.wait(10)
    assert fe.statuses() == "ssssss" and fe.state["state"] == "succeeded" and not fe.state["can_retry"]
    assert run.outputs == [0, 1, 20, 3, 40, 5]
    assert run.attempts == [1, 1, 3, 1, 3, 1]


def test_a_two_parameter_sweep_is_a_sheet_with_a_heatmap(frontends):
    run, backend = start(0, fn=lambda lr, depth: 0, product={"lr": [0.1, 0.01, 0.001], "depth": [2, 4]})
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    assert fe.state["sheet"]["y"] == {"name": "lr", "labels": ["0.1", "0.01", "0.001"]}
    assert fe.state["sheet"]["x"] == {"name": "depth", "labels": ["2", "4"]}
    while not run.done():
        play(backend, values=lambda i: {"loss": 1.0 / (i + 1), "acc": i / 10, "note": "x"})
    grid.wait(10)
    assert fe.state["fields"] == ["loss", "acc"] and fe.state["heat_field"] == "loss"
    assert fe.state["heat"] == pytest.approx([1.0 / (i + 1) for i in range(6)])
    fe.set(heat_field="acc")  # the user picks another field
    until(lambda: fe.state["heat"] == pytest.approx([i / 10 for i in range(6)]))


def test_the_core_ipywidgets_face_shows_the_same_run(frontends):
    run, backend = start(4, min_success_ratio=0, concurrency=4)
    grid = LiveGrid(run, kind="ipywidgets")
    while not run.done():
        play(backend, fail={1}, lines=1)
    grid.wait(10)
    assert "failed 1" in grid.widget.picture.value and "succeeded 3" in grid.widget.picture.value
    assert grid.widget.retry.layout.display == ""
    grid.widget.pick.value = "1"
    assert "Traceback: no" in grid.widget.detail.value and "line 0 of 1" in grid.widget.detail.value


def test_the_static_picture_and_the_mimebundle(frontends):
    run, backend = start(3, min_success_ratio=0, concurrency=3)
    grid = LiveGrid(run, kind="anywidget")
    while not run.done():
        play(backend, fail={2})
    grid.wait(10)
    bundle = grid.mimebundle()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == grid.widget.model_id
    assert "succeeded 2" in bundle["text/html"] and "failed 1" in bundle["text/html"]
    assert bundle["text/plain"].startswith("<MapRun")
    big = render_html({**GridModel(run).snapshot(), "n": 10_000, "statuses": "s" * 9_999 + "f"})
    assert "9995-9999: failed" in big and "9500-9994: succeeded" in big  # rows of 100 blocks of 5
    assert big.count("<span title=") == 21 and len(big) < 5000  # 20 rows, the last in two runs


def test_which_face_is_used(monkeypatch):
    from mapnb.jupyter.widget import widget_kind

    monkeypatch.delenv("MAPNB_WIDGET", raising=False)
    monkeypatch.delenv("VSCODE_PID", raising=False)
    monkeypatch.delenv("VSCODE_CWD", raising=False)
    assert widget_kind() == "anywidget"
    monkeypatch.setenv("VSCODE_PID", "123")  # VS Code loads anywidget's front end from a CDN
    assert widget_kind() == "ipywidgets"
    monkeypatch.setenv("MAPNB_WIDGET", "anywidget")
    assert widget_kind() == "anywidget"
    monkeypatch.setenv("MAPNB_WIDGET", "off")
    assert widget_kind() == "off"
    monkeypatch.setenv("MAPNB_WIDGET", "sparkles")
    assert widget_kind() == "ipywidgets"  # unknown: warned about, then auto


def test_outside_a_notebook_a_run_displays_as_a_static_picture():
    run, backend = start(2)
    while not run.done():
        play(backend)
    bundle = run._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"} and "succeeded 2" in bundle["text/html"]
    assert run._grid is None  # no widget was made


def test_nice_scale_rounds_and_only_widens():
    from mapnb.jupyter.grid import nice_scale, nice_ticks

    assert nice_scale(0.04, 2.54) == (0.0, 3.0)
    assert nice_ticks(0.0, 3.0) == [0.0, 1.0, 2.0, 3.0]
    assert nice_scale(0.5, 2.0, prev=(0.0, 3.0)) == (0.0, 3.0)  # fewer values: never shrinks
    assert nice_scale(0.5, 4.2, prev=(0.0, 3.0)) == (0.0, 5.0)
    lo, hi = nice_scale(0.04, 0.04)
    assert lo <= 0.04 < hi
    with pytest.raises(ValueError, match="lo=2"):
        nice_scale(2, 1)


def test_the_heatmap_scale_is_stable_and_says_when_it_widened(frontends):
    run, backend = start(0, fn=lambda a, b: 0, product={"a": [1, 2, 3], "b": [1, 2]}, concurrency=1)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    losses = [0.5, 2.4, 1.0, 0.2, 4.1, 1.5]
    seen = []
    played = 0
    while not run.done():
        n = play(backend, values=lambda i: {"loss": losses[i]})  # one task: one or more items
        if n:
            played += n
            # One value per flush, whatever the load: the widening is judged value by value.
            deadline = time.monotonic() + 30
            while sum(isinstance(v, (int, float)) for v in fe.state.get("heat") or []) < played:
                assert time.monotonic() < deadline, fe.state.get("heat")
                grid.wait(0.05)
                grid.flush()
            if fe.state.get("heat_scale"):
                seen.append(dict(fe.state["heat_scale"]))
    grid.wait(10)
    scale = fe.state["heat_scale"]
    assert (scale["lo"], scale["hi"]) == (0.0, 5.0) and scale["ticks"][0] == 0.0 and scale["ticks"][-1] == 5.0
    bounds = [(s["lo"], s["hi"]) for s in seen]
    distinct = [b for k, b in enumerate(bounds) if k == 0 or b != bounds[k - 1]]
    assert len(distinct) >= 2, bounds
    assert scale["was"] == list(distinct[-2])  # the legend says from what it last widened
    assert all(a[0] >= b[0] and a[1] <= b[1] for a, b in zip(bounds, bounds[1:])), bounds  # never shrinks
    snap = GridModel(run).snapshot()
    assert snap["heat_scale"] == {} or snap["heat_scale"]["lo"] <= 0.2
    html = grid.static_html()
    assert "loss" in html and f"scale widened from {_fmt_value(distinct[-2][0])} \u2013 {_fmt_value(distinct[-2][1])}" in html
    assert ">4.1<" in html


def test_the_panel_shows_output_fields_timing_and_no_output(frontends):
    import collections

    Pt = collections.namedtuple("Pt", "loss acc")
    run, backend = start(3, min_success_ratio=0, concurrency=3)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    while not run.done():
        play(backend, values=lambda i: Pt(0.5, 0.9) if i == 0 else "plain", fail={2})
    grid.wait(10)
    fe.set(selected=0)
    d = until(lambda: fe.state.get("detail", {}).get("index") == 0 and fe.state["detail"])
    assert d["output"] == [["loss", "0.5"], ["acc", "0.9"]] and d["finished"] is True
    assert d["log"] == [] and d["duration"] is not None and d["attempts"] == 1
    fe.set(selected=1)
    d = until(lambda: fe.state["detail"].get("index") == 1 and fe.state["detail"])
    assert d["output"] == [["output", "'plain'"]]
    fe.set(selected=2)
    d = until(lambda: fe.state["detail"].get("index") == 2 and fe.state["detail"])
    assert d["output"] is None and "Traceback: no" in d["error"]
    js = (pathlib.Path(mapnb.__file__).parent / "jupyter" / "assets" / "grid.js").read_text()
    assert '"(no output)"' in js and "d.finished" in js  # a finished item says so, not "yet"


def test_the_core_face_shows_the_panel_fields_and_no_minus_one(frontends):
    run, backend = start(0, fn=lambda a, b: 0, product={"a": [1, 2], "b": [1, 2]}, concurrency=4,
                         min_success_ratio=0)  # fmt: skip
    grid = LiveGrid(run, kind="ipywidgets")
    w = grid.widget
    assert w.pick.value == "" and "-1" not in w.pick.placeholder
    while not run.done():
        play(backend, values=lambda i: {"loss": i / 2}, fail={3})
    grid.wait(10)
    w.pick.value = "1"
    grid.flush()
    assert "loss" in w.detail.value and "0.5" in w.detail.value and "(no output)" in w.detail.value
    assert "attempt" in w.detail.value and "took" in w.detail.value
    w.pick.value = "3"
    grid.flush()
    assert "Traceback: no" in w.detail.value and "\u2715" in w.detail.value
    w.pick.value = "9"
    grid.flush()
    assert "no item 9: pick 0 to 3" in w.detail.value
    assert w.colorby.layout.display == "" and w.colorby.value == "loss"
    assert "loss = 0.5" in w.picture.value and ">0.5<" in w.picture.value  # the value, in its cell
    w.colorby.value = ""  # back to colouring by status
    assert "loss = 0.5" not in w.picture.value


def test_the_core_faces_clock_moves_while_a_long_item_runs(frontends):
    run, backend = start(1)
    grid = LiveGrid(run, kind="ipywidgets", interval=0.05)
    task, report = backend.next()
    report([(STARTED, task.id, 0, 1, 0.0)])
    first = until(lambda: "running" in grid.widget.picture.value and grid.widget.picture.value)
    until(lambda: grid.widget.picture.value != first, timeout=15)  # no event, yet the clock moved
    run.cancel()


def test_the_header_carries_the_kernels_clock(frontends):
    """The front end's clock counts on from the kernel's reading, not from its own time of
    day (a browser on another machine may be minutes off)."""
    run, backend = start(2, concurrency=1)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    time.sleep(0.3)
    play(backend)
    until(lambda: fe.state.get("running_for", 0) >= 0.3)
    assert fe.state["elapsed"] is None  # still running: the front end extrapolates
    run.cancel()


def test_the_panel_counts_a_running_items_attempt_from_one():
    from mapnb.jupyter.widget import attempts_text

    assert attempts_text("running", 0) == "attempt 1"  # not "0 attempts" while it runs
    assert attempts_text("running", 1) == "attempt 2"
    assert attempts_text("queued", 0) == ""
    assert attempts_text("failed", 1) == "1 attempt" and attempts_text("failed", 3) == "3 attempts"
    js = (pathlib.Path(mapnb.jupyter.widget.__file__).parent / "assets" / "grid.js").read_text()
    assert "attempt ${d.attempts + 1}" in js  # the browser face says the same


# -- the sweep views' data and messages (mapnb/jupyter/sweep.py, assets/sweep.js) --------------

SWEEP3 = {"lr": [0.1, 0.01, 0.001], "depth": [2, 4], "seed": [0, 1]}


def sweep_fn(lr, depth, seed):
    return 0


def columns(fe: FrontEnd) -> dict[str, list[Any]]:
    """What the browser rebuilds: each whole base, then each patch's rows, in order."""
    cols: dict[str, list[Any]] = {}
    for m in list(fe.messages):
        if "sweep_cols" in m:
            cols = {k: list(c) for k, c in zip(m["sweep_cols"]["keys"], m["sweep_cols"]["data"])}
        for k in m.get("sweep_patch", {}).get("keys", []):
            cols.setdefault(k, [None] * fe.state["n"])
        for i, row in m.get("sweep_patch", {}).get("rows", {}).items():
            for k, v in zip(cols, row):
                cols[k][int(i)] = v
    return cols


def loss_of(i: int) -> dict[str, Any]:
    return {"loss": 1.0 / (i + 1), "acc": i / 10, "note": "x"}


def test_a_sweep_sends_its_axes_once_and_its_columns_as_patches(frontends):
    run, backend = start(0, fn=sweep_fn, product=SWEEP3, concurrency=1)
    grid = LiveGrid(run, kind="anywidget", interval=0.05)
    fe = grid_front(grid, frontends)
    sweep = fe.state["sweep"]
    assert [p["name"] for p in sweep["params"]] == ["lr", "depth", "seed"] and sweep["seed"] == "seed"
    assert sweep["params"][0] == {"name": "lr", "labels": ["0.1", "0.01", "0.001"], "values": [0.1, 0.01, 0.001]}
    assert sweep["idx"][0] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert sweep["idx"][2] == [0, 1] * 6
    done = 0
    while not run.done():
        done += play(backend, values=loss_of)
        until(lambda done=done: sum(v is not None for v in columns(fe).get("loss", [])) == done)
    grid.wait(10)
    patches = [m["sweep_patch"] for m in fe.messages if m.get("sweep_patch")]
    cols = columns(fe)
    assert cols == {"loss": pytest.approx([1.0 / (i + 1) for i in range(12)], rel=1e-6), "acc": [i / 10 for i in range(12)]}
    # the axes went once; each patch carries only the items that changed since the last
    assert sum("sweep" in m for m in fe.messages) <= 1
    sent = [i for p in patches for i in p["rows"]]
    assert patches and len(sent) == len(set(sent))  # each item finished once: in one patch only
    assert "sweep_cols" in fe.messages[-1] or "sweep_cols" in fe.messages[-2]  # whole at the end
    # A view that opens late asks for the whole columns and gets them, as they are now.
    fe.send_custom({"action": "sweep_sync"})
    sync = until(lambda: [c["content"]["sweep_sync"] for c in fe.custom if "sweep_sync" in c.get("content", {})])
    assert sync[-1]["cols"]["data"][0] == cols["loss"] and sync[-1]["sweep"] == sweep


def test_reported_metrics_are_columns_and_the_best_table_pulls_sparklines(frontends):
    from mapnb.protocol import METRICS

    run, backend = start(0, fn=sweep_fn, product=SWEEP3, concurrency=12)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    task, report = backend.next()
    i, a, _ = task.items[0]
    report([(STARTED, task.id, i, a, 0.0), (METRICS, task.id, i, a, [(1, {"loss": 0.9}), (2, {"loss": 0.5})])])
    until(lambda: columns(fe).get("loss (reported)", [None] * 12)[i] == 0.5)  # a new column, in a patch
    fe.send_custom({"action": "sparks", "indices": [i, 99]})
    sparks = until(lambda: [c for c in fe.custom if "sparks" in c.get("content", {})])
    assert list(sparks[-1]["content"]["sparks"]) == [str(i)] and "<svg" in sparks[-1]["content"]["sparks"][str(i)]
    run.cancel()


def test_a_zipped_map_of_numbers_is_a_sweep_and_of_strings_is_not(frontends):
    backend = Scripted()
    mt = mapnb.map_task(lambda a, b: 0, backend=backend, progress=False)
    run = mt.submit(a=[3, 1, 2, 1], b=[0.5, 0.5, 0.25, 0.25])
    grid = LiveGrid(run, kind="anywidget")
    sweep = grid_front(grid, frontends).state["sweep"]
    assert sweep["params"][0]["labels"] == ["1", "2", "3"] and sweep["idx"][0] == [2, 0, 1, 0]
    assert sweep["params"][1]["values"] == [0.25, 0.5] and sweep["idx"][1] == [1, 1, 0, 0]
    run.cancel()
    run2 = mt.submit(a=["x", "y"], b=[1, 2])
    assert grid_front(LiveGrid(run2, kind="anywidget"), frontends).state["sweep"] == {}
    run2.cancel()


def test_the_static_picture_keeps_the_sweep_views(frontends):
    run, backend = start(0, fn=sweep_fn, product=SWEEP3, concurrency=12)
    grid = LiveGrid(run, kind="anywidget")
    while not run.done():
        play(backend, values=loss_of)
    grid.wait(10)
    fe = grid_front(grid, frontends)
    fe.set(sweep_view={"metric": "acc", "order": "desc", "x": 2, "y": 0})  # the user's last choice
    html = grid.static_html()
    assert "Sweep views" in html and "metric <b>acc</b> (highest is best)" in html
    assert "lr \\ seed" in html and "best over depth" in html  # the heatmap, Y \ X
    best = html[html.index("mapnb-static-best") :]
    assert best.index("<td style=\"padding:1px 6px;font-size:12px;text-align:right\">11</td>") < best.index(">10</td>")
    assert html.count("<polyline") == 12 and "mapnb-static-parallel" in html  # every item a line


needs_selection = pytest.mark.skipif(
    not hasattr(mapnb.MapRun, "selected"), reason="run.selected / rerun come with the kernel side (branch sweepk)"
)


@needs_selection
def test_the_views_selection_is_run_selected_both_ways(frontends):
    run, backend = start(0, fn=sweep_fn, product=SWEEP3, concurrency=12)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    fe.set(selection=[3, 1, 7])  # a brush in the browser
    until(lambda: list(run.selected) == [1, 3, 7])
    run.selected = [2, 5]  # from Python: drawn in the views
    until(lambda: fe.state["selection"] == [2, 5])
    run.cancel()


@needs_selection
def test_rerun_and_cancel_selected_act_on_exactly_those_items(frontends):
    run, backend = start(0, fn=sweep_fn, product=SWEEP3, concurrency=12)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    while not run.done():
        play(backend, values=loss_of)
    grid.wait(10)
    fe.set(selection=[4, 9])
    until(lambda: list(run.selected) == [4, 9])
    fe.send_custom({"action": "rerun_selected"})
    until(lambda: backend.tasks.qsize())
    seen = []
    while not run.done():
        seen += [backend.tasks.queue[0][0].items] if backend.tasks.qsize() else []
        play(backend, values=lambda i: {"loss": 5.0, "acc": 0.0})
    assert sorted(i for items in seen for i, _, _ in items) == [4, 9]
    grid.wait(10)
    assert columns(fe)["loss"][4] == 5.0 and columns(fe)["loss"][0] == 1.0
    # Cancel selected, while the run goes on: only those end cancelled.
    run2, backend2 = start(0, fn=sweep_fn, product=SWEEP3, concurrency=1)
    grid2 = LiveGrid(run2, kind="anywidget")
    fe2 = grid_front(grid2, frontends)
    fe2.set(selection=[10, 11])
    until(lambda: list(run2.selected) == [10, 11])
    fe2.send_custom({"action": "cancel_selected"})
    until(lambda: run2.view.status[10].final and run2.view.status[11].final)
    assert {run2.view.status[i].value for i in (10, 11)} == {"cancelled"}
    run2.cancel()


def test_a_sweep_grown_while_it_runs_sends_its_new_axes_and_items(frontends):
    run, backend = start(0, fn=sweep_fn, product=SWEEP3, concurrency=4)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    play(backend, values=loss_of)  # some items done, the rest still to come
    assert run.extend(lr=[0.0001]) == 4
    until(lambda: fe.state["n"] == 16 and len(fe.state["sweep"]["idx"][0]) == 16)
    lr = fe.state["sweep"]["params"][0]
    assert lr["labels"] == ["0.1", "0.01", "0.001", "0.0001"]
    assert fe.state["sweep"]["idx"][0][12:] == [3, 3, 3, 3] and len(fe.statuses()) == 16
    while not run.done():
        play(backend, values=loss_of)
    grid.wait(10)
    assert columns(fe)["loss"] == pytest.approx([1.0 / (i + 1) for i in range(16)], rel=1e-6)
    assert "0.0001" in grid.static_html()


def test_the_core_face_has_the_best_table_a_select_box_and_the_buttons(frontends):
    from mapnb.jupyter.sweep import format_indices, parse_indices

    assert parse_indices("1, 4-7,2", 10) == [1, 2, 4, 5, 6, 7] and format_indices([1, 2, 4, 5, 6, 7]) == "1-2, 4-7"
    for bad, why in (("x", "not an item number"), ("3-1", "items are 0 to 9"), ("12", "items are 0 to 9")):
        with pytest.raises(ValueError, match=why):
            parse_indices(bad, 10)
    run, backend = start(0, fn=sweep_fn, product=SWEEP3, concurrency=12)
    grid = LiveGrid(run, kind="ipywidgets")
    core = grid.widget
    while not run.done():
        play(backend, values=loss_of)
    grid.wait(10)
    assert "best 10 by loss" in core.picture.value and "mapnb-static-parallel" in core.picture.value
    assert core.rerun_sel.disabled
    core.choose.value = "4, 9"
    until(lambda: list(run.selected) == [4, 9])
    assert not core.rerun_sel.disabled and not core.cancel_sel.disabled
    core.rerun_sel.click()
    until(lambda: not run.done())
    seen = []
    while not run.done():
        seen += [backend.tasks.queue[0][0].items] if backend.tasks.qsize() else []
        play(backend, values=loss_of)
    assert sorted(i for items in seen for i, _, _ in items) == [4, 9]
    run.selected = [0, 1, 2]  # from Python: the box says so
    until(lambda: core.choose.value == "0-2")
    core.choose.value = "99"  # out of range: said, nothing selected anew
    assert "items are 0 to 11" in core.detail.value and list(run.selected) == [0, 1, 2]


def test_the_grid_wants_no_per_item_status_events_and_still_sees_every_change(frontends):
    """The grid reads statuses from the run's status bytes: its subscription leaves the
    bus inactive for per-item status events (the engine settles items in batches), and
    every status still reaches the front end."""
    run, backend = start(6, concurrency=2, min_success_ratio=0)
    grid = LiveGrid(run, kind="anywidget")
    fe = grid_front(grid, frontends)
    until(lambda: run._engine.bus.listening)
    assert run._engine.bus.active is False
    while not run.done():
        play(backend, fail={3})
    grid.wait(10)
    assert fe.statuses() == "sssfss"
    seen = []
    unsubscribe = run.subscribe(seen.append)  # a subscriber that wants them: the bus is active
    until(lambda: seen)
    assert any(type(ev).__name__ == "ItemFinished" for ev in seen[0])
    unsubscribe()
