"""The engine's decisions, driven by a scripted fake backend (no processes, no sleeps)."""

from __future__ import annotations

import array
import queue
import time

import pytest

from mapnb.backends.base import Backend, Job, ReportFn, Task
from mapnb.engine import _MAX_BATCH, Batcher, Engine
from mapnb.errors import ItemError, worker_died
from mapnb.events import Status
from mapnb.protocol import ENDED, FAILED, FINISHED, LOG, OK, PICKLED, STARTED, Outcomes
from mapnb.spec import Options
from mapnb.state import consecutive

from . import tasks


class Scripted(Backend):
    """Hands every task to the test, which then plays the backend's reports."""

    name = "scripted"
    can_kill = True

    def __init__(self) -> None:
        self.tasks: queue.Queue[tuple[Task, ReportFn]] = queue.Queue()
        self.killed: list[int] = []

    def submit(self, task: Task, report: ReportFn) -> None:
        self.tasks.put((task, report))

    def kill(self, task_id: int) -> None:
        self.killed.append(task_id)

    def next(self) -> tuple[Task, ReportFn]:
        return self.tasks.get(timeout=10)


def make(n: int, backend: Backend, per_item: float | None = None, **kw) -> Engine:
    opts = Options(**(dict(concurrency=1, min_success_ratio=1.0, retries=0, timeout=None) | kw))
    eng = Engine(
        run_id="t", job=Job("t", abs, ("x",)), inputs=[(i,) for i in range(n)], backend=backend, options=opts
    )
    eng._batcher.per_item = per_item  # None: batches start at one item; tiny: one batch takes all
    eng.start()
    return eng


def succeed_the_rest(eng: Engine, b: Scripted) -> None:
    while not eng.done.wait(0.01):
        try:
            t, r = b.tasks.get_nowait()
        except queue.Empty:
            continue
        r([ok(t, i) for i, _, _ in t.items] + [(ENDED, t.id, None, False)])


def ok(task: Task, i: int, value: object = None, t0: float = 0.0, t1: float = 0.0) -> tuple:
    attempt = next(a for j, a, _ in task.items if j == i)
    return (FINISHED, task.id, i, attempt, True, i if value is None else value, t0, t1)


def test_dead_worker_fails_the_running_item_and_requeues_the_rest_uncharged():
    b = Scripted()
    eng = make(6, b, per_item=5e-3, retries=0, min_success_ratio=0)  # 5 ms items: worth splitting
    task, report = b.next()
    assert [i for i, _, _ in task.items] == [0, 1, 2]  # half the queue: batches stay fair
    # Item 0 finished, then the worker died while running item 1.
    report([ok(task, 0), (ENDED, task.id, worker_died(-9), False)])
    succeed_the_rest(eng, b)
    assert eng.view.status[0] is Status.SUCCEEDED
    assert eng.view.status[1] is Status.FAILED and eng.view.errors[1].kind == "worker-died"
    assert eng.view.status[2] is Status.SUCCEEDED and eng.view.attempts[2] == 1


def test_batch_load_failure_fails_every_item_of_the_batch():
    b = Scripted()
    eng = make(2, b, min_success_ratio=0, concurrency=1)
    task, report = b.next()
    report([(ENDED, task.id, ItemError("serialization", "X", "no"), True)])
    task, report = b.next()
    report([(ENDED, task.id, ItemError("serialization", "X", "no"), True)])
    assert eng.done.wait(10)
    assert eng.view.status == [Status.FAILED, Status.FAILED]


def test_timeout_kills_the_task_and_requeues_its_unstarted_items():
    b = Scripted()
    eng = make(6, b, per_item=5e-3, timeout=0.05, retries=1, min_success_ratio=0)
    task, report = b.next()
    assert len(task.items) == 3
    killed = task.id
    report([(STARTED, task.id, 0, 1, time.monotonic())])  # then nothing: the first item overruns
    task2, report2 = b.next()
    assert killed in b.killed
    assert eng.view.attempts[0] == 1 and eng.view.errors[0].kind == "timeout"
    # late reports from the killed task are ignored
    report([ok(task, 0, value="late"), (ENDED, task.id, None, False)])
    report2([ok(task2, i) for i, _, _ in task2.items] + [(ENDED, task2.id, None, False)])
    succeed_the_rest(eng, b)
    assert eng.view.outputs[0] != "late"
    assert eng.view.attempts[1] == 1 and eng.view.attempts[2] == 1  # requeued, not charged


def test_the_timeout_clock_starts_when_the_task_does():
    b = Scripted()
    eng = make(1, b, timeout=0.05)
    task, report = b.next()
    time.sleep(0.2)  # a worker starting, or a slow import while loading the function
    assert not b.killed and eng.view.status[0] is Status.QUEUED
    report([ok(task, 0, t0=time.monotonic(), t1=time.monotonic() + 0.01), (ENDED, task.id, None, False)])
    assert eng.done.wait(10) and eng.view.status[0] is Status.SUCCEEDED


def test_abort_kills_every_task_in_flight():
    b = Scripted()
    eng = make(4, b, concurrency=3)
    tasks = [b.next() for _ in range(3)]
    t0, r0 = tasks[0]
    r0(
        [
            (FINISHED, t0.id, 0, 1, False, ItemError("exception", "E", "x"), 0.0, 0.0),
            (ENDED, t0.id, None, False),
        ]
    )
    assert eng.done.wait(10)
    assert sorted(b.killed) == sorted(t.id for t, _ in tasks[1:])
    assert eng.view.status == [Status.FAILED, Status.ABORTED, Status.ABORTED, Status.ABORTED]
    assert eng.view.lifecycle == "failed"


def test_logs_and_started_update_state():
    b = Scripted()
    eng = make(1, b)
    task, report = b.next()
    report([(STARTED, task.id, 0, 1, 0.0), (LOG, task.id, 0, 1, "stdout", "hi\n")])
    report([(FINISHED, task.id, 0, 1, False, ItemError("exception", "E", "x"), 0.0, 0.0)])
    report([(ENDED, task.id, None, False)])
    assert eng.done.wait(10)
    assert eng.view.log_text(0) == "hi\n"


def test_logs_of_each_attempt_are_kept_with_a_separator():
    b = Scripted()
    eng = make(1, b, retries=1)
    for attempt in (1, 2):
        task, report = b.next()
        fin = (
            FINISHED,
            task.id,
            0,
            attempt,
            attempt == 2,
            "done" if attempt == 2 else ItemError("exception", "E", "x"),
            0,
            0,
        )
        report([(LOG, task.id, 0, attempt, "stdout", f"try {attempt}\n"), fin, (ENDED, task.id, None, False)])
    assert eng.done.wait(10)
    assert eng.view.log_text(0) == "try 1\n--- attempt 2 ---\ntry 2\n"


def test_duration_over_timeout_counts_as_timeout_when_reported_late():
    b = Scripted()
    eng = make(1, b, timeout=100.0, min_success_ratio=0)
    task, report = b.next()
    report([ok(task, 0, t0=0.0, t1=150.0), (ENDED, task.id, None, False)])
    assert eng.done.wait(10)
    assert eng.view.status[0] is Status.FAILED and eng.view.errors[0].kind == "timeout"


def test_batch_start_small_for_unknown_items():
    b = Scripted()
    eng = make(3, b)
    task, _ = b.next()
    assert len(task.items) == 1
    eng.cancel()
    assert eng.done.wait(10) and eng.view.lifecycle == "cancelled"


@pytest.mark.parametrize(
    "per_item, pending, slots, expected",
    [
        (None, 1000, 2, 1),
        (1.0, 1000, 2, 1),
        (1e-5, 1000, 2, 500),  # what is left fits in one task per slot: split evenly
        (1e-5, 5000, 2, 1250),  # ... it does not (50 ms of work, 20 ms per task): halved
        (1e-5, 100_000, 2, 2000),
        (1e-3, 1000, 4, 20),
        (1e-5, 50, 2, 200),  # the tail of tiny items: not split into tasks too short to pay
        (0.1, 3, 2, 1),  # the tail of slow items: split to the last item
    ],
)
def test_batch_sizes(per_item, pending, slots, expected):
    b = Batcher()
    b.per_item = per_item
    assert b.size(pending, slots) == expected


def test_slots_free_together_share_what_fits_evenly():
    b = Batcher()
    b.per_item = 4e-6  # 2,000 tiny items: 8 ms in all
    assert b.size(2000, 2, sharing=2) == 1000 and b.size(1000, 2, sharing=1) == 1000
    assert b.size(1000, 2) == 501  # a slot freed while another runs: halves, for the tail


class SlowDispatch(Backend):
    """Real threads, with a fixed 50 ms added before every task starts: per-task overhead
    such as a loaded machine or a remote cluster adds, outside the items' own time."""

    name = "slow-dispatch"

    def __init__(self) -> None:
        from mapnb.backends.threads import ThreadBackend

        self.inner = ThreadBackend()
        self.sizes: list[int] = []

    def submit(self, task: Task, report: ReportFn) -> None:
        import threading

        self.sizes.append(len(task.items))

        def later() -> None:
            time.sleep(0.05)
            self.inner.submit(task, report)

        threading.Thread(target=later, daemon=True).start()


def test_batches_grow_to_amortise_a_fixed_per_task_overhead():
    # The batcher used to charge the 50 ms to the items: "items are slow", batches of one,
    # 1,000 tasks. Kept apart, the overhead makes batches grow instead.
    b = SlowDispatch()
    eng = Engine(
        run_id="t", job=Job("t", tasks.double, ("x",)), inputs=[(i,) for i in range(1000)], backend=b,
        options=Options(concurrency=2),
    )  # fmt: skip
    eng.start()
    assert eng.done.wait(300) and eng.view.lifecycle == "succeeded"
    assert sum(b.sizes) == 1000 and len(b.sizes) < 60, b.sizes
    assert eng._batcher.overhead > 0.03  # measured as overhead, not as the items' time


def test_the_batcher_keeps_item_cost_and_task_overhead_apart():
    b = Batcher()
    b.record(1, work=1e-5, wall=0.05)  # one tiny item in a task that took 50 ms
    assert b.per_item == pytest.approx(1e-5) and b.overhead == pytest.approx(0.025, rel=0.01)
    assert b.size(100_000, 2) == _MAX_BATCH  # overhead dominates: big batches
    b = Batcher()
    b.record(10, work=10.0, wall=10.05)  # slow items: overhead does not make batches
    assert b.size(1000, 2) == 1


def test_a_backend_that_retries_and_caches_itself_reports_the_items_end():
    """FINISHED with a ninth field (attempts, status), as backend='flyte' sends it: final,
    with the backend's attempts and status; the engine does not retry it."""
    b = Scripted()
    eng = make(4, b, concurrency=4, retries=3, min_success_ratio=0)
    ends = {0: (True, 2, Status.SUCCEEDED), 1: (True, 0, Status.CACHED), 2: (False, 3, Status.FAILED),
            3: (False, 1, Status.ABORTED)}  # fmt: skip
    for _ in range(4):
        task, report = b.next()
        ((i, attempt, _),) = task.items
        good, attempts, status = ends[i]
        kind = "exception" if status is Status.FAILED else status.value
        value = i * 10 if good else ItemError(kind, "FlyteError", "on Flyte")
        report(
            [
                (FINISHED, task.id, i, attempt, good, value, 0.0, 1.0, (attempts, status)),
                (ENDED, task.id, None, False),
            ]
        )
    assert eng.done.wait(10)
    assert eng.view.status == [Status.SUCCEEDED, Status.CACHED, Status.FAILED, Status.ABORTED]
    assert eng.view.attempts == [2, 0, 3, 1]
    assert eng.view.outputs[:2] == [0, 10] and eng.view.errors[2].message == "on Flyte"
    assert b.tasks.empty()  # nothing was retried by the engine


# -- Outcomes: a task's outcomes in one record (the local pool's workers send these) -------


def test_outcomes_settle_in_order_and_a_failure_aborts_the_items_after_it():
    b = Scripted()
    eng = make(4, b, per_item=1e-6, min_success_ratio=1.0)  # tiny: one task takes all
    task, report = b.next()
    assert len(task.items) == 4
    err = ItemError("exception", "ValueError", "bad")
    rows = [(0, 1, OK, "a", 1.0, 1.5), (1, 1, FAILED, err, 1.5, 2.0), (2, 1, OK, "c", 2.0, 2.5)]
    report([Outcomes(task.id, rows), (ENDED, task.id, None, False)])
    assert eng.done.wait(10)
    v = eng.view
    assert v.status[0] is Status.SUCCEEDED and v.outputs[0] == "a" and v.durations[0] == 0.5
    assert v.status[1] is Status.FAILED and v.errors[1].message == "bad"
    # Item 1's failure made min_success_ratio unreachable before item 2's outcome was read.
    assert v.status[2] is Status.ABORTED and v.outputs[2] is None
    assert v.status[3] is Status.ABORTED
    assert v.counts[Status.SUCCEEDED] == 1 and v.counts[Status.ABORTED] == 2 and v.counts[Status.QUEUED] == 0


def test_a_repeated_outcome_is_ignored_and_the_unfinished_items_requeued():
    b = Scripted()
    eng = make(3, b, per_item=1e-6, retries=0)
    task, report = b.next()
    # Item 0 done, the same outcome again, then the task ends: items 1 and 2 go back.
    report([Outcomes(task.id, [(0, 1, OK, 10, 0.0, 0.0), (0, 1, OK, 99, 0.0, 0.0)]), (ENDED, task.id, None, False)])
    task2, report2 = b.next()
    assert sorted(i for i, _, _ in task2.items) == [1, 2]
    report2([Outcomes(task2.id, [(i, a, OK, i * 10, 0.0, 0.0) for i, a, _ in task2.items]), (ENDED, task2.id, None, False)])
    assert eng.done.wait(10) and eng.view.lifecycle == "succeeded"
    assert eng.view.outputs == [10, 10, 20] and eng.view.attempts == [1, 1, 1]


def test_a_run_of_successes_is_settled_whole_and_anything_else_row_by_row():
    # engine._succeed_run settles a consecutive run of successes with slice writes; a
    # batch out of order or of items already final takes the row-by-row path.
    b = Scripted()
    eng = make(6, b, per_item=1e-6)
    task, report = b.next()
    assert [i for i, _, _ in task.items] == list(range(6))
    report([Outcomes(task.id, [(0, 1, OK, "a", 1.0, 1.25), (1, 1, OK, "b", 1.25, 2.0)])])  # a run
    report([Outcomes(task.id, [(3, 1, OK, "d", 3.0, 3.5), (2, 1, OK, "c", 2.0, 3.0)])])  # out of order
    report([Outcomes(task.id, [(4, 1, OK, "e", 0.0, 1.0), (5, 1, OK, "f", 4.0, 4.5)])])  # a run
    report([Outcomes(task.id, [(4, 1, OK, "again", 0.0, 0.0), (5, 1, OK, "again", 0.0, 0.0)])])  # final already
    report([(ENDED, task.id, None, False)])
    assert eng.done.wait(10) and eng.view.lifecycle == "succeeded"
    v = eng.view
    assert v.outputs == ["a", "b", "c", "d", "e", "f"] and v.attempts == [1] * 6
    assert list(v.durations) == [0.25, 0.75, 1.0, 0.5, 1.0, 0.5]
    assert v.counts[Status.SUCCEEDED] == 6 and v.counts[Status.QUEUED] == v.counts[Status.RUNNING] == 0
    assert bytes(v.codes) == bytes([list(Status).index(Status.SUCCEEDED)]) * 6
    assert eng._tasks == {}


def test_requeued_items_go_out_again_by_the_item_by_item_path():
    # engine._take sends a run of consecutive queued items in one step; items put back
    # on the queue (not a run any more) take the item-by-item path.
    b = Scripted()
    eng = make(5, b, per_item=1e-6)
    task, report = b.next()
    report([Outcomes(task.id, [(0, 1, OK, 0, 0.0, 0.0)]), (ENDED, task.id, None, False)])
    task2, report2 = b.next()
    assert sorted(i for i, _, _ in task2.items) == [1, 2, 3, 4] and {a for _, a, _ in task2.items} == {1}
    report2([Outcomes(task2.id, [(i, a, OK, i, 0.0, 0.0) for i, a, _ in task2.items]), (ENDED, task2.id, None, False)])
    assert eng.done.wait(10) and eng.view.outputs == [0, 1, 2, 3, 4]


def test_pickled_outputs_are_loaded_and_one_that_cannot_be_fails_alone():
    import pickle

    from mapnb.backends._wire import load_outputs

    rows = [(0, 1, PICKLED, pickle.dumps({"a": 1}), 0.0, 1.0), (1, 1, PICKLED, b"not a pickle", 0.0, 1.0),
            (2, 1, OK, 3, 0.0, 1.0)]  # fmt: skip
    (r,) = load_outputs([Outcomes(7, rows)])
    assert r[2][0] == (0, 1, OK, {"a": 1}, 0.0, 1.0) and r[2][2] == (2, 1, OK, 3, 0.0, 1.0)
    assert r[2][1][2] == FAILED and r[2][1][3].kind == "serialization"


def test_a_task_that_ends_cleanly_frees_its_slot_before_its_outcomes_are_settled():
    class Watching(Scripted):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[list[Status]] = []
            self.engine: Engine | None = None

        def submit(self, task: Task, report: ReportFn) -> None:
            if self.engine is not None:
                self.seen.append(list(self.engine.view.status))
            super().submit(task, report)

    b = Watching()
    eng = make(4, b, per_item=1e-2)  # 10 ms items at concurrency 1: two tasks of two
    task, report = b.next()
    b.engine = eng
    assert [i for i, _, _ in task.items] == [0, 1]
    report([Outcomes(task.id, [(i, a, OK, i, 0.0, 0.0) for i, a, _ in task.items]), (ENDED, task.id, None, False)])
    task2, report2 = b.next()
    assert [i for i, _, _ in task2.items] == [2, 3]
    assert b.seen[0][:2] == [Status.QUEUED, Status.QUEUED]  # the next task went out first
    report2([Outcomes(task2.id, [(i, a, OK, i, 0.0, 0.0) for i, a, _ in task2.items]), (ENDED, task2.id, None, False)])
    assert eng.done.wait(10) and eng.view.lifecycle == "succeeded" and eng.view.outputs == [0, 1, 2, 3]


def test_a_map_of_the_same_function_starts_from_what_the_last_one_measured():
    from mapnb.backends.threads import ThreadBackend

    class Recording(ThreadBackend):
        name = "recording-history"
        remembers = True  # (the local pool's choice; other backends start afresh)

        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def submit(self, task: Task, report: ReportFn) -> None:
            self.sizes.append(len(task.items))
            super().submit(task, report)

    def run(b: Backend) -> None:
        eng = Engine(
            run_id="t", job=Job("t", tasks.double, ("x",)), inputs=[(i,) for i in range(400)], backend=b,
            options=Options(concurrency=2),
        )  # fmt: skip
        eng.start()
        assert eng.done.wait(60) and eng.view.lifecycle == "succeeded"

    first, second = Recording(), Recording()
    run(first)
    assert first.sizes[0] == 1  # nothing known: one item, to measure
    run(second)
    assert second.sizes[0] > 1 and sum(second.sizes) == 400, second.sizes  # measured before


def test_a_quick_submit_backend_gets_the_first_tasks_from_the_callers_thread():
    import threading

    class Quick(Scripted):
        quick_submit = True

        def __init__(self) -> None:
            super().__init__()
            self.threads: list[str] = []

        def submit(self, task: Task, report: ReportFn) -> None:
            self.threads.append(threading.current_thread().name)
            super().submit(task, report)

    b = Quick()
    eng = make(4, b, per_item=5e-3, concurrency=2)  # two tasks of two
    assert b.threads == [threading.current_thread().name] * 2  # before start() returned
    succeed_the_rest(eng, b)
    assert eng.view.lifecycle == "succeeded" and eng.view.outputs == [0, 1, 2, 3]


def test_a_quick_submit_backend_that_fails_to_open_fails_the_run_not_the_caller():
    class Broken(Scripted):
        quick_submit = True

        def open(self) -> None:
            raise OSError("no pool")

    eng = make(2, Broken(), per_item=1e-6)
    assert eng.done.wait(10) and eng.view.lifecycle == "failed"
    assert eng.view.errors[0].kind == "internal"


def test_a_large_runs_status_column_is_the_statuses_with_the_small_runs_dtype():
    # frame._status_column takes a large finished run's words from its status bytes.
    from mapnb import map_task

    run = map_task(tasks.fail_on, min_success_ratio=0, backend="threads").submit(x=list(range(1500)))
    run.wait()
    df, small = run.df, map_task(tasks.fail_on, min_success_ratio=0, backend="threads")(x=[1, 2])
    assert df["status"].tolist() == [s.value for s in run.statuses]
    assert df["status"].tolist().count("failed") == 1 and df["status"].dtype == small["status"].dtype
    assert (df["status"] == "succeeded").sum() == 1499


@pytest.mark.parametrize(
    "idx, expected",
    [
        ([3, 4, 5], slice(3, 6)),
        ([], None),
        ([3, 5, 4], None),  # same ends and length, not a run
        ([3, 3, 5], None),
        (array.array("q", [7, 8]), slice(7, 9)),
        (array.array("q", [7, 9]), None),
    ],
)
def test_consecutive_tells_a_run_of_indices_from_a_list_or_an_array(idx, expected):
    assert consecutive(idx) == expected


def test_columns_read_as_the_list_of_tuples_they_hold():
    from mapnb.state import Columns

    rows = [(i, str(i)) for i in range(5)]
    c = Columns([[i for i, _ in rows], [s for _, s in rows]])
    assert c == rows and list(c) == rows and len(c) == 5 and c[-1] == (4, "4") and c[1:3] == rows[1:3]
    assert c.head(2) == rows[:2] and c != rows[:4] and repr(c) == repr(rows)
    c.extend([(5, "5")])
    assert c == [*rows, (5, "5")] and Columns.from_rows(rows, 2) == rows
    with pytest.raises(IndexError):
        c[6]


def test_an_item_run_reads_as_its_items_and_pickles_as_its_columns():
    import pickle

    from mapnb.protocol import ItemRun

    run = ItemRun(10, 14, 2, [[1, 2, 3, 4], ["a", "b", "c", "d"]])
    items = [(10, 2, (1, "a")), (11, 2, (2, "b")), (12, 2, (3, "c")), (13, 2, (4, "d"))]
    assert run == items and len(run) == 4 and run[0] == items[0] and run[-1] == items[-1]
    assert run[1:3] == items[1:3] and type(run[1:3]) is ItemRun and run[::2] == items[::2] and run[3:1] == []
    back = pickle.loads(pickle.dumps(run, protocol=5))
    assert back == items and back.columns == run.columns
    with pytest.raises(IndexError):
        run[4]


def test_fresh_consecutive_items_go_out_as_an_item_run_and_the_others_as_tuples():
    # engine._take: a run's inputs held as columns (what build_inputs gives) reach a task
    # as an ItemRun; a second attempt (here: a requeued item and its neighbours at
    # different attempts) goes out item by item.
    from mapnb.protocol import ItemRun
    from mapnb.state import Columns

    b = Scripted()
    opts = Options(concurrency=1, min_success_ratio=1.0, retries=1, timeout=None)
    inputs = Columns([list(range(6))])
    eng = Engine(run_id="t", job=Job("t", abs, ("x",)), inputs=inputs, backend=b, options=opts)
    eng._batcher.per_item = 1e-6
    eng.start()
    task, report = b.next()
    assert type(task.items) is ItemRun and task.items == [(i, 1, (i,)) for i in range(6)]
    # Item 0 fails (it will be retried); the task ends with items 3..5 unfinished.
    err = ItemError("exception", "ValueError", "no")
    report([Outcomes(task.id, [(0, 1, FAILED, err, 0.0, 0.0), (1, 1, OK, 1, 0.0, 0.0), (2, 1, OK, 2, 0.0, 0.0)]),
            (ENDED, task.id, None, False)])  # fmt: skip
    task2, report2 = b.next()
    assert type(task2.items) is not ItemRun
    assert sorted(task2.items) == [(0, 2, (0,)), (3, 1, (3,)), (4, 1, (4,)), (5, 1, (5,))]
    report2([Outcomes(task2.id, [(i, a, OK, i, 0.0, 0.0) for i, a, _ in task2.items]), (ENDED, task2.id, None, False)])
    assert eng.done.wait(10) and eng.view.outputs == [0, 1, 2, 3, 4, 5] and eng.view.attempts == [2, 1, 1, 1, 1, 1]


def test_the_journal_fingerprint_of_columns_is_that_of_the_same_tuples():
    # mapnb.recover compares a journaled fingerprint (written from a list of tuples by
    # earlier versions) with the new run's inputs, now held as columns.
    from mapnb.journal import fingerprint, same_items
    from mapnb.state import Columns

    rows = [(i, f"s{i}", None) for i in range(50)]
    names = ("a", "b", "c")
    assert fingerprint(names, Columns.from_rows(rows, 3)) == fingerprint(names, rows)
    import hashlib

    import cloudpickle

    legacy = hashlib.sha256(cloudpickle.dumps((names, rows), protocol=5)).hexdigest()
    assert same_items(legacy, names, Columns.from_rows(rows, 3))


@pytest.mark.parametrize(
    "values",
    [list(range(1500)), [i / 3 for i in range(1500)], [i % 2 == 0 for i in range(1500)],
     [2**70 + i for i in range(1500)], [*range(1499), True], [*range(1499), 1.5], [str(i) for i in range(1500)]],
    ids=["ints", "floats", "bools", "big ints", "ints and a bool", "ints and a float", "strings"],
)  # fmt: skip
def test_a_large_runs_columns_have_the_dtypes_pandas_would_infer(values):
    import pandas as pd

    from mapnb import map_task

    df = map_task(tasks.identity, backend="threads")(x=values)
    want = pd.Series(values)
    for col in ("x", "output"):
        assert df[col].dtype == want.dtype, (col, df[col].dtype, want.dtype)
        assert df[col].tolist() == want.tolist()


def test_a_subscription_made_while_the_run_winds_down_sees_its_end_before_it_is_done():
    # MapRun's handed-out DataFrames catch up on RunFinished; a waiter must not wake first.
    import threading

    from mapnb.events import RunFinished

    closing, release = threading.Event(), threading.Event()

    class SlowToClose(Scripted):
        def close(self) -> None:
            closing.set()
            release.wait(10)

    b = SlowToClose()
    eng = make(1, b, per_item=1e-6)
    task, report = b.next()
    report([ok(task, 0), (ENDED, task.id, None, False)])
    assert closing.wait(10)  # the engine winds down: the subscription waits in its inbox
    ends: list[bool] = []  # for each RunFinished seen: was the run already done?
    eng.bus.subscribe(lambda evs: ends.extend(eng.done.is_set() for e in evs if isinstance(e, RunFinished)), False)
    release.set()
    assert eng.done.wait(10)
    assert ends == [False]
