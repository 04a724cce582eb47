"""The contract between the engine and the places items run.

The engine hands a backend :class:`Task` objects (a batch of items of one :class:`Job`)
and gets typed report records back (see :mod:`mapnb.protocol` for their shapes). Retries,
timeouts, concurrency and min_success_ratio are the engine's business, never a backend's.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..protocol import Item, ReportFn

Report = tuple[Any, ...]  # a record of mapnb.protocol (or a plain tuple of its layout)


@dataclasses.dataclass(frozen=True)
class Job:
    """What every item of a run shares: the function, the mapped names, the caller's setting.

    ``cwd``, ``sys_path`` and ``env`` are the caller's at submit time, so that a worker
    process imports and opens files as the notebook would.
    """

    id: str
    fn: Callable[..., Any]
    names: tuple[str, ...]
    cwd: str | None = None
    sys_path: tuple[str, ...] | None = None
    env: dict[str, str] | None = None
    run_id: str | None = None
    checkpoints: str | None = None  # the run's checkpoint folder (see mapnb.context)
    requests: Any = None  # mapnb.Resources: what one item needs
    limits: Any = None  # mapnb.Resources: what one item may use at most
    origin: tuple[str, tuple[str, ...]] | None = None  # the code's file and lines (see mapnb._code)


@dataclasses.dataclass(frozen=True)
class Task:
    """Items of one job to run one after the other in a single slot."""

    id: int
    job: Job
    items: Sequence[Item]  # a tuple, or an ItemRun (consecutive fresh items, held as columns)


def usable_cpus() -> int:
    """CPUs this process may run on (affinity and cgroup-restricted sets included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Backend(abc.ABC):
    """Where items run. Subclasses implement :meth:`submit`; the rest has defaults.

    Capability flags tell the engine what it may rely on:

    - ``can_kill``: :meth:`kill` really stops a running item (timeout, abort and cancel
      are then enforced); otherwise the engine abandons the item and moves on.
    - ``shares_clock``: report times are this machine's ``time.monotonic()``.
    - ``quick_submit``: :meth:`submit` only hands the task on (items run elsewhere, never
      inside the call) and :meth:`open` does nothing, so the engine may send a run's first
      tasks from the caller's thread, before its own thread is up.
    - ``remembers``: a map starts from the item durations and per-task overhead measured
      in the latest map of the same function on a backend of this name, instead of
      probing with one-item tasks (for backends whose costs do not change between runs).
    """

    name: ClassVar[str] = "base"
    can_kill: ClassVar[bool] = False
    shares_clock: ClassVar[bool] = True
    quick_submit: ClassVar[bool] = False
    remembers: ClassVar[bool] = False

    def default_concurrency(self) -> int:
        """How many tasks run at once when the user does not say."""
        return usable_cpus()

    def fit(self, requests: Any, limits: Any) -> int | None:
        """How many items needing ``requests`` (a mapnb.Resources) may run at once here;
        None: no bound from this backend. Raise a clear error for what cannot fit at all."""
        return None

    def prepare(self) -> None:
        """Called in the caller's thread when a run is submitted: raise here what the user
        must see at once (no cluster to connect to, say)."""

    def open(self) -> None:
        """Called by the engine before the first task of a run."""

    def close(self) -> None:
        """Called by the engine after the last report of a run."""

    @abc.abstractmethod
    def submit(self, task: Task, report: ReportFn) -> None:
        """Start ``task``; call ``report`` (from any thread) with lists of report records.

        Must not block for the task to finish unless the backend runs in the caller's thread
        (sequential). Every task ends with exactly one :class:`~mapnb.protocol.Ended` record.
        """

    def kill(self, task_id: int) -> None:
        """Stop the task now (best effort when ``can_kill`` is false)."""

    def join(self, task_ids: list[int], timeout: float) -> None:
        """Wait up to ``timeout`` seconds until the killed ``task_ids`` no longer run."""

    def shutdown(self) -> None:
        """Release what the backend holds (processes, threads). Idempotent."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
