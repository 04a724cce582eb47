"""What only the local process pool does: isolation, killing, notebook functions, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import mapnb
from mapnb import Status, map_task
from mapnb.backends.local import Pool, shared_pool

from . import tasks
from .test_contract import wait_until

ROOT = Path(__file__).resolve().parents[1]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 15) -> None:
    wait_until(lambda: all(gone(p) for p in pids), timeout=timeout, what=f"processes {pids} to exit")


def crash(x: int) -> int:
    if x == 1:
        os._exit(7)
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 3:
        import ctypes

        ctypes.string_at(0)  # segmentation fault
    time.sleep(0.05)
    return x


def test_a_crashing_item_fails_alone_and_the_pool_carries_on():
    df = map_task(crash, concurrency=2, min_success_ratio=0)(x=[0, 1, 2, 3, 4, 5])
    assert df["status"].tolist() == ["succeeded", "failed", "failed", "failed", "succeeded", "succeeded"]
    assert "exited with code 7" in df["error"][1]
    assert "killed by SIGKILL" in df["error"][2]
    assert "SIGSEGV" in df["error"][3]
    assert df["output"].tolist()[4:] == [4, 5]
    # The pool replaced the dead workers and still works.
    assert map_task(tasks.double)(x=[1, 2])["output"].tolist() == [2, 4]


def test_a_crash_is_retried():
    df = map_task(crash, retries=1, min_success_ratio=0)(x=[1])
    assert df["attempts"][0] == 2 and df["status"][0] == "failed"


def spawn_child_and_sleep(x: int) -> int:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(child.pid, os.getpid(), flush=True)
    time.sleep(60)
    return x


def _child_pids(run: mapnb.MapRun, n: int) -> list[int]:
    wait_until(lambda: all(run.logs(i).strip() for i in range(n)), what="children started")
    return [int(run.logs(i).split()[0]) for i in range(n)]


def test_timeout_kills_the_worker_and_its_children():
    run = map_task(spawn_child_and_sleep, timeout=1.5, min_success_ratio=0).submit(x=[1])
    (child,) = _child_pids(run, 1)
    df = run.result(timeout=60)
    assert df["status"][0] == "failed" and "timeout=1.5s" in df["error"][0]
    wait_gone([child])


def test_loading_the_function_does_not_count_against_the_timeout():
    df = map_task(tasks.SlowToLoad(1.0), timeout=0.5, concurrency=1)(x=[1, 2])
    assert df["output"].tolist() == [1, 2]


def test_cancel_leaves_no_orphan_process():
    run = map_task(spawn_child_and_sleep, concurrency=2).submit(x=[1, 2, 3])
    kids = _child_pids(run, 2)
    workers = [int(run.logs(i).split()[1]) for i in range(2)]
    run.cancel()
    assert run.statuses == [Status.CANCELLED] * 3
    assert all(gone(p) for p in workers)  # dead before cancel returned
    # cancel returns once the workers running the items are dead; the items' own children,
    # SIGKILLed with the worker's process group, follow within moments.
    wait_gone(kids, timeout=10)


def native_and_shell_output(x: int) -> int:
    os.write(1, f"native out {x}\n".encode())
    os.write(2, f"native err {x}\n".encode())
    subprocess.run(["echo", f"shell {x}"], check=True)
    subprocess.run(["echo", f"to sys.stderr {x}"], stdout=sys.stderr, check=True)
    print(f"python {x}")
    return x


def test_output_of_native_code_and_subprocesses_is_captured_per_item():
    run = map_task(native_and_shell_output, concurrency=1).submit(x=[1, 2])
    run.result(timeout=60)
    for i, x in enumerate([1, 2]):
        # Python and native output are each in order; how they interleave depends on timing.
        assert sorted(run.logs(i, "stdout").splitlines()) == [f"native out {x}", f"python {x}", f"shell {x}"]
        assert run.logs(i, "stderr").splitlines() == [f"native err {x}", f"to sys.stderr {x}"]


def native_then_wait(path: str) -> str:
    os.write(1, b"native begin\n")
    return tasks.wait_for_file(path)


def test_native_output_streams_while_the_item_runs(tmp_path):
    gate = tmp_path / "gate"
    run = map_task(native_then_wait).submit(path=[str(gate)])
    try:
        wait_until(lambda: "native begin" in run.logs(0), what="the native write to arrive")
        assert not run.done()
    finally:
        gate.touch()
    run.result(timeout=30)


def test_unpicklable_output_fails_only_that_item():
    def make(x: int):
        return threading.Lock() if x == 1 else x

    df = map_task(make, min_success_ratio=0)(x=[0, 1, 2])
    assert df["status"].tolist() == ["succeeded", "failed", "succeeded"]
    assert "could not be pickled to send back" in df["error"][1]


def test_unpicklable_input_fails_only_that_item():
    df = map_task(tasks.kind, min_success_ratio=0)(obj=[1, threading.Lock(), 3])
    assert df["status"].tolist() == ["succeeded", "failed", "succeeded"]
    assert "inputs could not be pickled" in df["error"][1]


def test_worker_sees_the_callers_cwd_and_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAPNB_TEST_VALUE", "hello")
    df = map_task(lambda key: (os.getcwd(), os.environ.get(key)))(key=["MAPNB_TEST_VALUE"])
    assert df["output"][0] == (str(tmp_path), "hello")


def test_warm_pool_is_reused():
    map_task(tasks.double, concurrency=2)(x=range(4))
    before = set(shared_pool().pids())
    map_task(tasks.double, concurrency=2)(x=range(4))
    assert before and set(shared_pool().pids()) == before


def test_idle_workers_exit_and_the_pool_shuts_down():
    pool = Pool(idle_timeout=0.3)
    backend = mapnb.backends.local.LocalBackend(pool)
    try:
        assert map_task(tasks.double, backend=backend)(x=[1])["output"][0] == 2
        (pid,) = pool.pids()
        wait_until(lambda: not pool.pids(), timeout=10, what="the idle worker to retire")
        wait_gone([pid])
        assert map_task(tasks.double, backend=backend)(x=[2])["output"][0] == 4  # spawns again
        pids = pool.pids() + [pool.zygote_pid]
    finally:
        backend.shutdown()
    wait_gone(pids)


def test_a_chatty_item_keeps_a_bounded_log():
    def shout(n: int) -> int:
        line = "x" * 99 + "\n"
        for k in range(n):
            print(f"{k:08d}" + line, end="")
        return n

    run = map_task(shout).submit(n=[30_000])  # ~3.2 MB of output
    run.result(timeout=60)
    text = run.logs(0)
    assert len(text) < 1.1 * 1024 * 1024
    assert text.startswith("00000000x") and text.rstrip().endswith("x" * 20)
    assert "00029999" in text and "characters of output dropped here" in text


def _run_script(code: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path
    )


def test_functions_defined_in_main_work_without_a_main_guard(tmp_path):
    # Like a notebook: a function, a class and a lambda defined in __main__, no guard.
    out = _run_script(
        """
        import math
        from mapnb import map_task

        class Box:
            def __init__(self, v):
                self.v = v

        SCALE = 3

        def work(x):
            print("working on", x)
            return Box(math.sqrt(x) * SCALE)

        df = map_task(work, concurrency=2)(x=[1, 4, 9])
        assert [b.v for b in df["output"]] == [3.0, 6.0, 9.0], df
        assert isinstance(df["output"][0], Box)
        print(map_task(lambda s: s.upper())(s=["a", "b"])["output"].tolist())
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "['A', 'B']" in out.stdout
    assert "working on" not in out.stdout + out.stderr  # captured per item, not leaked


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    out = _run_script(
        """
        from mapnb import map_task
        map_task(lambda x: -x)(x=[-1, -2])
        map_task(lambda x: -x, progress=True)(x=[-3])
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "1/1" in out.stderr and "item" in out.stderr  # the forced bar
    assert "2/2" not in out.stderr  # the automatic one stays quiet off a terminal


def test_progress_bar_on_a_terminal(tmp_path):
    import pty

    script = tmp_path / "bar.py"
    script.write_text("from mapnb import map_task\nmap_task(lambda x: -x)(x=range(5))\n")
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script)], stderr=slave, env=env, timeout=60)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0
    assert b"5/5" in seen and b"<lambda>" in seen


def test_interrupt_cancels_kills_subtasks_and_keeps_partial_results(tmp_path):
    # SIGINT in the caller (the notebook's Interrupt button) while a blocking map runs.
    code = f"""
        import os, signal, subprocess, sys, threading, time
        sys.path.insert(0, {str(ROOT)!r})
        import mapnb
        from tests.test_local import spawn_child_and_sleep

        def fast_or_slow(x):
            if x == 0:
                return "quick"
            return spawn_child_and_sleep(x)

        def interrupt_soon():
            run = None
            while run is None or not (run.outputs[0] and all(run.logs(i).strip() for i in (1, 2))):
                time.sleep(0.05)
                run = mapnb.last_run()
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt_soon, daemon=True).start()
        try:
            mapnb.map_task(fast_or_slow, concurrency=3)(x=[0, 1, 2])
        except KeyboardInterrupt:
            run = mapnb.last_run()
            print("INTERRUPTED", run.statuses[0].value, run.outputs[0], run.state)
            print("KIDS", run.logs(1).split()[0], run.logs(2).split()[0])
            print("WORKERS", *mapnb.backends.local.shared_pool().pids())
        """
    out = _run_script(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "INTERRUPTED succeeded quick cancelled" in out.stdout, out.stdout + out.stderr
    kids = [int(p) for p in out.stdout.split("KIDS")[1].split()[:2]]
    wait_gone(kids, timeout=10)
    wait_gone([int(p) for p in out.stdout.split("WORKERS")[1].split()])  # the pool exits with Python


def test_pool_processes_die_with_the_caller(tmp_path):
    # Even when the caller is SIGKILLed mid-run, no worker outlives it.
    code = f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import mapnb
        from tests import tasks
        run = mapnb.map_task(tasks.sleepy, concurrency=2).submit(x=[30, 30])
        while mapnb.last_run().counts["running"] < 2:
            time.sleep(0.05)
        pool = mapnb.backends.local.shared_pool()
        print(*pool.pids(), pool.zygote_pid, flush=True)
        time.sleep(60)
        """
    script = tmp_path / "victim.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3
    finally:
        proc.kill()
        proc.wait()
    wait_gone(pids)


def test_many_tiny_items_are_batched():
    run = map_task(tasks.double).submit(x=range(5000))
    run.result(timeout=60)
    eng = run._engine
    assert eng._batcher.per_item is not None and eng._batcher.per_item < 0.01


@pytest.mark.parametrize("n", [0, 1])
def test_small_runs(n):
    assert len(map_task(tasks.double)(x=range(n))) == n


def test_the_outbox_sends_a_large_output_at_once_and_small_ones_by_the_thousand():
    import pickle as _pickle

    from mapnb.worker import Outbox

    class Conn:
        def __init__(self) -> None:
            self.sent: list[list] = []

        def send_bytes(self, blob: bytes) -> None:
            self.sent.append(_pickle.loads(blob))

    conn = Conn()
    box = Outbox(conn, interval=3600)  # no tick: only what finished() sends
    try:
        for i in range(Outbox.flush_rows - 1):
            box.finished(i, 1, True, i, None, 0.0, 0.0)
        assert conn.sent == []  # small outputs wait for the batch
        box.finished(5000, 1, True, b"x" * Outbox.flush_bytes, None, 0.0, 0.0)
        assert len(conn.sent) == 1 and len(conn.sent[0][0][2]) == Outbox.flush_rows  # sent with what waited
    finally:
        box.close()


def _play_item(box, i: int) -> None:
    """What a worker's item i reports: sometimes a log line, metrics, a failure, an output
    that is pickled (not a plain value)."""
    from mapnb.errors import ItemError

    box.started(i, 1, float(i))
    if i % 97 == 0:
        box.log(i, 1, "stdout", f"line {i}\n")
    if i % 101 == 0:
        box.metrics(i, 1, 0, {"loss": float(i)})
    if i % 89 == 0:
        box.finished(i, 1, False, None, ItemError("exception", "ValueError", "no"), float(i), float(i))
    else:
        box.finished(i, 1, True, [i] if i % 83 == 0 else i, None, float(i), float(i))


def test_the_outbox_loses_and_reorders_nothing_while_its_tick_flushes_between_items():
    # Outbox.finished queues the usual outcome without the lock; the flushing thread (here
    # every 0.1 ms) takes what is queued at any moment. Every outcome must arrive once, in
    # order, each after its item's log and metrics, and the task's end after them all.
    import pickle as _pickle

    from mapnb.protocol import ENDED, LOG, METRICS, OUTCOMES, STARTED
    from mapnb.worker import Outbox

    class Conn:
        def __init__(self) -> None:
            self.records: list = []

        def send_bytes(self, blob: bytes) -> None:
            self.records += _pickle.loads(blob)

    conn, n = Conn(), 20_000
    box = Outbox(conn, interval=0.0001)
    try:
        box.task_id = 7
        for i in range(n):
            _play_item(box, i)
        box.end_task()
    finally:
        box.close()
    done = [row[0] for r in conn.records if r[0] == OUTCOMES for row in r[2]]
    assert done == list(range(n))
    where = {}  # item -> position of its outcome
    for k, r in enumerate(conn.records):
        if r[0] == OUTCOMES:
            where.update((row[0], k) for row in r[2])
    for k, r in enumerate(conn.records):
        if r[0] in (LOG, METRICS):
            assert k < where[r[2]], r
        elif r[0] == STARTED:
            assert k < where[r[2]], r
    assert conn.records[-1][0] == ENDED and all(r[1] == 7 for r in conn.records)


def test_a_function_that_cannot_be_pickled_fails_every_item_saying_why():
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    run = map_task(holds_a_lock, min_success_ratio=0).submit(x=[1, 2])
    run.wait()
    assert run.statuses == [Status.FAILED, Status.FAILED]
    assert all("could not be pickled to send to a worker process" in run.errors[i].message for i in (0, 1))
