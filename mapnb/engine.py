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
        events (ItemStarted, ItemLog, ItemFinished, ...) -> subscribers (grid, progress)
        state arrays (status, outputs, errors, logs) -> MapRun, DataFrame

Backends only report; every decision (retry, give up, abort, kill) is taken here, from
reports queued to this thread, so no state has two writers.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .backends.base import Backend, Job, Task
from .cache import ItemCache
from .errors import ItemError
from .events import (
    Event,
    ItemFinished,
    ItemLog,
    ItemRetrying,
    ItemStarted,
    RunFinished,
    RunStarted,
    Status,
)
from .journal import Journal
from .worker import ENDED, FINISHED, LOG, STARTED, BoundedText

log = logging.getLogger(__name__)

Q, R, RT = Status.QUEUED, Status.RUNNING, Status.RETRYING
_TARGET_TASK_SECONDS = 0.02  # grow batches of tiny items until a task takes about this long
_OVERHEAD_RATIO = 9.0  # ... and at least this many times the per-task overhead (<= 10%)
_MAX_BATCH = 4096
_NO_ERROR = ItemError("cancelled", "Cancelled", "the item did not run")
_task_ids = itertools.count(1)  # process-wide: a shared backend never sees one task id twice


class LogStore:
    """Every item's captured output, bounded per item (head and tail are kept)."""

    def __init__(self, n: int) -> None:
        self._chunks: list[list[tuple[str, str]] | None] = [None] * n
        self._bounds: dict[int, BoundedText] = {}
        self._attempt = [0] * n

    def add(self, index: int, attempt: int, stream: str, text: str) -> None:
        chunks = self._chunks[index]
        if chunks is None:
            chunks = self._chunks[index] = []
            self._bounds[index] = BoundedText()
        if attempt != self._attempt[index]:
            if self._attempt[index]:
                chunks.append(("stderr", f"--- attempt {attempt} ---\n"))
            self._attempt[index] = attempt
        kept = self._bounds[index].add(stream, text)
        if kept:
            chunks.append((stream, kept))

    def chunks(self, index: int) -> list[tuple[str, str]]:
        """The item's output so far as (stream, text) pieces, in the order written."""
        chunks = self._chunks[index]
        if chunks is None:
            return []
        return list(chunks) + self._bounds[index].tail_chunks()

    def text(self, index: int, stream: str | None = None) -> str:
        return "".join(t for s, t in self.chunks(index) if stream is None or s == stream)


class _TaskState:
    __slots__ = ("items", "pos", "since", "dispatched", "work")

    def __init__(self, items: list[tuple[int, int]], now: float) -> None:
        self.items = items  # (index, attempt) in the order the backend runs them
        self.pos = 0  # items before pos are known to be done
        # When the item at pos started, as far as we know; None until the backend says the
        # task began (starting a worker or loading the function is not the item's time).
        self.since: float | None = None
        self.dispatched = now
        self.work = 0.0  # the finished items' own durations, as measured where they ran


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

    def size(self, pending: int, slots: int) -> int:
        if self.per_item is None:
            return 1
        target = max(_TARGET_TASK_SECONDS, _OVERHEAD_RATIO * self.overhead)
        want = round(target / self.per_item)
        fair = math.ceil(pending / (2 * slots))  # every slot still gets work at the end
        return max(1, min(want, fair, _MAX_BATCH))


class Engine:
    """Runs one map: all items of ``job`` over ``inputs`` on ``backend``."""

    def __init__(
        self,
        *,
        run_id: str,
        job: Job,
        inputs: list[tuple[Any, ...]],
        backend: Backend,
        concurrency: int,
        min_success_ratio: float,
        retries: int,
        timeout: float | None,
        cache: ItemCache | None = None,
        journal: Journal | None = None,
        recovered: dict[int, tuple[Any, int, float | None]] | None = None,
    ) -> None:
        n = len(inputs)
        self.run_id, self.job, self.inputs, self.backend = run_id, job, inputs, backend
        self.n, self.concurrency, self.retries, self.timeout = n, concurrency, retries, timeout
        self.need = math.ceil(n * min_success_ratio - 1e-9)
        self.status: list[Status] = [Q] * n
        self.outputs: list[Any] = [None] * n
        self.errors: list[ItemError | None] = [None] * n
        self.attempts = [0] * n  # attempts that ran to an outcome
        self.durations: list[float | None] = [None] * n
        self.logs = LogStore(n)
        self.counts: dict[Status, int] = dict.fromkeys(Status, 0)
        self.counts[Q] = n
        self.state = "running"  # then "succeeded", "failed" or "cancelled"
        self.started_at = time.monotonic()
        self.finished_at: float | None = None
        self.done = threading.Event()
        self.first_failure: int | None = None

        self._pending: collections.deque[int] = collections.deque(range(n))
        self._tasks: dict[int, _TaskState] = {}
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batcher = Batcher()
        self._failed = 0  # final failures and aborts: items that can no longer succeed
        self._subscribers: list[Callable[[list[Event]], None]] = []
        self._events: list[Event] = []
        self._sub_lock = threading.Lock()
        self._killed: list[int] = []
        self._spent = [0] * n  # attempts charged before the latest rerun: retries count anew
        self._rerunning: list[Event] = []
        self.cache = cache
        self.journal = journal
        for i, (output, attempts, duration) in (recovered or {}).items():  # from an earlier life
            self.outputs[i], self.attempts[i], self.durations[i] = output, attempts, duration
            self._set(i, Status.SUCCEEDED)
        if recovered:
            self._pending = collections.deque(i for i in range(n) if i not in recovered)
        self._keys: list[str | None] = [None] * n
        # cache_serialize: items waiting for the one computing the same key, here or in
        # another process (key -> items), and the keys being computed elsewhere
        self._waiting: dict[str, list[int]] = {}
        self._elsewhere: set[str] = set()
        self._next_poll = 0.0
        self._thread = threading.Thread(target=self._main, name=f"mapnb-run-{run_id}", daemon=True)

    # -- called from other threads ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def report(self, records: list[tuple[Any, ...]]) -> None:
        """The backends' way in (any thread)."""
        self._inbox.put(records)

    def cancel(self) -> None:
        self._inbox.put(("cancel",))

    def rerun(self, indices: list[int]) -> None:
        """Run the given finished, unsuccessful items again, in this same run.

        Only once the run is done: the engine thread has ended, so this thread may reset
        the state before a new engine thread takes over.
        """
        if not self.done.is_set():
            raise RuntimeError("a run can only be re-run once it is done")
        self._thread.join()
        for i in indices:
            if self.status[i] in (Status.SUCCEEDED, Status.CACHED) or not self.status[i].final:
                continue
            # Shown as retrying: an attempt failed and the item waits for its next one.
            self._set(i, RT)
            self._failed -= 1
            self._spent[i] = self.attempts[i]
            self._pending.append(i)
            self._rerunning.append(ItemRetrying(i, self.attempts[i], self.errors[i] or _NO_ERROR))
        self.state = "running"
        self.first_failure = None
        # The clock counts time spent running, not the idle time before the re-run.
        if self.finished_at is not None:
            self.started_at = time.monotonic() - (self.finished_at - self.started_at)
        self.finished_at = None
        self._killed = []
        self.done.clear()
        self._thread = threading.Thread(target=self._main, name=f"mapnb-run-{self.run_id}", daemon=True)
        self._thread.start()

    def subscribe(self, callback: Callable[[list[Event]], None]) -> None:
        """Deliver the current state as events, then every new event, in order."""
        with self._sub_lock:  # the engine drains requests made before it set done
            if not self.done.is_set():
                self._inbox.put(("subscribe", callback))
                return
        callback(self._replay())

    def unsubscribe(self, callback: Callable[[list[Event]], None]) -> None:
        self._inbox.put(("unsubscribe", callback))

    # -- the engine thread --------------------------------------------------------------

    def _main(self) -> None:
        try:
            self.backend.open()
            self._emit(self._run_started())
            if self._subscribers:
                self._events += self._rerunning
            self._rerunning = []
            if self.cache is not None:
                self._look_up()
            self._loop()
        except BaseException:  # a bug must never leave the caller waiting forever
            log.exception("mapnb engine failed; failing the items still open")
            err = ItemError("internal", "InternalError", "mapnb failed internally; see the log")
            for i in range(self.n):
                if not self.status[i].final:
                    self._final(i, Status.FAILED, err)
            self.state = "failed"
        finally:
            for tid in list(self._tasks):
                self._kill(tid)
            self._tasks.clear()
            try:  # a finished run has no subtask left running
                self.backend.join(self._killed, timeout=10.0)
                self.backend.close()
            except Exception:
                log.exception("backend %s failed to close the run", self.backend.name)
            if self.cache is not None:
                self.cache.close()  # outputs are on disk before the run says it is done
            if self.journal is not None:
                self.journal.close()
            self.finished_at = time.monotonic()
            counts = {s.value: k for s, k in self.counts.items()}
            self._emit(RunFinished(self.state, counts, time.time()))
            self._flush_events()
            with self._sub_lock:
                self.done.set()
            self._drain()  # answer subscriptions made before done was set

    def _loop(self) -> None:
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
            if self.cache is not None:
                self._poll_cache()
            if self.journal is not None:
                self.journal.flush()
            self._flush_events()
        if self.state == "running":
            ok = self.counts[Status.SUCCEEDED] + self.counts[Status.CACHED]
            self.state = "succeeded" if ok >= self.need else "failed"

    def _complete(self) -> bool:
        idle = not self._pending and not self._waiting
        return not self._tasks and (idle or self.state != "running")

    def _wait_time(self) -> float:
        if self._elsewhere:
            return 0.1  # poll for what other processes are computing
        if self.timeout is None or not self._tasks:
            return 0.5
        started = [t.since for t in self._tasks.values() if t.since is not None]
        if not started:
            return 0.5
        due = min(started) + self.timeout
        return min(0.5, max(0.0, due - time.monotonic()) + 0.001)

    def _dispatch(self) -> None:
        while self.state == "running" and self._pending and len(self._tasks) < self.concurrency:
            size = self._batcher.size(len(self._pending), self.concurrency)
            items: list[tuple[int, int, tuple[Any, ...]]] = []
            while self._pending and len(items) < size:
                i = self._pending.popleft()
                if self.status[i].final:
                    continue
                key = self._keys[i]
                if key is not None and self.cache.settings.serialize and not self._claim(i, key):  # type: ignore[union-attr]
                    continue
                items.append((i, self.attempts[i] + 1, self.inputs[i]))
            if not items:
                return
            task = Task(next(_task_ids), self.job, tuple(items))
            self._tasks[task.id] = _TaskState([(i, a) for i, a, _ in items], time.monotonic())
            try:
                self.backend.submit(task, self.report)
            except Exception as e:
                log.exception("backend %s could not take a task", self.backend.name)
                err = ItemError(
                    "internal", type(e).__qualname__, f"the {self.backend.name} backend failed: {e}"
                )
                self.report([(ENDED, task.id, err, True)])
            self._drain()  # a backend that ran the task inside submit has reported it all

    def _drain(self) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(msg)

    def _handle(self, msg: Any) -> None:
        if type(msg) is tuple:  # a command
            if msg[0] == "cancel":
                self._stop_all(Status.CANCELLED, "cancelled")
            elif msg[0] == "subscribe":
                msg[1](self._replay())
                self._subscribers.append(msg[1])
            elif msg[0] == "unsubscribe" and msg[1] in self._subscribers:
                self._subscribers.remove(msg[1])
            return
        shares_clock = self.backend.shares_clock
        for r in msg:
            kind = r[0]
            if kind == FINISHED:
                self._on_finished(r, shares_clock)
            elif kind == LOG:
                _, _, i, attempt, stream, text = r
                self.logs.add(i, attempt, stream, text)
                if self._subscribers:
                    self._events.append(ItemLog(i, attempt, stream, text))
            elif kind == STARTED:
                _, tid, i, attempt, t0 = r
                if self.status[i].final or attempt != self.attempts[i] + 1:
                    continue
                ts = self._tasks.get(tid)
                if ts is None:  # a task we settled already (killed, or its worker lost)
                    continue
                if shares_clock or ts.since is None:
                    ts.since = t0 if shares_clock else time.monotonic()
                self._set(i, R)
                if self._subscribers:
                    self._events.append(ItemStarted(i, attempt, time.time()))
            elif kind == ENDED:
                self._on_ended(r)

    def _on_finished(self, r: tuple[Any, ...], shares_clock: bool) -> None:
        _, tid, i, attempt, ok, value, t0, t1, *remote = r
        if remote:  # a backend that retries and caches itself (flyte) says how the item ended
            self._on_remote_end(tid, i, attempt, value, t0, t1, *remote[0])
            return
        ts = self._tasks.get(tid)
        if ts is not None:
            ts.pos = next((k + 1 for k in range(ts.pos, len(ts.items)) if ts.items[k][0] == i), ts.pos)
            ts.since = t1 if shares_clock else time.monotonic()
            ts.work += max(0.0, t1 - t0)
        if self.status[i].final or attempt != self.attempts[i] + 1:
            return  # a late report from an attempt already settled
        self.attempts[i] = attempt
        self.durations[i] = t1 - t0
        if ok and self.timeout is not None and t1 - t0 > self.timeout:
            ok, value = False, self._timeout_error(attempt)
        if ok:
            self.outputs[i] = value
            self.errors[i] = None
            self._final(i, Status.SUCCEEDED, None)
        else:
            self._attempt_failed(i, value)

    def _on_remote_end(
        self, tid: int, i: int, attempt: int, value: Any, t0: float, t1: float, attempts: int, status: Status
    ) -> None:
        """A FINISHED report with a ninth field ``(attempts, status)``: the item's end as a
        backend that applies retries and caching itself saw it (``attempts`` it made;
        ``status`` succeeded, cached, failed, aborted or cancelled). It is final."""
        ts = self._tasks.get(tid)
        if ts is not None:
            ts.pos = next((k + 1 for k in range(ts.pos, len(ts.items)) if ts.items[k][0] == i), ts.pos)
        if self.status[i].final or attempt != self.attempts[i] + 1:
            return
        self.attempts[i] = attempts
        self.durations[i] = t1 - t0
        if status is Status.SUCCEEDED or status is Status.CACHED:
            self.outputs[i] = value
            self.errors[i] = None
            self._final(i, status, None)
        else:
            self._final(i, status, value)

    def _on_ended(self, r: tuple[Any, ...]) -> None:
        _, tid, error, all_items, *more = r
        ts = self._tasks.pop(tid, None)
        if ts is None:
            return  # we killed it and settled its items already
        self._batcher.record(ts.pos, ts.work, time.monotonic() - ts.dispatched)
        # A backend that knows which item was running when its worker died says so (a
        # fifth field); outcomes of items before it may have been lost with the worker.
        culprit = more[0] if more else None
        self._settle(ts, None if error is None else lambda attempt: error, all_items, culprit)

    def _open_items(self, ts: _TaskState) -> Iterator[tuple[int, int]]:
        """The task's items that are still its to settle, checked as the caller goes."""
        for i, attempt in ts.items[ts.pos :]:
            if not self.status[i].final and attempt == self.attempts[i] + 1:
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
        first = True
        for k, (i, attempt) in enumerate(self._open_items(ts)):
            if culprit is not None and not all_items:
                first = i == culprit
            if error_for is not None and (first or all_items):
                self.attempts[i] = attempt
                if first and k == 0 and ts.since is not None:  # since: when the first open one began
                    self.durations[i] = time.monotonic() - ts.since
                self._attempt_failed(i, error_for(attempt))
            else:
                self._requeue(i)
            first = False

    def _attempt_failed(self, i: int, error: ItemError) -> None:
        self.errors[i] = error
        if error.retryable and self.attempts[i] - self._spent[i] <= self.retries and self.state == "running":
            self._set(i, RT)
            self._pending.append(i)
            if self._subscribers:
                self._events.append(ItemRetrying(i, self.attempts[i], error))
        else:
            self._final(i, Status.FAILED, error)

    def _requeue(self, i: int) -> None:
        if self.state != "running":
            self._final(i, Status.ABORTED if self.state == "failed" else Status.CANCELLED, None)
            return
        if self.status[i] is R:
            self._set(i, Q)
        self._pending.appendleft(i)

    def _set(self, i: int, status: Status) -> None:
        counts = self.counts
        counts[self.status[i]] -= 1
        counts[status] += 1
        self.status[i] = status

    def _final(self, i: int, status: Status, error: ItemError | None) -> None:
        self._set(i, status)
        key = self._keys[i]
        if key is not None:
            self._settle_key(i, key, status)
        if self.journal is not None and (status is Status.SUCCEEDED or status is Status.CACHED):
            self.journal.record(i, self.outputs[i], self.attempts[i], self.durations[i])
        if status is not Status.SUCCEEDED and status is not Status.CACHED:
            self.errors[i] = error if error is not None else self.errors[i]
            if status is Status.FAILED and self.first_failure is None:
                self.first_failure = i
            self._failed += 1
        if self._subscribers:
            self._events.append(ItemFinished(i, status, self.attempts[i], self.durations[i], self.errors[i]))
        if status is Status.FAILED and self.state == "running" and self.n - self._failed < self.need:
            self._stop_all(Status.ABORTED, "failed")

    # -- the cache ----------------------------------------------------------------------

    def _look_up(self) -> None:
        """Before anything runs: every item's key, and the outputs already in the cache."""
        cache = self.cache
        assert cache is not None
        leaders: set[str] = set()
        for i in range(self.n):
            if self.status[i].final:  # a re-run keeps what it has
                continue
            key = self._keys[i] = self._keys[i] or cache.key(self.inputs[i])
            if key is None:
                continue
            if not cache.settings.overwrite:
                hit, value = cache.get(key)
                if hit:
                    self._take_cached(i, value)
                    continue
            if cache.settings.serialize:
                if key in leaders:  # the same item again in this run: wait for the first
                    self._waiting.setdefault(key, []).append(i)
                leaders.add(key)
        if self._waiting:
            held = {i for items in self._waiting.values() for i in items}
            self._pending = collections.deque(i for i in self._pending if i not in held)

    def _take_cached(self, i: int, value: Any) -> None:
        if self.status[i] is not Q:
            self._set(i, Q)
        self.outputs[i] = value
        self._final(i, Status.CACHED, None)

    def _claim(self, i: int, key: str) -> bool:
        """cache_serialize: may item ``i`` run? Not if another process is computing it
        (it then waits), nor if that other process has just finished it."""
        cache = self.cache
        assert cache is not None
        if not cache.claim(key):
            self._waiting.setdefault(key, []).insert(0, i)
            self._elsewhere.add(key)
            return False
        hit, value = cache.get(key)  # finished between our first look and the claim?
        if hit:
            cache.release(key)
            self._take_cached(i, value)
            return False
        return True

    def _settle_key(self, i: int, key: str, status: Status) -> None:
        """Item ``i`` (with cache key ``key``) is final: store it, or let a waiter compute it."""
        cache = self.cache
        assert cache is not None
        if status is Status.SUCCEEDED:
            cache.put(key, self.outputs[i])
            self._hand_out(key, self.outputs[i])
        elif status is Status.CACHED:
            # Found in the cache (at claim time, say: another process had just computed it):
            # the items waiting for this key are owed the same output, or they wait forever.
            self._elsewhere.discard(key)
            self._hand_out(key, self.outputs[i])
        else:
            cache.release(key)
            if self.state == "running" and key not in self._elsewhere:
                self._next_in_line(key)

    def _hand_out(self, key: str, value: Any) -> None:
        """The items waiting for ``key`` asked for exactly this output."""
        for j in self._waiting.pop(key, []):
            self._take_cached(j, value)

    def _next_in_line(self, key: str) -> None:
        """The first item waiting for ``key`` computes it now; the others go on waiting."""
        waiters = self._waiting.get(key)
        if waiters:
            self._pending.appendleft(waiters.pop(0))
            if not waiters:
                del self._waiting[key]

    def _poll_cache(self) -> None:
        """cache_serialize across processes: take what others computed, or take over."""
        cache = self.cache
        assert cache is not None
        cache.renew()
        if not self._elsewhere or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + 0.1
        for key in list(self._elsewhere):
            hit, value = cache.get(key)
            if hit:
                self._elsewhere.discard(key)
                self._hand_out(key, value)
            elif not cache.claimed_elsewhere(key):  # they gave up or died: our turn
                self._elsewhere.discard(key)
                self._next_in_line(key)

    def _stop_all(self, status: Status, state: str) -> None:
        """Abort or cancel: queued items never start, running ones are killed."""
        if self.state != "running":
            return
        self.state = state
        why = (
            "min_success_ratio can no longer be met" if status is Status.ABORTED else "the run was cancelled"
        )
        err = ItemError(status.value, status.value.capitalize(), why)
        for tid in list(self._tasks):
            ts = self._tasks.pop(tid)
            open_items = [i for i, _ in self._open_items(ts)]
            if open_items:  # a task whose items are all settled is ending by itself
                self._kill(tid)
            for i in open_items:
                self._final(i, status, err)
        waiting = [i for items in self._waiting.values() for i in items]
        self._waiting.clear()
        self._elsewhere.clear()
        for i in [*self._pending, *waiting]:
            if not self.status[i].final:
                self._final(i, status, err if self.status[i] is not RT else None)
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
            "timeout",
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

    def _emit(self, event: Event) -> None:
        if self._subscribers:
            self._events.append(event)

    def _flush_events(self) -> None:
        if not self._events:
            return
        events, self._events = self._events, []
        for cb in list(self._subscribers):
            try:
                cb(events)
            except Exception:
                log.exception("a subscriber of run %s failed; unsubscribing it", self.run_id)
                self._subscribers.remove(cb)

    def _run_started(self) -> RunStarted:
        return RunStarted(
            self.run_id, self.n, self.job.names, self.concurrency, self.backend.name, time.time()
        )

    def _replay(self) -> list[Event]:
        """The run so far, as the events a subscriber would have seen."""
        out: list[Event] = [self._run_started()]
        for i, s in enumerate(self.status):
            attempt = self.attempts[i] + (0 if s.final else 1)
            out += [ItemLog(i, attempt, stream, text) for stream, text in self.logs.chunks(i)]
            if s is R:
                out.append(ItemStarted(i, self.attempts[i] + 1, time.time()))
            elif s is RT and self.errors[i] is not None:
                out.append(ItemRetrying(i, self.attempts[i], self.errors[i]))  # type: ignore[arg-type]
            elif s.final:
                out.append(ItemFinished(i, s, self.attempts[i], self.durations[i], self.errors[i]))
        if self.done.is_set():
            out.append(RunFinished(self.state, {s.value: k for s, k in self.counts.items()}, time.time()))
        return out
