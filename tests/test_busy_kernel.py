"""The grid answers while a *blocking* run keeps the kernel busy, over the Jupyter protocol.

A real kernel; this test plays the front end: it reads the grid's comms from IOPub and
sends the messages a browser would (Cancel, selecting an item, Retry failed), both the
way JupyterLab >= 4.4 does (over a kernel subshell) and the way VS Code and older front
ends do (on the main shell). On ipykernel 6, which has no subshells, the same test runs
in a venv of its own (slow; it installs ipykernel 6 from the package index).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

pytest.importorskip("jupyter_client")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SETUP = "%load_ext mapnb\nimport time, mapnb"
DIAG = ("run_id", "statuses", "head", "state", "title")  # comm state a timeout reports


class Frontend:
    """A kernel and the bits of a front end the grid talks to."""

    def __init__(self, km, kc, subshell: bool) -> None:
        self.km, self.kc = km, kc
        self.subshell = None
        if subshell:
            msg = kc.session.msg("create_subshell_request", {})
            kc.control_channel.send(msg)
            reply = kc.control_channel.get_msg(timeout=30)
            self.subshell = reply["content"]["subshell_id"]
        self.comms: dict[str, dict] = {}  # comm id -> latest known state
        self.opened: list[str] = []
        self.displays: list[dict] = []  # display_data and update_display_data, any parent

    def run(self, code: str, timeout: float = 60) -> tuple[str, dict]:
        msg_id = self.kc.execute(code)
        out = self.collect(msg_id, timeout)
        return out, self.reply(msg_id, timeout)

    def start(self, code: str) -> str:
        return self.kc.execute(code)

    def collect(self, msg_id: str, timeout: float = 60, until=None) -> str:
        """Read IOPub until the cell ``msg_id`` is idle (or ``until()`` is true); return
        its stream and error text. Comm state is tracked on the way."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until():
                return "".join(out)
            left = deadline - time.monotonic()
            assert left > 0, (
                f"timed out; output so far: {''.join(out)[-2000:]}; "
                f"grids: {[{k: v for k, v in s.items() if k in DIAG} for s in self.comms.values()]}; "
                f"widgets: {[(s.get('_model_name'), s.get('description')) for s in self.comms.values()]}"
            )
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 0.2))
            except Exception:  # queue.Empty
                continue
            self._track(msg)
            if msg["parent_header"].get("msg_id") == msg_id and self._take(msg, out):
                return "".join(out)

    def _track(self, msg: dict) -> None:
        """Keep the comm states and the displays current, whatever cell a message is of."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "comm_open":
            self.comms[content["comm_id"]] = dict(content["data"].get("state", {}))
            self.opened.append(content["comm_id"])
        elif kind == "comm_msg" and content["comm_id"] in self.comms:
            self._update(self.comms[content["comm_id"]], content["data"].get("state", {}))
        elif kind in ("display_data", "update_display_data"):
            self.displays.append(msg)

    @staticmethod
    def _take(msg: dict, out: list[str]) -> bool:
        """Add a message of the cell to its text ``out``; True once the cell is idle."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            out.append("\n".join(content["traceback"]))
        return kind == "status" and content["execution_state"] == "idle"

    @staticmethod
    def _update(state: dict, changes: dict) -> None:
        """Apply a comm update as the grid's front end does: ``statuses`` is sent whole
        only now and then, the changes since travel as a cumulative ``patch``."""
        state.update(changes)
        if changes.get("patch"):
            codes = list(state.get("statuses", ""))
            for i, code in changes["patch"].items():
                if int(i) < len(codes):
                    codes[int(i)] = code
            state["statuses"] = "".join(codes)

    def reply(self, msg_id: str, timeout: float = 60) -> dict:
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]

    def find(self, **state) -> str | None:
        for cid in reversed(self.opened):
            if all(self.comms[cid].get(k) == v for k, v in state.items()):
                return cid
        return None

    def send(self, comm_id: str, data: dict) -> None:
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        if self.subshell:
            msg["header"]["subshell_id"] = self.subshell
        self.kc.shell_channel.send(msg)


@pytest.fixture(params=["subshell", "main-shell"])
def frontend(request):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "MAPNB_WIDGET": "anywidget"})
    try:
        fe = Frontend(km, kc, subshell=request.param == "subshell")
        _, reply = fe.run(SETUP)
        assert reply["status"] == "ok"
        yield fe
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


SLEEPY = (
    "%%map_task --concurrency 2 --run r x=range(12)\n"
    "for k in range(100):\n"
    "    print(f'item {x} step {k}', flush=True)\n"
    "    time.sleep(0.1)\n"
    "x"
)


def grid_comm(fe: Frontend, msg_id: str) -> str:
    fe.collect(msg_id, until=lambda: _grid(fe) is not None)
    cid = _grid(fe)
    assert cid is not None
    return cid


def _grid(fe: Frontend) -> str | None:
    for cid in reversed(fe.opened):
        if "run_id" in fe.comms[cid] and "statuses" in fe.comms[cid]:
            return cid
    return None


def test_cancel_and_item_clicks_work_during_a_blocking_run(frontend):
    fe = frontend
    msg_id = fe.start(SLEEPY)
    cid = grid_comm(fe, msg_id)
    # An item is running: select it, and its log arrives while the cell still runs.
    fe.collect(msg_id, until=lambda: "r" in fe.comms[cid].get("statuses", ""))
    fe.send(cid, {"method": "update", "state": {"selected": 1}, "buffer_paths": []})
    t0 = time.monotonic()

    def log_shown() -> bool:
        detail = fe.comms[cid].get("detail") or {}
        return detail.get("index") == 1 and any("item 1 step" in t for _, t in detail.get("log", []))

    fe.collect(msg_id, timeout=30, until=log_shown)
    assert time.monotonic() - t0 < 10  # within a second or so; generous for a loaded machine
    # Cancel: the cell ends soon, with the unfinished items cancelled.
    fe.send(cid, {"method": "custom", "content": {"action": "cancel"}})
    t0 = time.monotonic()
    fe.collect(msg_id, timeout=60)
    assert time.monotonic() - t0 < 15  # not the ~60 s the run would take
    out, reply = fe.run("print(r.state, r.counts['cancelled'])")
    assert reply["status"] == "ok", out
    state, cancelled = out.split()
    assert state == "cancelled" and int(cancelled) >= 8


def test_the_ipywidgets_face_answers_during_a_blocking_run():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "MAPNB_WIDGET": "ipywidgets"})
    try:
        fe = Frontend(km, kc, subshell=False)  # VS Code sends no subshell id
        fe.run(SETUP)
        msg_id = fe.start(SLEEPY)
        # The face's box is opened last; wait for it and for the two controls by name, so
        # that a control still missing fails with the widgets seen so far.
        fe.collect(
            msg_id,
            until=lambda: fe.find(_model_name="VBoxModel")
            and fe.find(description="Show item")
            and fe.find(description="Cancel"),
        )
        pick, cancel = fe.find(description="Show item"), fe.find(description="Cancel")
        assert pick is not None and cancel is not None
        detail = [c for c in fe.opened if fe.comms[c].get("_model_name") == "HTMLModel"]
        fe.collect(msg_id, until=lambda: any("running" in fe.comms[c].get("value", "") for c in detail))
        fe.send(pick, {"method": "update", "state": {"value": "0"}, "buffer_paths": []})
        fe.collect(
            msg_id,
            timeout=30,
            until=lambda: any("item 0 step" in fe.comms[c].get("value", "") for c in detail),
        )
        fe.send(cancel, {"method": "custom", "content": {"event": "click"}})
        t0 = time.monotonic()
        fe.collect(msg_id, timeout=60)
        assert time.monotonic() - t0 < 15
        out, _ = fe.run("print(r.state)")
        assert out.strip() == "cancelled"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_no_other_cell_runs_while_a_blocking_run_answers_the_grid(frontend):
    """Run All sends every cell at once: the next cell waits for the map, clicks or not."""
    fe = frontend
    msg_id = fe.start("%%map_task --concurrency 2 --run r x=range(4)\ntime.sleep(1.5)\nx")
    nxt = fe.start("print('next cell saw', r.state)")
    cid = grid_comm(fe, msg_id)
    fe.send(cid, {"method": "update", "state": {"selected": 0}, "buffer_paths": []})
    fe.collect(msg_id, timeout=60)
    assert fe.reply(msg_id)["status"] == "ok"
    assert fe.collect(nxt).strip() == "next cell saw succeeded"


def test_interrupt_is_one_line(frontend):
    fe = frontend
    msg_id = fe.start("mapnb.map_task(lambda x: time.sleep(60), concurrency=2)(x=range(5))")
    fe.collect(msg_id, until=lambda: _grid(fe) and "r" in fe.comms[_grid(fe)].get("statuses", ""))
    fe.km.interrupt_kernel()
    out = fe.collect(msg_id, timeout=60)
    reply = fe.reply(msg_id)
    assert reply["status"] == "error"
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("KeyboardInterrupt: run ") and "cancelled 5" in lines[0]
    assert lines[0].endswith("results in mapnb.last_run()")


@pytest.mark.skipif(os.environ.get("MAPNB_SKIP_SLOW") == "1", reason="MAPNB_SKIP_SLOW=1")
def test_ipykernel_6_polls_for_the_grid_messages(tmp_path):
    """ipykernel 6 has no subshells: the blocking wait polls with jupyter-ui-poll."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "ipykernel>=6.20,<7", "-e", str(ROOT)], check=True, timeout=600)
    kernels = tmp_path / "share" / "jupyter" / "kernels" / "py6"
    kernels.mkdir(parents=True)
    argv = [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernels / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "py6", "language": "python"})
    )
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = KernelManager(
        kernel_name="py6", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels.parent)])
    )
    km.start_kernel(env={**os.environ, "MAPNB_WIDGET": "anywidget"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        fe = Frontend(km, kc, subshell=False)
        out, reply = fe.run(SETUP + "\nimport ipykernel; print(ipykernel.__version__)")
        assert reply["status"] == "ok" and out.startswith("6."), out
        msg_id = fe.start(SLEEPY)
        cid = grid_comm(fe, msg_id)
        fe.collect(msg_id, until=lambda: "r" in fe.comms[cid].get("statuses", ""))
        fe.send(cid, {"method": "custom", "content": {"action": "cancel"}})
        t0 = time.monotonic()
        fe.collect(msg_id, timeout=60)
        assert time.monotonic() - t0 < 15
        out, _ = fe.run("print(r.state)")
        assert out.strip() == "cancelled"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_retry_failed_from_the_grid_updates_everything_the_user_sees(frontend, tmp_path):
    fe = frontend
    marker = tmp_path / "second-time"
    code = (
        "%%map_task --concurrency 2 --min-success-ratio 0.5 --run r --out res x=range(6)\n"
        "import os\n"
        "time.sleep(0.5)\n"
        f"if x % 2 and not os.path.exists({str(marker)!r}):\n"
        "    raise ValueError(f'odd {x}')\n"
        "x * 10"
    )
    msg_id = fe.start(code)
    cid = grid_comm(fe, msg_id)
    fe.collect(msg_id)
    assert fe.reply(msg_id)["status"] == "ok"
    shown = [m for m in fe.displays if m["msg_type"] == "display_data"]
    grid_id, frame_id = (m["content"]["transient"]["display_id"] for m in shown[-2:])
    frame_first = shown[-1]["content"]["data"]["text/plain"]
    assert "ValueError: odd 1" in frame_first  # the failed rows
    out, _ = fe.run("print(res['output'].isna().sum(), r.counts['failed'])")
    assert out.split() == ["3", "3"]
    time.sleep(2)  # idle time: the clock must not count it
    marker.write_text("yes")
    n_before = len(fe.displays)
    fe.send(cid, {"method": "custom", "content": {"action": "retry_failed"}})
    fe.collect(
        "-",
        timeout=60,
        until=lambda: (
            fe.comms[cid].get("state") == "succeeded"
            and fe.comms[cid].get("counts", {}).get("succeeded") == 6
        ),
    )

    def updated(display_id: str) -> dict | None:
        for m in reversed(fe.displays[n_before:]):
            if (
                m["msg_type"] == "update_display_data"
                and m["content"]["transient"]["display_id"] == display_id
            ):
                return m["content"]["data"]
        return None

    fe.collect("-", timeout=30, until=lambda: updated(grid_id) and updated(frame_id))
    assert "succeeded 6" in updated(grid_id)["text/html"]
    frame_now = updated(frame_id)["text/plain"]
    assert "ValueError" not in frame_now and "failed" not in frame_now and "50" in frame_now
    out, reply = fe.run(
        "print(res['output'].tolist(), res['error'].isna().all(), mapnb.last_run() is r, "
        "r.state, round(r.elapsed, 1))"
    )
    assert reply["status"] == "ok", out
    assert out.startswith("[0, 10, 20, 30, 40, 50] True True succeeded"), out
    elapsed = float(out.split()[-1])
    assert elapsed < 5, out  # ~1.5 s of running plus a re-run of ~0.5 s; not the idle 2 s+
    assert fe.comms[cid]["started"] > time.time() - 60
