"""Item states and the typed events a run emits.

A consumer (the live grid, the terminal progress bar, your own code) subscribes with
:meth:`mapnb.MapRun.subscribe` and receives lists of these records, in order, from the
engine's thread. Events report transitions the engine observed: an item that finishes
before anyone saw it run may go straight from queued to a final state.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable

from .errors import ItemError
from .protocol import Subscribe, Unsubscribe

log = logging.getLogger(__name__)


class Status(str, enum.Enum):
    """The state of one item. ``str`` so that DataFrames and JSON show plain words.

    Attributes
    ----------
    final : bool
        Whether the item will not change state again in this run (succeeded, failed,
        cached, pruned, aborted, cancelled).
    """

    final: bool  # set on each member below: a plain attribute, read per item per event

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; the item waits for its next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CACHED = "cached"
    PRUNED = "pruned"  # stopped by map_task(prune=...): its metrics fell behind; not a failure
    ABORTED = "aborted"  # not run, or killed, because min_success_ratio became unreachable
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self._value_


_FINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.CACHED, Status.PRUNED, Status.ABORTED, Status.CANCELLED}
)
for _s in Status:
    _s.final = _s in _FINAL
del _s
FINAL_STATUSES: tuple[Status, ...] = tuple(s for s in Status if s in _FINAL)
"""The final statuses, in the order the grid and progress bars list them."""


class RunStatus(str, enum.Enum):
    """The lifecycle of a whole run. ``str``, so ``run.state == "succeeded"`` holds."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  # at least min_success_ratio of the items succeeded
    FAILED = "failed"  # fewer did, or can no longer (the rest were aborted)
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began: ``n`` items over the mapped parameters ``names``."""

    run_id: str
    n: int
    names: tuple[str, ...]
    concurrency: int
    backend: str
    time: float


@dataclasses.dataclass(frozen=True, slots=True)
class ItemStarted:
    """An attempt of an item began running (``attempt`` counts from 1)."""

    index: int
    attempt: int
    time: float


@dataclasses.dataclass(frozen=True, slots=True)
class ItemLog:
    """Text an item wrote to ``stream`` (``"stdout"`` or ``"stderr"``)."""

    index: int
    attempt: int
    stream: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class ItemMetrics:
    """Metrics an item reported with :func:`mapnb.report`: ``steps`` is a list of
    ``(step, {name: value})``, in the order reported."""

    index: int
    attempt: int
    steps: list[tuple[int, dict[str, float]]]


@dataclasses.dataclass(frozen=True, slots=True)
class ItemRetrying:
    """An attempt failed with ``error``; the item is queued for attempt ``attempt + 1``."""

    index: int
    attempt: int
    error: ItemError


@dataclasses.dataclass(frozen=True, slots=True)
class ItemFinished:
    """An item reached a final status (succeeded, failed, cached, pruned, aborted, cancelled)."""

    index: int
    status: Status
    attempts: int
    duration: float | None
    error: ItemError | None


@dataclasses.dataclass(frozen=True, slots=True)
class ItemsAdded:
    """The run grew (``run.extend(...)``, ``run.extend_items(...)``): ``count`` new items,
    queued, at indices ``start`` to ``start + count - 1``."""

    start: int
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class RunFinished:
    """The run ended; ``status`` is ``"succeeded"``, ``"failed"`` or ``"cancelled"``."""

    status: RunStatus
    counts: dict[str, int]
    time: float


Event = (
    RunStarted | ItemStarted | ItemLog | ItemMetrics | ItemRetrying | ItemFinished | ItemsAdded | RunFinished
)


Subscriber = Callable[[list[Event]], None]


class EventBus:
    r"""Delivers a run's events to its subscribers, in order, from the engine's thread.

    The engine thread :meth:`emit`\ s events and :meth:`flush`\ es them in batches; it
    also :meth:`add`\ s subscribers (a subscriber first gets a replay of the run so far,
    built by ``replay`` on the engine's thread, so that it misses nothing and sees nothing
    twice). Other threads call :meth:`subscribe`; before the run is done that goes through
    ``post`` to the engine thread, afterwards the replay is delivered at once.

    Emitting costs nothing while nobody listens: check :attr:`active` before building a
    per-item status event (ItemStarted, ItemRetrying, ItemFinished) and :attr:`listening`
    before building any other. A subscriber that reads statuses from the run's view (the
    grid: ``statuses=False``) does not make the bus active, so the engine can settle items
    in batches without an event object per item.
    """

    def __init__(
        self,
        run_id: str,
        replay: Callable[[bool], list[Event]],
        post: Callable[[object], None],
        done: threading.Event,
    ) -> None:
        self._run_id, self._replay, self._post, self._done = run_id, replay, post, done
        self._subscribers: list[Subscriber] = []
        self._pending: list[Event] = []
        self._lock = threading.Lock()  # orders "subscribe" against "the run is done"
        self._quiet: list[Subscriber] = []  # subscribers that want no per-item status events
        self.active = False  # whether anyone wants per-item status events (engine thread)
        self.listening = False  # whether anyone listens at all: build events only then

    # -- any thread ------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber, statuses: bool = True) -> None:
        """Deliver the run so far as events, then every new event, in order.

        ``statuses=False``: the callback needs no per-item status events (it reads statuses
        from the run's view); it may still get some, when another subscriber wants them."""
        with self._lock:
            if not self._done.is_set():
                self._post(Subscribe(callback, statuses))
                return
        callback(self._replay(statuses))

    def post_unless_done(self, command: object) -> bool:
        """Hand ``command`` to the engine thread, unless the run is done (False): a
        command posted here is always read, by the loop or by its last drain."""
        with self._lock:
            if self._done.is_set():
                return False
            self._post(command)
            return True

    def unsubscribe(self, callback: Subscriber) -> None:
        self._post(Unsubscribe(callback))

    def mark_done(self) -> None:
        """The engine thread is about to stop reading its inbox (call last)."""
        with self._lock:
            self._done.set()

    # -- the engine thread -------------------------------------------------------------------

    def add(self, callback: Subscriber, statuses: bool = True) -> None:
        callback(self._replay(statuses))
        self._subscribers.append(callback)
        if not statuses:
            self._quiet.append(callback)
        self._listeners_changed()

    def remove(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)
        if callback in self._quiet:
            self._quiet.remove(callback)
        self._listeners_changed()

    def _listeners_changed(self) -> None:
        self.listening = bool(self._subscribers)
        self.active = len(self._subscribers) > len(self._quiet)

    def emit(self, event: Event) -> None:
        if self._subscribers:
            self._pending.append(event)

    def extend(self, events: list[Event]) -> None:
        if self._subscribers:
            self._pending += events

    def flush(self) -> None:
        """Hand the events emitted since the last flush to every subscriber, as one batch."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        for cb in list(self._subscribers):
            try:
                cb(events)
            except Exception:
                log.exception("a subscriber of run %s failed; unsubscribing it", self._run_id)
                self.remove(cb)
