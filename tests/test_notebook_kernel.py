"""mapnb where users run it: IPython and a real Jupyter kernel (Interrupt button included)."""

from __future__ import annotations

import time

import pytest

from .test_contract import wait_until
from .test_local import gone


def test_runs_in_ipython_with_functions_defined_in_the_shell(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell(
        "import mapnb\n"
        "class Point:\n"
        "    def __init__(self, x): self.x = x\n"
        "def f(x):\n"
        "    print('hi', x)\n"
        "    return Point(x * 3)\n"
        "df = mapnb.map_task(f, concurrency=2)(x=[1, 2, 3])\n"
    ).raise_error()
    df = shell.user_ns["df"]
    assert [p.x for p in df["output"]] == [3, 6, 9]
    assert mapnb_last_logs(shell) == "hi 1\n"

    # A failing map shows the item's own traceback, not mapnb's plumbing.
    capsys.readouterr()
    shell.run_cell("def g(x):\n    raise KeyError(f'no {x}')\nmapnb.map_task(g)(x=[7])\n")
    shown = capsys.readouterr().out
    assert "Traceback of item 0" in shown and "KeyError: 'no 7'" in shown
    assert "engine.py" not in shown and "run.py" not in shown


def mapnb_last_logs(shell) -> str:
    return shell.user_ns["mapnb"].last_run().logs(0)


@pytest.fixture
def kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, timeout: float = 60, shown: list | None = None) -> tuple[str, dict]:
    """Run code in the kernel; return (stdout text, execute_reply content).

    Its display_data and update_display_data messages go to ``shown``, when given.
    """
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] in ("display_data", "update_display_data") and shown is not None:
            shown.append(msg)
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    return "".join(out), kc.get_shell_msg(timeout=timeout)["content"]


def test_a_notebook_kernel_runs_items_in_parallel_and_interrupt_cancels(kernel, tmp_path):
    km, kc = kernel
    out, reply = execute(
        kc,
        "import time, mapnb\n"
        "def nap(x):\n"
        "    t0 = time.time()\n"
        "    time.sleep(0.5)\n"
        "    return (t0, time.time())\n"
        "df = mapnb.map_task(nap, concurrency=4)(x=range(4))\n"
        "spans = df['output'].tolist()\n"
        "print(sum(a < min(e for _, e in spans) for a, _ in spans))\n",
    )
    assert reply["status"] == "ok", out
    assert int(out) >= 2  # at least two items ran side by side (all four, on a quiet machine)

    # The Interrupt button: SIGINT to the kernel while a blocking map runs.
    msg_id = kc.execute(
        "import os\n"
        "def forever(x):\n"
        f"    with open(os.path.join({str(tmp_path)!r}, f'started-{{x}}'), 'w') as f:\n"
        "        f.write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "mapnb.map_task(forever, concurrency=2)(x=[1, 2, 3])\n"
    )
    markers = [tmp_path / "started-1", tmp_path / "started-2"]
    wait_until(lambda: all(m.exists() and m.read_text() for m in markers), what="both subtasks running")
    pids = [int(m.read_text()) for m in markers]
    t0 = time.monotonic()
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] in (
        "KeyboardInterrupt",
        "RunInterrupted",
    )
    assert time.monotonic() - t0 < 30
    assert all(gone(p) for p in pids)  # the subtasks died before the cell returned
    out, _ = execute(kc, "r = mapnb.last_run(); print(r.state, sorted({s.value for s in r.statuses}))")
    assert out.strip() == "cancelled ['cancelled']"


def displays(kc, code: str) -> list[dict]:
    shown: list[dict] = []
    out, reply = execute(kc, code, shown=shown)
    assert reply["status"] == "ok", out
    return shown


def test_a_blocking_run_shows_the_grid_unless_it_is_quick_and_saves_its_final_picture(kernel):
    _, kc = kernel
    widget = "application/vnd.jupyter.widget-view+json"
    # The pool warm first: a run done before the grid's delay (0.3 s) shows nothing, it would
    # only flash. On a loaded machine even a warm quick run may take longer: a few tries.
    displays(kc, "import time, mapnb\ndf = mapnb.map_task(lambda x: -x, progress=False)(x=[1, 2])")
    tries = [displays(kc, "df = mapnb.map_task(lambda x: -x)(x=[1, 2])") for _ in range(3)]
    assert [] in tries, tries
    slow = displays(kc, "df = mapnb.map_task(lambda x: time.sleep(0.8) or x, concurrency=2)(x=[1, 2])")
    first, last = slow[0], slow[-1]
    assert first["msg_type"] == "display_data" and widget in first["content"]["data"]
    assert (
        "queued" in first["content"]["data"]["text/html"]
        or "running" in first["content"]["data"]["text/html"]
    )
    # The saved notebook's picture is brought up to date when the run ends.
    assert last["msg_type"] == "update_display_data"
    assert "succeeded 2" in last["content"]["data"]["text/html"]
    assert last["content"]["transient"]["display_id"] == first["content"]["transient"]["display_id"]
    off = displays(kc, "df = mapnb.map_task(lambda x: time.sleep(0.8) or x, progress=False)(x=[1])")
    assert off == []  # progress=False: no grid


def test_a_run_as_the_cells_last_expression_saves_its_final_picture(kernel):
    """``r`` as a cell's last expression is shown with a display id (not as an
    execute_result, which cannot be updated): once the run ends, its picture is updated."""
    _, kc = kernel
    code = "import time, mapnb\nr = mapnb.map_task(lambda x: time.sleep(1) or x, concurrency=2).submit(x=[1, 2])\nr"
    first = displays(kc, code)[0]
    assert first["msg_type"] == "display_data"
    assert "succeeded 2" not in first["content"]["data"]["text/html"]
    # The update may come from the run's own thread (under the first cell) or after the
    # next cell: read every message until that cell is idle.
    msg_id, updates = kc.execute("r.wait()"), []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["msg_type"] == "update_display_data":
            updates.append(msg["content"])
        if msg["parent_header"].get("msg_id") == msg_id and msg["content"].get("execution_state") == "idle":
            break
    mine = [u for u in updates if u["transient"]["display_id"] == first["content"]["transient"]["display_id"]]
    assert mine and "succeeded 2" in mine[-1]["data"]["text/html"]
