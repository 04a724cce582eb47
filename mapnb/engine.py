"""The scheduler: one thread per run owns all of the run's state.

::

    MapTask(**lists) -> spec (validated) -> Engine thread
        keeps <= concurrency tasks in flight, each a batch of items run one after another
        (batches grow while items are tiny, so per-item overhead vanishes);
        retries, per-attempt timeouts, min_success_ratio with abort, cancel
            |  Backend.submit(task, report)        ^  report([...]) from any thread
            v                                      |
        sequential | threads | local processes (| dask ...) -> worker.run_items
            |
        RunState (status, outputs, errors, logs, counts) -> RunView -> MapRun, grid, DataFrame
        EventBus (ItemStarted, ItemLog, ItemFinished, ...) -> subscribers (grid, progress)
        CacheCoordinator (lookups, cache_serialize claims), observers (the journal)

Backends only report (typed records, :mod:`mapnb.protocol`); every decision (retry, give
up, abort, kill) is taken here, from reports queued to this thread, so no state has two
writers.
"""

from __future__ import annotations

import array
import bisect
import collections
import itertools
import logging
import math
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .backends.base import Backend, Job, Task
from .cache import CacheCoordinator, ItemCache
from .errors import BackendError, ErrorKind, ItemError
from .events import (
    Event,
    EventBus,
    ItemFinished,
    ItemLog,
    ItemMetrics,
    ItemRetrying,
    ItemsAdded,
    ItemStarted,
    RunFinished,
    RunStarted,
    RunStatus,
    Status,
)
from .protocol import (
    ENDED,
    FINISHED,
    LOG,
    METRICS,
    OK,
    OUTCOMES,
    STARTED,
    Cancel,
    Ended,
    Finished,
    ItemRun,
    Log,
    Metrics,
    Outcomes,
    Started,
    Subscribe,
    Unsubscribe,
    typed,
)
from .spec import Options, needed
from .state import STATUS_CODE, Columns, Inputs, Ints, Observer, RunState, RunView, consecutive

log = logging.getLogger(__name__)

Q, R, RT = Status.QUEUED, Status.RUNNING, Status.RETRYING
_TARGET_TASK_SECONDS = 0.02  # grow batches of tiny items until a task takes about this long
_OVERHEAD_RATIO = 9.0  # ... and at least this many times the per-task overhead (<= 10%)
_MAX_BATCH = 4096
_MIN_TASK_SECONDS = 0.002  # the tail's tasks are split for balance, but not below this (or 3x overhead)
# What the event of a succeeded item that is re-run on request carries as its "error".
_RERUN = ItemError(ErrorKind.CANCELLED, "Rerun", "re-run on request")
_task_ids = itertools.count(1)  # process-wide: a shared backend never sees one task id twice


class _Control:
    """A change to a run's state asked for from another thread (see ``Engine.control``)."""

    __slots__ = ("change", "result", "handled", "error", "reply")

    def __init__(self, change: Callable[[bool], tuple[Any, bool]]) -> None:
        self.change = change
        self.result: Any = None
        self.handled = False  # made by the engine thread (else: the run was ending)
        self.error: Exception | None = None
        self.reply = threading.Event()


_INDEX, _ATTEMPT, _OK, _VALUE, _T0, _T1 = (operator.itemgetter(k) for k in range(6))  # an outcome row's fields
_PLUS_ONE = (1).__add__
_NOT_FINAL_CODES = bytes(STATUS_CODE[s] for s in Status if not s.final)
"""Deleted from a run's status bytes (``bytes.translate``), these leave its final ones."""


class _TaskState:
    __slots__ = ("items", "pos", "since", "dispatched", "work")

    def __init__(self, items: Sequence[tuple[int, int, tuple[Any, ...]]], now: float) -> None:
        self.items = items  # the task's (index, attempt, args), in the order the backend runs them
        self.pos = 0  # items before pos are known to be done
        # When the item at pos started, as far as we know; None until the backend says the
        # task began (starting a worker or loading the function is not the item's time).
        self.since: float | None = None
        self.dispatched = now
        self.work = 0.0  # the finished items' own durations, as measured where they ran

    def passed_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Outcomes ``rows`` ``(index, attempt, ok, value, t0, t1)`` of this task arrived."""
        items, pos, n = self.items, self.pos, len(rows)
        end = pos + n
        if end <= len(items) and items[pos][0] == rows[0][0] and items[end - 1][0] == rows[-1][0]:
            self.pos = end  # the usual case: consecutive, in the order sent
        else:
            for row in rows:
                self.passed(row[0])
        self.work += math.fsum(map(operator.sub, map(_T1, rows), map(_T0, rows)))

    def passed(self, i: int) -> None:
        """Item ``i`` of this task finished: the items up to it are done."""
        items, pos = self.items, self.pos
        if pos < len(items) and items[pos][0] == i:  # the usual case: in the order sent
            self.pos = pos + 1
        else:
            self.pos = next((k + 1 for k in range(pos, len(items)) if items[k][0] == i), pos)


class Batcher:
    """Chooses batch sizes from two measurements kept apart: what an item costs where it
    runs, and what a task costs on top of its items (dispatch, transport, scheduling).

    A task aims at ``_TARGET_TASK_SECONDS`` of work, and at least ``_OVERHEAD_RATIO``
    times the per-task overhead, so the overhead stays a small share however large it is
    (a loaded machine, Dask's milliseconds per task, a remote cluster): batches *grow*
    when overhead is high. Charging the overhead to the items instead made batches shrink
    to one item exactly then, which made the overhead larger still.
    """

    def __init__(self) -> None:
        self.per_item: float | None = None  # seconds of work per item (running average)
        self.overhead = 0.0  # seconds per task beyond its items' work (running average)

    def record(self, n_items: int, work: float, wall: float) -> None:
        """A task ended: ``n_items`` items took ``work`` seconds where they ran, and the
        task ``wall`` seconds from dispatch to its end as the engine saw it."""
        if n_items:
            per = max(work, 1e-6) / n_items
            self.per_item = per if self.per_item is None else 0.5 * (self.per_item + per)
            self.overhead = 0.5 * (self.overhead + max(0.0, wall - work))

    def size(self, pending: int, slots: int, sharing: int | None = None) -> int:
        """Items for the next task, with ``pending`` items queued for ``slots`` slots;
        ``sharing``: that many slots are free together, none running (a start), so the
        queue is shared among them."""
        if self.per_item is None:
            return 1
        target = max(_TARGET_TASK_SECONDS, _OVERHEAD_RATIO * self.overhead)
        want = round(target / self.per_item)
        if pending * self.per_item <= target * slots:
            # What is left fits in one task per slot: split it evenly (the slots pay their
            # overheads side by side). Halving it task after task (below) cost 2,000 tiny
            # items ~9 round trips instead of ~4.
            fair = math.ceil(pending / (sharing or slots))
            floor = math.ceil(_MIN_TASK_SECONDS / self.per_item)
        else:
            fair = math.ceil(pending / (2 * slots))  # every slot still gets work at the end ...
            # ... but a task so short that dispatching it costs more than it does is not
            # worth splitting off: 2,000 tiny items ended in ~20 ever smaller tasks.
            floor = math.ceil(max(_MIN_TASK_SECONDS, 3 * self.overhead) / self.per_item)
        return max(1, min(want, max(fair, floor), _MAX_BATCH))


# What the batcher measured in the latest run of each function (per backend): a map of the
# same function starts from it instead of probing with tasks of one item, which cost a
# round trip per slot (~0.7 ms of a 2,000-item map of tiny items). The first tasks of such
# a run are still split fairly, and the estimate is updated from the first task on.
_HISTORY: dict[tuple[str, Any], tuple[float | None, float]] = {}
_HISTORY_SIZE = 64
_history_lock = threading.Lock()  # engines of several runs end tasks at once


def _history_key(backend: str, fn: Any) -> tuple[str, Any] | None:
    """The function's code (the same code in a cell run again), or None: no history."""
    code = getattr(fn, "__code__", None)
    return (backend, code) if code is not None else None


def _remember(key: tuple[str, Any] | None, batcher: Batcher) -> None:
    if key is None or batcher.per_item is None:
        return
    with _history_lock:
        _HISTORY.pop(key, None)  # the newest last: the oldest goes first
        _HISTORY[key] = (batcher.per_item, batcher.overhead)
        while len(_HISTORY) > _HISTORY_SIZE:
            del _HISTORY[next(iter(_HISTORY))]


class Engine:
    """Runs one map: all items of ``job`` over ``inputs`` on ``backend``, as ``options``
    say (their concurrency resolved to a number: see ``MapTask._start``).

    Its thread is the only writer of the run's :class:`~mapnb.state.RunState`; everyone
    else reads :attr:`view` and talks to the thread through :meth:`report`,
    :meth:`cancel`, :meth:`rerun` and :attr:`bus`.
    """

    def __init__(
        self,
        *,
        run_id: str,
        job: Job,
        inputs: Inputs,
        backend: Backend,
        options: Options,
        cache: ItemCache | None = None,
        journal: Observer | None = None,
        recovered: dict[int, tuple[Any, int, float | None]] | None = None,
        axes: list[list[Any]] | None = None,
        shapes: list[tuple[int, ...]] | None = None,
    ) -> None:
        n = len(inputs)
        if options.concurrency is None:
            raise ValueError("the engine needs options.concurrency resolved to a number")
        concurrency = options.concurrency
        self.job, self.backend, self.inputs = job, backend, inputs
        self.concurrency, self.retries, self.timeout = concurrency, options.retries, options.timeout
        st = self._s = RunState(
            run_id=run_id, names=job.names, inputs=inputs, backend=backend.name, concurrency=concurrency,
            need=needed(n, options), cached=cache is not None, axes=axes, shapes=shapes,
        )  # fmt: skip
        self._options = options  # what decides how many items must succeed, as the run grows
        if options.min_successes is not None:
            st.need_rule = "min_successes"
        self.view = RunView(st)
        self.done = st.done
        self._shares_clock = backend.shares_clock

        self._pending: collections.deque[int] = collections.deque(range(n))
        self._tasks: dict[int, _TaskState] = {}
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batcher = Batcher()
        self._history_key = _history_key(backend.name, job.fn) if backend.remembers else None
        if self._history_key is not None:
            self._batcher.per_item, self._batcher.overhead = _HISTORY.get(self._history_key, (None, 0.0))
        self._failed = 0  # final failures and aborts: items that can no longer succeed
        self._killed: list[int] = []
        self._spent = Ints(n)  # attempts charged before the latest rerun: retries count anew
        self._rerunning: list[Event] = []
        self._forced: set[int] = set()  # re-run on request: the cache must not answer them
        self._looping = False  # the engine thread is in its loop (it takes commands)
        self._control_lock = threading.Lock()  # one change of a done run at a time
        self.bus = EventBus(run_id, self._replay, self._inbox.put, st.done)
        self._cache = (
            CacheCoordinator(cache, inputs, self._take_cached, self._run_next) if cache is not None else None
        )
        self._observers: list[Observer] = [journal] if journal is not None else []
        self._on_record: dict[str, Callable[[Any], None]] = {
            FINISHED: self._on_finished, LOG: self._on_log, STARTED: self._on_started, ENDED: self._on_ended,
            METRICS: self._on_metrics, OUTCOMES: self._on_outcomes,
        }  # fmt: skip
        self._prune = options.prune
        self._run_all = options.run_all_sub_nodes  # no abort: every item runs, the run fails at the end
        st.prune_metric = options.prune.metric if options.prune is not None else ""
        # step -> ({item: its pruning metric}, the same values sorted, NaN left out)
        self._at_step: dict[int, tuple[dict[int, float], list[float]]] = {}
        for i, (output, attempts, duration) in (recovered or {}).items():  # from an earlier life
            st.outputs[i], st.attempts[i], st.durations[i] = output, attempts, duration
            st.set(i, Status.SUCCEEDED)
        if recovered:
            self._pending = collections.deque(i for i in range(n) if i not in recovered)
        self._thread = threading.Thread(target=self._main, name=f"mapnb-run-{run_id}", daemon=True)
        self._started = False  # opened and announced from the caller's thread (see start)
        self._head_error: Exception | None = None

    @property
    def run_id(self) -> str:
        return self._s.run_id

    # -- called from other threads ------------------------------------------------------

    def start(self) -> None:
        # A backend that only hands tasks on gets the first ones from this thread: the
        # engine's thread takes ~0.4 ms to be scheduled, a tenth of a 2,000-item map.
        if self.backend.quick_submit and self._cache is None and not self._rerunning:
            self._head_start()
        self._thread.start()

    def _head_start(self) -> None:
        """What :meth:`_main` does first, done here before the engine's thread exists (so
        this thread is the run's only writer); a failure is left for that thread to meet."""
        try:
            self.backend.open()
            self._started = True
            self.bus.emit(self._run_started())
            self._dispatch()
        except Exception as e:  # (the engine's thread fails the run with it, as always)
            self._head_error = e

    def report(self, records: list[Any]) -> None:
        """The backends' way in (any thread): a list of :mod:`mapnb.protocol` records."""
        self._inbox.put(records)

    def cancel(self) -> None:
        self._inbox.put(Cancel())

    def rerun(self, indices: list[int]) -> int:
        """Run the given finished items again, in this same run; return how many.

        Works while the run goes on (the engine thread takes them) and once it is done
        (then a new engine thread runs them). Items still queued, running or retrying are
        left as they are and not counted. Each re-run item gets the run's retries afresh
        and its log continues. The cache does not answer a succeeded or cached one (it
        runs, and its new output replaces the cached one); a failed one may be found
        there, as a retry always could.
        """
        if not self.done.is_set():  # (once done, such a backend reports each item's error itself)
            self._check_changeable()
        return self.control(lambda live: self._reopen(indices, live))

    def cancel_items(self, indices: list[int]) -> int:
        """Cancel only these items (the others go on); return how many were still open.

        Queued ones never start; a running one is killed as a timeout kills it, and the
        other unstarted items of its task are queued again, uncharged. The run then ends
        by the usual rules (a cancelled item has not succeeded).
        """
        self._check_changeable()
        return self.control(lambda live: self._cancel_items(indices) if live else (0, False))

    def add_items(self, inputs: list[tuple[Any, ...]], axes: list[list[Any]] | None = None) -> int:
        """Append items to the run (queued; for a product, with its new ``axes``), while it
        runs or once it is done (it then runs again); return the first new index.

        Subscribers get :class:`~mapnb.events.ItemsAdded`; the new items use the cache
        like any item; the journal records them, so that a recovered run has them all.
        """
        self._check_changeable()
        return self.control(lambda live: self._grow(list(inputs), axes, live))

    def _grow(self, inputs: list[tuple[Any, ...]], axes: list[list[Any]] | None, live: bool) -> tuple[int, bool]:
        st = self._s
        start, k = st.n, len(inputs)
        if not k:
            return start, False
        self._spent.extend([0] * k)
        if self._cache is not None:
            self._cache.grow(k)
        st.grow(inputs, axes)
        st.need = needed(st.n, self._options)
        for observer in self._observers:
            observer.items_added(start, k, st)
        new = range(start, start + k)
        event = ItemsAdded(start, k)
        if not live:  # the run is done: a new engine thread looks them up in the cache
            self._pending.extend(new)
            self._rerunning.append(event)
            return start, True
        self.bus.emit(event)  # before the cache answers any of them
        held = self._cache.before_run(new) if self._cache is not None else set()
        self._pending.extend(i for i in new if i not in held and not st.status[i].final)
        return start, True

    def control(self, change: Callable[[bool], tuple[Any, bool]]) -> Any:
        """Apply ``change`` to the run's state on the thread that owns it; return its result.

        While the engine thread loops, it runs ``change(True)`` itself. Once the run is
        done (or ending), this thread waits for it to be done and runs ``change(False)``;
        ``change`` says (second value) whether the run must then go on, and a new engine
        thread takes over.
        """
        if threading.current_thread() is self._thread:  # an event callback of this run
            if not (self._looping and self._running()):
                raise RuntimeError(
                    f"run {self.run_id} is ending: change it once it is done, not from its events"
                )
            return change(True)[0]
        while True:
            cmd = _Control(change)
            if self.bus.post_unless_done(cmd):
                # Always answered: by the loop, or by the engine thread's last drain.
                if not cmd.reply.wait(120):
                    raise RuntimeError(f"run {self.run_id}: the engine thread did not answer")
                if cmd.error is not None:
                    raise cmd.error
                if cmd.handled:
                    return cmd.result
            self.done.wait()
            with self._control_lock:
                if not self.done.is_set():  # another thread restarted the run meanwhile
                    continue
                self._thread.join()
                result, go_on = change(False)
                if go_on:
                    self._restart()
                return result

    def _check_changeable(self) -> None:
        """Refuse changes a backend that runs the whole map as one unit (``"flyte"``)
        cannot follow."""
        if getattr(self.backend, "take_map", None) is not None:
            raise BackendError(
                f"backend {self.backend.name!r} runs the whole map as one unit: re-running, cancelling "
                "or adding items in a run is not supported there; run the map again (with cache=True, "
                "what succeeded is not computed again)"
            )

    def _restart(self) -> None:
        """A done run goes on (items re-run or added): a new engine thread takes over."""
        st = self._s
        st.lifecycle = RunStatus.RUNNING
        if st.first_failure is not None and st.status[st.first_failure] is not Status.FAILED:
            st.first_failure = None
        st.resume_clock()
        self._killed = []
        st.done.clear()
        self._thread = threading.Thread(target=self._main, name=f"mapnb-run-{self.run_id}", daemon=True)
        self._thread.start()

    def _reopen(self, indices: list[int], live: bool) -> tuple[int, bool]:
        """Queue the given final items again (see :meth:`rerun`): on the engine thread
        (``live``) or, the run being done, on the caller's."""
        st = self._s
        events: list[Event] = []
        for i in indices:
            status = st.status[i]
            if not status.final:
                continue
            if status not in (Status.SUCCEEDED, Status.CACHED, Status.PRUNED):  # counted as failed
                self._failed -= 1
            if st.first_failure == i:
                st.first_failure = None
            st.pruned_why[i] = None
            # Shown as retrying: the item waits for its next attempt.
            st.set(i, RT)
            self._spent[i] = st.attempts[i]
            if status is Status.SUCCEEDED or status is Status.CACHED:  # the cache holds its output:
                self._forced.add(i)  # it must not answer (a failed one may be found there, as before)
            self._pending.append(i)
            events.append(ItemRetrying(i, st.attempts[i], st.errors[i] or _RERUN))
        if live:
            self.bus.extend(events)
        else:
            self._rerunning += events
        return len(events), bool(events)

    def _cancel_items(self, indices: list[int]) -> tuple[int, bool]:
        """Cancel the open items among ``indices`` (the engine thread; see :meth:`cancel_items`)."""
        st = self._s
        want = {i for i in indices if not st.status[i].final}
        if not want:
            return 0, False
        err = ItemError(ErrorKind.CANCELLED, "Cancelled", "the item was cancelled")
        for tid, ts in list(self._tasks.items()):
            open_items = [i for i, _ in self._open_items(ts)]
            if want.isdisjoint(open_items):
                continue
            del self._tasks[tid]
            self._kill(tid)  # its other items start again later, uncharged
            for i in reversed(open_items):  # (queued again at the front, in their order)
                if i in want:
                    self._final(i, Status.CANCELLED, err)
                else:
                    self._requeue(i)
        self._pending = collections.deque(i for i in self._pending if i not in want)
        for i in sorted(want):
            if not st.status[i].final:  # queued, retrying or waiting for the cache
                self._final(i, Status.CANCELLED, err if st.status[i] is not RT else st.errors[i])
        return len(want), False

    # -- the engine thread --------------------------------------------------------------

    def _main(self) -> None:
        st = self._s
        try:
            if self._head_error is not None:
                raise self._head_error
            if not self._started:
                self.backend.open()
                self.bus.emit(self._run_started())
            self._started = False  # a rerun starts here again
            self.bus.extend(self._rerunning)
            self._rerunning = []
            if self._cache is not None:
                forced = self._forced  # re-run on request: not answered by the cache
                held = self._cache.before_run(
                    i for i in range(st.n) if not st.status[i].final and i not in forced
                )
                if held:
                    self._pending = collections.deque(i for i in self._pending if i not in held)
            self._looping = True
            self._loop()
        except BaseException:  # a bug must never leave the caller waiting forever
            log.exception("mapnb engine failed; failing the items still open")
            err = ItemError(ErrorKind.INTERNAL, "InternalError", "mapnb failed internally; see the log")
            for i in range(st.n):
                if not st.status[i].final:
                    self._final(i, Status.FAILED, err)
            st.lifecycle = RunStatus.FAILED
        finally:
            self._looping = False  # commands from now on are answered "the run is ending"
            self._wind_down()

    def _wind_down(self) -> None:
        """Whatever happened: kill what runs, let the stores finish, say the run is done."""
        st = self._s
        for tid in list(self._tasks):
            self._kill(tid)
        self._tasks.clear()
        try:  # a finished run has no subtask left running
            self.backend.join(self._killed, timeout=10.0)
            self.backend.close()
        except Exception:
            log.exception("backend %s failed to close the run", self.backend.name)
        if self._cache is not None:
            self._cache.close()  # outputs are on disk before the run says it is done
        for observer in self._observers:
            try:
                observer.close()
            except Exception:
                log.exception("an observer of run %s failed to close", self.run_id)
        st.finished_at = time.monotonic()  # (from here on, a replay ends with RunFinished)
        self.bus.emit(RunFinished(st.lifecycle, {s.value: k for s, k in st.counts.items()}, time.time()))
        self.bus.flush()
        # Subscriptions that waited in the inbox while the run wound down are answered
        # before the run says it is done: a subscriber that acts on the end (MapRun's
        # handed-out DataFrames after a rerun) has then done so when a waiter wakes.
        self._drain()
        self.bus.mark_done()
        self._drain()  # answer subscriptions made since

    def _loop(self) -> None:
        st = self._s
        while True:
            self._dispatch()
            if self._complete():
                break
            try:
                self._handle(self._inbox.get(timeout=self._wait_time()))
            except queue.Empty:
                pass
            self._drain()
            self._check_timeouts()
            if self._cache is not None:
                self._cache.poll()
            for observer in self._observers:
                observer.flush()
            self.bus.flush()
        if st.lifecycle is RunStatus.RUNNING:  # pruned items count like successes here
            done = st.succeeded() + st.counts[Status.PRUNED]
            st.lifecycle = RunStatus.SUCCEEDED if done >= st.need else RunStatus.FAILED

    def _running(self) -> bool:
        return self._s.lifecycle is RunStatus.RUNNING  # (a str enum: compared by identity)

    def _complete(self) -> bool:
        idle = not self._pending and not (self._cache is not None and self._cache.waiting)
        return not self._tasks and (idle or not self._running())

    def _wait_time(self) -> float:
        if self._cache is not None and self._cache.polling:
            return 0.1  # poll for what other processes are computing
        if self.timeout is None or not self._tasks:
            return 0.5
        started = [t.since for t in self._tasks.values() if t.since is not None]
        if not started:
            return 0.5
        due = min(started) + self.timeout
        return min(0.5, max(0.0, due - time.monotonic()) + 0.001)

    def _dispatch(self) -> None:
        # Slots free together with none running (a start): they share the queue evenly.
        sharing = self.concurrency if not self._tasks else 0
        while self._running() and self._pending and len(self._tasks) < self.concurrency:
            size = self._batcher.size(len(self._pending), self.concurrency, sharing and sharing - len(self._tasks))
            items = self._take(size)
            if not items:
                return
            task = Task(next(_task_ids), self.job, items if type(items) is ItemRun else tuple(items))
            self._tasks[task.id] = _TaskState(task.items, time.monotonic())
            try:
                self.backend.submit(task, self.report)
            except Exception as e:
                log.exception("backend %s could not take a task", self.backend.name)
                err = ItemError(
                    ErrorKind.INTERNAL, type(e).__qualname__, f"the {self.backend.name} backend failed: {e}"
                )
                self.report([Ended(task.id, err, all_items=True)])
            self._drain()  # a backend that ran the task inside submit has reported it all

    def _take(self, size: int) -> Sequence[tuple[int, int, tuple[Any, ...]]]:
        """Up to ``size`` queued items that may run now, as ``(index, attempt, args)``,
        taken off the queue in runs (a list comprehension, not a loop step per item)."""
        st, pending, cache = self._s, self._pending, self._cache
        status, attempts, inputs = st.status, st.attempts, self.inputs
        items: list[tuple[int, int, tuple[Any, ...]]] = []
        while pending and len(items) < size:
            popleft = pending.popleft
            idx = [popleft() for _ in range(min(size - len(items), len(pending)))]
            if cache is None:
                run = consecutive(idx)
                if run is not None and not st.codes[run].translate(None, _NOT_FINAL_CODES):
                    # The usual case, a run of items none of which is final, taken in C;
                    # fresh ones (one attempt) held as columns, with no tuple per item.
                    tried = attempts[run]
                    if not items and type(inputs) is Columns and tried.count(tried[0]) == len(tried):
                        return ItemRun(run.start, run.stop, tried[0] + 1, [c[run] for c in inputs.columns])
                    items += zip(range(run.start, run.stop), map(_PLUS_ONE, tried), inputs[run])
                else:
                    items += [(i, attempts[i] + 1, inputs[i]) for i in idx if not status[i].final]
            else:  # (in order: may_run claims what it lets run)
                forced = self._forced  # re-run on request: not answered by the cache
                items += [
                    (i, attempts[i] + 1, inputs[i])
                    for i in idx
                    if not status[i].final and (i in forced or cache.may_run(i))
                ]
        return items

    def _drain(self) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(msg)

    def _handle(self, msg: Any) -> None:
        """One message from the inbox: a list of records from a backend, or a command."""
        kind = type(msg)
        if kind is Cancel:
            self._stop_all(Status.CANCELLED, RunStatus.CANCELLED)
        elif kind is Subscribe:
            self.bus.add(msg.callback, msg.statuses)
        elif kind is Unsubscribe:
            self.bus.remove(msg.callback)
        elif kind is _Control:
            self._answer(msg)
        else:
            on_record = self._on_record
            if msg and msg[-1][0] == ENDED and self._end_first(msg):
                msg = msg[:-1]
            for r in msg:
                on_record[r[0]](r)

    def _answer(self, cmd: _Control) -> None:
        """A change from another thread (:meth:`control`): made here while the run goes
        on; once it is ending, the caller waits for the end and makes it itself."""
        try:
            if self._looping and self._running():
                cmd.result, _ = cmd.change(True)
                cmd.handled = True
        except Exception as e:  # the caller's mistake or ours: raised in the caller's thread
            cmd.error = e
        finally:
            cmd.reply.set()

    def _end_first(self, msg: list[Any]) -> bool:
        """A batch that ends a task cleanly and holds the successes of all its items left:
        end the task and give its slot new work first, then settle the outcomes (the
        worker waited while its last batch was settled: ~0.3 ms a task for tiny items).
        False (nothing done) for any other batch."""
        end = msg[-1]
        ts = self._tasks.get(end[1])
        if ts is None or (len(end) > 2 and end[2] is not None):
            return False
        mine = [r[2] for r in msg if r[0] == OUTCOMES and r[1] == end[1] and r[2]]
        if ts.pos + sum(map(len, mine)) != len(ts.items) or any(r[0] == FINISHED for r in msg):
            return False
        pos, items = ts.pos, ts.items
        for rows in mine:  # the task's items, in the order sent (else the usual path copes)
            if items[pos][0] != rows[0][0] or items[pos + len(rows) - 1][0] != rows[-1][0]:
                return False
            if not all([row[2] for row in rows]):  # a failure may abort the run, and the items after it
                return False
            pos += len(rows)
        for rows in mine:
            ts.passed_rows(rows)
        self._on_ended(end)
        self._dispatch()
        return True

    # Each record kind is unpacked here, once, in the layout mapnb.protocol declares
    # (plain tuples reach the engine from other processes: see protocol._Record).

    def _on_log(self, r: Log) -> None:
        _, _tid, i, attempt, stream, text = r
        self._s.logs.add(i, attempt, stream, text)
        if self.bus.listening:
            self.bus.emit(ItemLog(i, attempt, stream, text))

    def _on_metrics(self, r: Metrics) -> None:
        _, tid, i, attempt, steps = r
        st = self._s
        if st.status[i].final or attempt != st.attempts[i] + 1:
            return  # a late report from an attempt already settled (or pruned)
        cut = self._judge(i, steps) if self._prune is not None and self._running() else None
        if cut is not None:  # the steps up to the one it was pruned at: what the reason is about
            steps = steps[: cut[0] + 1]
        st.add_metrics(i, attempt, steps)
        if self.bus.listening:
            self.bus.emit(ItemMetrics(i, attempt, steps))
        if cut is not None:
            self._prune_item(tid, i, attempt, cut[1])

    def _judge(self, i: int, steps: list[tuple[int, dict[str, float]]]) -> tuple[int, str] | None:
        """Ask the pruner about each step item ``i`` reported: the first one it is pruned
        at (its position in ``steps``, and why), or None.

        Per step the items' values are kept in a dict and, sorted, in a list: the median
        of the others then costs a bisection, however many items the sweep has."""
        pruner = self._prune
        assert pruner is not None
        name, table = pruner.metric, self._at_step
        for k, (step, values) in enumerate(steps):
            value = values.get(name)
            if value is None:
                continue
            at = table.get(step)
            if at is None:
                at = table[step] = ({}, [])
            by_item, ordered = at
            old = by_item.get(i)
            if old is not None and not math.isnan(old):  # the same step again: its value moves
                del ordered[bisect.bisect_left(ordered, old)]
            why = pruner.judge_sorted(step, value, ordered)
            by_item[i] = value
            if not math.isnan(value):
                bisect.insort(ordered, value)
            if why is not None:
                return k, why
        return None

    def _prune_item(self, tid: int, i: int, attempt: int, why: str) -> None:
        """Stop item ``i`` (pruned, final, not a failure): kill its task and queue the
        task's other open items again, uncharged, as a timeout does. A backend that
        cannot kill lets the item run on; its result is ignored."""
        st = self._s
        st.attempts[i] = attempt
        ts = self._tasks.get(tid)
        if ts is not None and ts.since is not None and next(self._open_items(ts), None) == (i, attempt):
            st.durations[i] = time.monotonic() - ts.since
        st.pruned_why[i] = why
        self._final(i, Status.PRUNED, None)
        if ts is not None:
            del self._tasks[tid]
            self._kill(tid)
            self._settle(ts, None)  # the others go back to the queue

    def _on_started(self, r: Started) -> None:
        _, tid, i, attempt, t0 = r
        st = self._s
        if st.status[i].final or attempt != st.attempts[i] + 1:
            return
        ts = self._tasks.get(tid)
        if ts is None:  # a task we settled already (killed, or its worker lost)
            return
        if self._shares_clock or ts.since is None:
            ts.since = t0 if self._shares_clock else time.monotonic()
        st.set(i, R)
        if self.bus.active:
            self.bus.emit(ItemStarted(i, attempt, time.time()))

    def _on_finished(self, r: Finished) -> None:
        _, tid, i, attempt, ok, value, t0, t1, *remote = r
        if remote and remote[0] is not None:  # a backend that retries and caches itself (flyte)
            self._on_remote_end(typed(r))
            return
        ts = self._tasks.get(tid)
        if ts is not None:
            ts.passed(i)
            ts.since = t1 if self._shares_clock else time.monotonic()
            ts.work += max(0.0, t1 - t0)
        self._outcome(i, attempt, ok, value, t0, t1)

    def _on_outcomes(self, r: Outcomes) -> None:
        """Several outcomes of one task (rows as Finished has them, ``ok`` OK or FAILED):
        the task's bookkeeping once, then each item."""
        _, tid, rows = r
        if not rows:
            return
        ts = self._tasks.get(tid)
        rest = rows
        if self._cache is None and self.timeout is None and not self.bus.active:
            rest = self._succeed_plainly(rows)
            if ts is not None and len(rest) < len(rows):
                ts.passed_rows(rows[: len(rows) - len(rest)] if rest else rows)
                ts.since = rows[len(rows) - len(rest) - 1][5] if self._shares_clock else time.monotonic()
        for i, attempt, ok, value, t0, t1 in rest:  # one by one, as Finished records go
            if ts is not None:
                ts.passed(i)
                ts.since = t1 if self._shares_clock else time.monotonic()
                ts.work += max(0.0, t1 - t0)
            self._outcome(i, attempt, ok, value, t0, t1)

    def _succeed_plainly(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Settle the leading rows that succeeded at the attempt expected, in one pass,
        when nothing else watches a success (no cache, timeout or subscriber): the same
        fields as :meth:`_outcome` and :meth:`_final` write, the journal told once.
        Returns the rows from the first other one on, for the item-by-item path (in
        order: a failure may abort the run, and the items after it with it)."""
        st = self._s
        if self._succeed_run(rows):
            return []
        status, attempts, durations, outputs, errors = st.status, st.attempts, st.durations, st.outputs, st.errors
        counts, ok_status = st.counts, Status.SUCCEEDED
        codes, ok_code = st.codes, STATUS_CODE[Status.SUCCEEDED]
        set_float = array.array.__setitem__  # a float into OptionalFloats, past its None check
        done: list[int] = []
        rest: list[tuple[Any, ...]] = []
        for k, row in enumerate(rows):
            i, attempt, ok, value, t0, t1 = row
            was = status[i]
            if not ok or was.final or attempt != attempts[i] + 1:
                rest = rows[k:]
                break
            attempts[i] = attempt
            set_float(durations, i, t1 - t0)
            outputs[i] = value
            if errors[i] is not None:  # an earlier attempt's
                errors[i] = None
            counts[was] -= 1
            counts[ok_status] += 1
            status[i] = ok_status  # (its fields first: readers trust a final status)
            codes[i] = ok_code
            done.append(i)
        self._tell_succeeded(done)
        return rest

    def _succeed_run(self, rows: list[tuple[Any, ...]]) -> bool:
        """:meth:`_succeed_plainly` for the usual batch, written with slices (a run of
        consecutive items, all succeeded at the attempt expected, none final yet): each
        check and write is one C call over the run, not a loop step per item. False
        (nothing written) for any other batch."""
        st = self._s
        run = consecutive(list(map(_INDEX, rows)))
        if run is None or set(map(_OK, rows)) != {OK} or st.codes[run].translate(None, _NOT_FINAL_CODES):
            return False
        tried = array.array("i", map(_ATTEMPT, rows))
        if array.array("i", map(_PLUS_ONE, st.attempts[run])) != tried:
            return False
        n, ok_status = len(rows), Status.SUCCEEDED
        was = collections.Counter(st.status[run])
        # Its fields first, then its status: readers trust a final status.
        array.array.__setitem__(st.attempts, run, tried)
        array.array.__setitem__(st.durations, run, array.array("d", map(operator.sub, map(_T1, rows), map(_T0, rows))))
        st.outputs[run] = list(map(_VALUE, rows))
        st.errors[run] = [None] * n  # an earlier attempt's
        st.status[run] = [ok_status] * n
        st.codes[run] = bytes((STATUS_CODE[ok_status],)) * n
        for status, k in was.items():
            st.counts[status] -= k
        st.counts[ok_status] += n
        done = range(run.start, run.stop)
        self._tell_succeeded(done)
        return True

    def _tell_succeeded(self, done: Sequence[int]) -> None:
        """Tell the observers (the journal) that items ``done`` succeeded: in one call
        where an observer takes a batch."""
        st = self._s
        for observer in self._observers:
            many = getattr(observer, "items_succeeded", None)
            if many is not None:
                many(done, st)
            else:
                for i in done:
                    observer.item_final(i, Status.SUCCEEDED, st)

    def _outcome(self, i: int, attempt: int, ok: bool, value: Any, t0: float, t1: float) -> None:
        """Attempt ``attempt`` of item ``i`` ended: ``value`` is its output if ``ok``, else
        its ItemError."""
        st = self._s
        if st.status[i].final or attempt != st.attempts[i] + 1:
            return  # a late report from an attempt already settled
        st.attempts[i] = attempt
        st.durations[i] = t1 - t0
        if ok and self.timeout is not None and t1 - t0 > self.timeout:
            ok, value = False, self._timeout_error(attempt)
        if ok:
            st.outputs[i] = value
            st.errors[i] = None
            self._final(i, Status.SUCCEEDED, None)
        else:
            self._attempt_failed(i, value)

    def _on_remote_end(self, r: Finished) -> None:
        """A Finished record with ``remote=(attempts, status)``: the item's end as a backend
        that applies retries and caching itself saw it (``attempts`` it made; ``status``
        succeeded, cached, failed, aborted or cancelled). It is final."""
        st, i = self._s, r.index
        attempts, status = r.remote
        ts = self._tasks.get(r.task_id)
        if ts is not None:
            ts.passed(i)
        if st.status[i].final or r.attempt != st.attempts[i] + 1:
            return
        st.attempts[i] = attempts
        st.durations[i] = r.t1 - r.t0
        if status is Status.SUCCEEDED or status is Status.CACHED:
            st.outputs[i] = r.value
            st.errors[i] = None
            self._final(i, status, None)
        else:
            self._final(i, status, r.value)

    def _on_ended(self, r: Ended) -> None:
        _, tid, error, all_items, *culprit = r
        ts = self._tasks.pop(tid, None)
        if ts is None:
            return  # we killed it and settled its items already
        self._batcher.record(ts.pos, ts.work, time.monotonic() - ts.dispatched)
        _remember(self._history_key, self._batcher)
        # A backend that knows which item was running when its worker died says so
        # (culprit); outcomes of items before it may have been lost with the worker.
        who = culprit[0] if culprit else None
        self._settle(ts, None if error is None else lambda attempt: error, all_items, who)

    def _open_items(self, ts: _TaskState) -> Iterator[tuple[int, int]]:
        """The task's items that are still its to settle, checked as the caller goes."""
        st = self._s
        for i, attempt, _ in ts.items[ts.pos :]:
            if not st.status[i].final and attempt == st.attempts[i] + 1:
                yield i, attempt

    def _settle(
        self,
        ts: _TaskState,
        error_for: Callable[[int], ItemError] | None,
        all_items: bool = False,
        culprit: int | None = None,
    ) -> None:
        """A task ended early: its running item (or, with ``all_items``, every open item)
        fails with ``error_for(attempt)``; the others go back to the queue uncharged.

        The running item is ``culprit`` when the backend knows it (it may be settled
        already: then no item is charged), else the first open item."""
        st = self._s
        first = True
        for k, (i, attempt) in enumerate(self._open_items(ts)):
            if culprit is not None and not all_items:
                first = i == culprit
            if error_for is not None and (first or all_items):
                st.attempts[i] = attempt
                if first and k == 0 and ts.since is not None:  # since: when the first open one began
                    st.durations[i] = time.monotonic() - ts.since
                self._attempt_failed(i, error_for(attempt))
            else:
                self._requeue(i)
            first = False

    def _attempt_failed(self, i: int, error: ItemError) -> None:
        st = self._s
        st.errors[i] = error
        if error.retryable and st.attempts[i] - self._spent[i] <= self.retries and self._running():
            st.set(i, RT)
            self._pending.append(i)
            if self.bus.active:
                self.bus.emit(ItemRetrying(i, st.attempts[i], error))
        else:
            self._final(i, Status.FAILED, error)

    def _requeue(self, i: int) -> None:
        st = self._s
        if not self._running():
            self._final(i, Status.ABORTED if st.lifecycle is RunStatus.FAILED else Status.CANCELLED, None)
            return
        if st.status[i] is R:
            st.set(i, Q)
        self._pending.appendleft(i)

    def _final(self, i: int, status: Status, error: ItemError | None) -> None:
        st = self._s
        st.set(i, status)
        self._forced.discard(i)
        if self._cache is not None:
            self._cache.on_final(i, status, st.outputs[i], self._running())
        ok = status is Status.SUCCEEDED or status is Status.CACHED or status is Status.PRUNED
        if not ok:
            st.errors[i] = error if error is not None else st.errors[i]
            if status is Status.FAILED and st.first_failure is None:
                st.first_failure = i
            self._failed += 1
        for observer in self._observers:
            observer.item_final(i, status, st)
        if self.bus.active:
            self.bus.emit(ItemFinished(i, status, st.attempts[i], st.durations[i], st.errors[i]))
        if status is Status.FAILED and self._running() and st.n - self._failed < st.need and not self._run_all:
            self._stop_all(Status.ABORTED, RunStatus.FAILED)

    # -- the cache coordinator's calls back -------------------------------------------

    def _take_cached(self, i: int, value: Any) -> None:
        st = self._s
        if st.status[i].final:  # cancelled while it waited for the key's output
            return
        if st.status[i] is not Q:
            st.set(i, Q)
        st.outputs[i] = value
        self._final(i, Status.CACHED, None)

    def _run_next(self, i: int) -> None:
        self._pending.appendleft(i)

    # -- stopping ------------------------------------------------------------------------

    def _stop_all(self, status: Status, lifecycle: RunStatus) -> None:
        """Abort or cancel: queued items never start, running ones are killed."""
        st = self._s
        if not self._running():
            return
        st.lifecycle = lifecycle
        why = (
            f"{st.need_rule} can no longer be met" if status is Status.ABORTED else "the run was cancelled"
        )
        err = ItemError(ErrorKind(status.value), status.value.capitalize(), why)
        for tid in list(self._tasks):
            ts = self._tasks.pop(tid)
            open_items = [i for i, _ in self._open_items(ts)]
            if open_items:  # a task whose items are all settled is ending by itself
                self._kill(tid)
            for i in open_items:
                self._final(i, status, err)
        waiting = self._cache.drop_waiting() if self._cache is not None else []
        for i in [*self._pending, *waiting]:
            if not st.status[i].final:
                self._final(i, status, err if st.status[i] is not RT else None)
        self._pending.clear()

    def _check_timeouts(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        for tid, ts in list(self._tasks.items()):
            if ts.since is None or ts.pos >= len(ts.items) or now - ts.since <= self.timeout:
                continue
            if tid not in self._tasks:  # settled by an abort a moment ago
                continue
            del self._tasks[tid]
            self._kill(tid)
            self._settle(ts, self._timeout_error)

    def _timeout_error(self, attempt: int) -> ItemError:
        stop = "was killed" if self.backend.can_kill else "was abandoned (this backend cannot kill it)"
        return ItemError(
            ErrorKind.TIMEOUT,
            "TimeoutError",
            f"attempt {attempt} ran longer than timeout={self.timeout:g}s and {stop}",
        )

    def _kill(self, tid: int) -> None:
        self._killed.append(tid)
        try:
            self.backend.kill(tid)
        except Exception:
            log.exception("backend %s could not kill task %s", self.backend.name, tid)

    # -- events -------------------------------------------------------------------------

    def _run_started(self) -> RunStarted:
        st = self._s
        return RunStarted(st.run_id, st.n, st.names, st.concurrency, st.backend, time.time())

    def _replay(self, statuses: bool = True) -> list[Event]:
        """The run so far, as the events a subscriber would have seen (``statuses=False``:
        without the per-item status events)."""
        st = self._s
        out: list[Event] = [self._run_started()]
        items: Iterable[int] = range(st.n)
        if not statuses:  # only the items with something to replay (a grid at 100,000 items)
            # (the items with a history found in C: ~0.1 ms at 100,000 items, not 3)
            histories = st.history
            some = histories.count(None) != len(histories)
            items = sorted({*st.logs.indices(), *(itertools.compress(range(st.n), histories) if some else ())})
        for i in items:
            s = st.status[i]
            attempt = st.attempts[i] + (0 if s.final else 1)
            out += [ItemLog(i, attempt, stream, text) for stream, text in st.logs.chunks(i)]
            history = st.history[i]
            if history:
                out.append(ItemMetrics(i, st.metric_attempt[i], list(history.items())))
            if not statuses:
                continue
            error = st.errors[i]
            if s is R:
                out.append(ItemStarted(i, st.attempts[i] + 1, time.time()))
            elif s is RT and error is not None:
                out.append(ItemRetrying(i, st.attempts[i], error))
            elif s.final:
                out.append(ItemFinished(i, s, st.attempts[i], st.durations[i], error))
        if st.finished_at is not None:  # the run has ended (or is ending: see _wind_down)
            out.append(RunFinished(st.lifecycle, {s.value: k for s, k in st.counts.items()}, time.time()))
        return out
