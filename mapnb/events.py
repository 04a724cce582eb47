"""Item states and the typed events a run emits.

A consumer (the live grid, the terminal progress bar, your own code) subscribes with
:meth:`mapnb.MapRun.subscribe` and receives lists of these records, in order, from the
engine's thread. Events report transitions the engine observed: an item that finishes
before anyone saw it run may go straight from queued to a final state.
"""

from __future__ import annotations

import dataclasses
import enum

from .errors import ItemError


class Status(str, enum.Enum):
    """The state of one item. ``str`` so that DataFrames and JSON show plain words."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; the item waits for its next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CACHED = "cached"
    ABORTED = "aborted"  # not run, or killed, because min_success_ratio became unreachable
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the item will not change state again in this run."""
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CACHED, Status.ABORTED, Status.CANCELLED})


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
class ItemRetrying:
    """An attempt failed with ``error``; the item is queued for attempt ``attempt + 1``."""

    index: int
    attempt: int
    error: ItemError


@dataclasses.dataclass(frozen=True, slots=True)
class ItemFinished:
    """An item reached a final status (succeeded, failed, cached, aborted, cancelled)."""

    index: int
    status: Status
    attempts: int
    duration: float | None
    error: ItemError | None


@dataclasses.dataclass(frozen=True, slots=True)
class RunFinished:
    """The run ended; ``status`` is ``"succeeded"``, ``"failed"`` or ``"cancelled"``."""

    status: str
    counts: dict[str, int]
    time: float


Event = RunStarted | ItemStarted | ItemLog | ItemRetrying | ItemFinished | RunFinished
