"""Issue 10 on the local pool: sys.path before the job loads, memory limits that hold,
exact crash attribution, standard descriptors repaired, no escaped processes, and one
resource budget for all runs in a process. Real pools throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import mapnb
from mapnb import Resources, map_task
from mapnb.backends.local import LocalBackend, Pool

from .test_contract import wait_until
from .test_local import gone, wait_gone

ROOT = str(Path(__file__).resolve().parent.parent)

# -- item 1: a module on a sys.path the caller added -----------------------------------


def _module(tmp_path: Path, body: str) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    name = f"featurize_{uuid.uuid4().hex[:8]}"
    (src / f"{name}.py").write_text(body)
    return name


def test_a_function_from_a_module_on_a_user_added_sys_path(tmp_path, monkeypatch):
    body = "class Box:\n    def __init__(self, v):\n        self.v = v\n\ndef feat(x):\n    return x.v * 10\n"
    name = _module(tmp_path, body)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))  # as a notebook's sys.path.insert
    module = __import__(name)  # in sys.modules: cloudpickle sends the function by name
    try:  # the inputs are instances of the module's class: they load there too
        df = map_task(module.feat, concurrency=1)(x=[module.Box(v) for v in (1, 2, 3)])
    finally:
        del sys.modules[name]
    assert df["status"].tolist() == ["succeeded"] * 3, df["error"].tolist()
    assert df["output"].tolist() == [10, 20, 30]


def test_a_function_that_cannot_load_gives_every_item_the_real_error(tmp_path, monkeypatch):
    name = _module(tmp_path, "def feat(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    module = __import__(name)
    (tmp_path / "src" / f"{name}.py").unlink()  # gone before the workers look for it
    pool = Pool()
    try:  # one worker: every later task of the job arrives without the job's bytes
        mt = map_task(module.feat, concurrency=1, min_success_ratio=0, backend=LocalBackend(pool))
        df = mt(x=[1, 2, 3])
    finally:
        pool.shutdown()
        del sys.modules[name]
    assert df["status"].tolist() == ["failed"] * 3
    for err in df["error"]:
        assert f"No module named '{name}'" in err and "could not load the task function" in err, err


# -- item 2: a memory limit that holds against one fast allocation ----------------------


def one_big_bytes(mib: int) -> int:
    """One long C call (a memset) that holds the GIL the whole time."""
    return len(b"x" * (mib * 2**20))


def test_a_memory_limit_stops_one_fast_allocation():
    mt = map_task(one_big_bytes, min_success_ratio=0).with_overrides(limits=Resources(mem="300Mi"))
    df = mt(mib=[1536, 10])
    run = mapnb.last_run()
    assert df["status"].tolist() == ["failed", "succeeded"], df["error"].tolist()
    assert run.errors[0].type == "MemoryLimitExceeded" and "limit mem=300Mi" in run.errors[0].message


def test_a_memory_limit_holds_from_outside_the_worker(monkeypatch):
    # Without the kernel limit, the fork server's sampling alone must catch it.
    monkeypatch.setenv("MAPNB_RLIMIT_DATA", "0")
    mt = map_task(one_big_bytes, min_success_ratio=0).with_overrides(limits=Resources(mem="300Mi"))
    df = mt(mib=[1536, 10])
    run = mapnb.last_run()
    assert df["status"].tolist() == ["failed", "succeeded"], df["error"].tolist()
    err = run.errors[0]
    assert err.type == "MemoryLimitExceeded" and "exceeded its limit mem=300Mi" in err.message
    assert "the item used" in err.message  # measured and killed from outside


# -- item 10: one crash among many tiny items -------------------------------------------


def crash_once_among_many(x: int, marker: str) -> int:
    if x == 5000:
        with open(marker, "a") as f:
            f.write("ran\n")
        os._exit(3)
    return x


def test_a_crash_among_tiny_items_fails_only_its_item_once(tmp_path):
    marker = str(tmp_path / "crasher-ran")
    n = 10_000
    run = map_task(crash_once_among_many, retries=0, min_success_ratio=0).submit(
        x=range(n), marker=[marker] * n
    )
    run.result(timeout=300)
    failed = [i for i, s in enumerate(run.statuses) if s.value != "succeeded"]
    assert failed == [5000], [(i, run.errors[i]) for i in failed[:5]]
    assert "exited with code 3" in run.errors[5000].message
    assert Path(marker).read_text().count("ran") == 1  # at most 1 + retries times
    assert max(run.attempts[i] for i in range(n) if i != 5000) == 1


# -- item 11: an item that closes the standard descriptors ------------------------------


def close_or_write(x: int) -> int:
    if x == 0:
        os.close(1)
        os.close(2)
    elif x == 1:  # 1, 2 and the files mapnb captures them into: nothing to repair with
        for fd in os.listdir("/proc/self/fd"):
            try:
                if "mapnb-std" in os.readlink(f"/proc/self/fd/{fd}"):
                    os.close(int(fd))
            except OSError:
                pass
    else:
        os.write(1, f"native {x}\n".encode())
        subprocess.run(["echo", f"shell {x}"], check=True)
    return os.getpid()


def test_an_item_that_closes_fds_1_and_2_does_not_break_later_items():
    pool = Pool()
    try:
        mt = map_task(close_or_write, concurrency=1, min_success_ratio=0, backend=LocalBackend(pool))
        run = mt.submit(x=[0, 2, 3, 1, 4, 5])
        df = run.result(timeout=120)
    finally:
        pool.shutdown()
    assert df["status"].tolist() == ["succeeded"] * 6, df["error"].tolist()
    pids = df["output"].tolist()
    assert pids[0] == pids[1] == pids[2]  # repaired: the same worker goes on
    assert pids[4] != pids[3]  # beyond repair: that worker retired, a new one took over
    for i, x in ((1, 2), (2, 3), (4, 4), (5, 5)):
        assert run.logs(i, "stdout").split() == ["native", str(x), "shell", str(x)], run.logs(i)


def redirect_or_write(x: int, path: str) -> int:
    if x == 0:  # fd 1 now writes to a file of the item's own
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), 1)
    else:
        os.write(1, f"native {x}\n".encode())
    return os.getpid()


def test_an_item_that_moves_fd_1_elsewhere_does_not_take_later_items_output(tmp_path):
    # The cheap check between items (descriptor flags and file ends) must notice the move.
    own = str(tmp_path / "own.txt")
    pool = Pool()
    try:
        mt = map_task(redirect_or_write, concurrency=1, backend=LocalBackend(pool))
        run = mt.submit(x=[0, 1, 2], path=[own] * 3)
        run.result(timeout=120)
    finally:
        pool.shutdown()
    assert len(set(run.outputs)) == 1  # one worker ran them all, repaired in between
    assert run.logs(1, "stdout") == "native 1\n" and run.logs(2, "stdout") == "native 2\n"
    assert "native" not in Path(own).read_text()


def test_the_quick_check_between_items_is_not_fooled_by_a_new_empty_file(tmp_path):
    # Right after a full check (the fds' flags are compared at most once a millisecond),
    # fd 1 moved to an empty file must still fail the quick check on sizes.
    script = textwrap.dedent(
        f"""
        import os
        from mapnb.backends.local.serve import _FdCapture

        fds = _FdCapture()
        assert fds._quiet()  # (the full check: flags and sizes)
        os.dup2(os.open({str(tmp_path / "empty.txt")!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND), 1)
        quiet = fds._quiet()
        os.write(fds.originals["stderr"], b"quiet=%d" % quiet)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stderr.endswith("quiet=0"), out.stderr


def keyword_order(b: int, a: int, *, c: int = 0) -> tuple[int, int, int]:
    return (a, b, c)


def test_items_bind_by_name_whatever_the_parameter_order():
    # Positional calls are a shortcut only where they bind as the keyword call would.
    assert map_task(keyword_order).submit(a=[1], b=[2]).result()["output"][0] == (1, 2, 0)
    assert map_task(keyword_order).submit(b=[2], a=[1], c=[3]).result()["output"][0] == (1, 2, 3)


# -- item 12: processes an item starts do not outlive the pool's workers ---------------

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def start_stubborn_child(how: str, folder: str) -> int:
    if how == "daemon":  # double fork in a session of its own: the child's parent exits
        code = (
            "import os, subprocess, sys; "
            f"p = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], start_new_session=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(p.pid)"
        )
        pid = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    else:
        pid = subprocess.Popen([sys.executable, "-c", STUBBORN], start_new_session=how != "plain").pid
    Path(folder, f"{how}.pid").write_text(str(pid))
    if how == "crash":
        os._exit(3)
    return pid


def test_children_of_items_die_with_their_worker(tmp_path):
    hows = ["plain", "session", "daemon", "crash"]
    pool = Pool(idle_timeout=1.0)
    kids: list[int] = []
    try:
        mt = map_task(start_stubborn_child, concurrency=4, min_success_ratio=0, backend=LocalBackend(pool))
        df = mt(how=hows, folder=[str(tmp_path)] * 4)
        assert df["status"].tolist() == ["succeeded"] * 3 + ["failed"], df["error"].tolist()
        kids = [int((tmp_path / f"{h}.pid").read_text()) for h in hows]
        wait_until(lambda: not pool.pids(), timeout=30, what="the idle workers to retire")
        wait_gone(kids, timeout=15)
    finally:
        for pid in kids:  # never leave one behind, even when the test fails
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        pool.shutdown()


# -- item 13: one budget of GPUs (and CPUs, memory) for every run in a process ----------


def gpu_span(x: float) -> tuple[str, float, float]:
    t0 = time.time()
    time.sleep(x)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), t0, time.time()


def test_gpu_requests_of_concurrent_runs_share_one_budget(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # as if this machine had one GPU
    mt = map_task(gpu_span, concurrency=4).with_overrides(requests=Resources(gpu=1))
    runs = [mt.submit(x=[0.3, 0.3]), mt.submit(x=[0.3, 0.3])]
    spans = []
    for run in runs:
        spans += run.result(timeout=120)["output"].tolist()
    assert [gpu for gpu, _, _ in spans] == ["0"] * 4  # every item had the GPU ...
    spans.sort(key=lambda s: s[1])
    for (_, _, a1), (_, b0, _) in zip(spans, spans[1:]):
        assert b0 >= a1 - 0.02  # ... one at a time, across both runs


def test_cpu_requests_of_concurrent_runs_share_one_budget():
    from mapnb.backends.base import usable_cpus

    mt = map_task(gpu_span, concurrency=4).with_overrides(requests=Resources(cpu=usable_cpus()))
    runs = [mt.submit(x=[0.3, 0.3]), mt.submit(x=[0.3, 0.3])]
    spans = sorted((s for run in runs for s in run.result(timeout=120)["output"]), key=lambda s: s[1])
    for (_, _, a1), (_, b0, _) in zip(spans, spans[1:]):
        assert b0 >= a1 - 0.02  # all the CPUs each: one item at a time, across both runs


def test_a_run_waiting_for_the_budget_can_be_cancelled(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    mt = map_task(gpu_span, concurrency=1).with_overrides(requests=Resources(gpu=1))
    first = mt.submit(x=[2.0])
    wait_until(lambda: first.counts["running"] == 1, what="the first run to hold the GPU")
    second = mt.submit(x=[0.1])
    second.cancel()  # its task waits for the GPU: cancel must not wait for it
    assert second.statuses[0].value == "cancelled"
    assert first.result(timeout=60)["output"][0][0] == "0"
    assert mt(x=[0.1])["output"][0][0] == "0"  # the GPU is free again
