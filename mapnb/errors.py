"""The error tree of mapnb.

::

    MapnbError                            every error mapnb raises itself
    ├── InvalidMapError (+ValueError)     bad input, raised before anything starts
    ├── BackendError (+RuntimeError)      a backend cannot run anything (no cluster, ...)
    │   └── PoolBrokenError               the local pool or its fork server is gone
    ├── MapTaskError                      a run fell short of min_success_ratio
    └── RemoteError                       an item's own traceback, as the __cause__ of MapTaskError
    RunInterrupted (KeyboardInterrupt)    Ctrl-C while waiting: the run was cancelled
    NotRetried (Exception)                raised by an item to fail at once, whatever its retries

Failures of single items are not exceptions in the caller: they are recorded as an
:class:`ItemError` on the item (``run.errors[i]``, the ``error`` column) and the run goes on;
its :class:`ErrorKind` says what kind of failure it was.
"""

from __future__ import annotations

import dataclasses
import enum
import signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .run import MapRun


class MapnbError(Exception):
    """Base class of every exception mapnb raises."""


class InvalidMapError(MapnbError, ValueError):
    """Bad arguments or inputs: raised before any item starts, naming what is wrong."""


class BackendError(MapnbError, RuntimeError):
    """A backend cannot run anything: no cluster to connect to, or the cluster is gone."""


class PoolBrokenError(BackendError):
    """The local process pool was shut down, or its fork server died: nothing more runs
    on it (a new run starts a new pool)."""


class RemoteError(MapnbError):
    """The traceback of an item, as it was raised where the item ran."""

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return "\n" + self.traceback_text.rstrip()


NOT_RETRIED = frozenset({"NonRecoverableError"})
"""Exception class names that end an item whatever its retries (Flyte 2's opt-out)."""


class NotRetried(Exception):
    """Raise this (or a subclass) in an item to fail it at once, whatever its ``retries``:
    the failure is the item's own and another attempt cannot help (mapnb.notebooks raises
    it for a cell that raised)."""


class ErrorKind(str, enum.Enum):
    """What kind of failure an :class:`ItemError` is. ``str``, so ``kind == "timeout"`` holds."""

    EXCEPTION = "exception"  # the task raised
    TIMEOUT = "timeout"  # an attempt ran longer than timeout=
    WORKER_DIED = "worker-died"  # the process running it ended (a crash, a signal, os._exit)
    MEMORY = "memory"  # it exceeded its limits' mem= (MemoryLimitExceeded)
    SERIALIZATION = "serialization"  # an input or the output could not cross processes
    ABORTED = "aborted"  # stopped because min_success_ratio became unreachable
    CANCELLED = "cancelled"  # stopped because the run was cancelled
    INTERNAL = "internal"  # mapnb or a backend failed (a bug: see the log)

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class ItemError:
    """Why one attempt of one item failed.

    Attributes
    ----------
    kind : ErrorKind
        What kind of failure (a plain string of one of its values is accepted).
    type : str
        The exception's class name (``"ValueError"``), or the kind for the others.
    message : str
        One line that says what happened.
    traceback : str
        The item's own traceback, without mapnb's frames ("" when there is none).
    final : bool
        The item raised :class:`NotRetried`: it is not retried.
    """

    kind: ErrorKind
    type: str
    message: str
    traceback: str = ""
    final: bool = False  # the item raised NotRetried: no other attempt

    def __post_init__(self) -> None:
        if type(self.kind) is not ErrorKind:
            object.__setattr__(self, "kind", ErrorKind(self.kind))  # a typo fails here, not later

    @property
    def retryable(self) -> bool:
        """Whether another attempt may help: not for an exception that says it will not
        (:class:`NotRetried`, or Flyte 2's ``flyte.errors.NonRecoverableError``, as Flyte
        itself treats it)."""
        return not (self.final or (self.kind is ErrorKind.EXCEPTION and self.type in NOT_RETRIED))

    def one_line(self) -> str:
        """``Type: message`` on a single line, as shown in the ``error`` column."""
        lines = [line.strip() for line in self.message.strip().splitlines() if line.strip()]
        first = lines[0] if lines else ""
        if first.endswith(":") and len(lines) > 1:  # "Error ... executing 't':" then the cause (flytekit)
            first = f"{first} {lines[1]}"
        return f"{self.type}: {first}" if first else self.type


def worker_died(status: int | None) -> ItemError:
    """An :class:`ItemError` for a worker process that ended while running the item.

    ``status`` is the exit code, negative for a signal (as in ``Popen.returncode``).
    """
    if status is None:
        why = "ended for an unknown reason"
    elif status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        hint = {
            "SIGKILL": " (the out-of-memory killer does this; check the item's memory use)",
            "SIGSEGV": " (a segmentation fault in native code)",
            "SIGABRT": " (native code called abort())",
        }.get(name, "")
        why = f"was killed by {name}{hint}"
    else:
        why = f"exited with code {status} (os._exit, sys.exit outside the task, or a crash)"
    return ItemError(ErrorKind.WORKER_DIED, "WorkerDied", f"the worker process {why}")


class MapTaskError(MapnbError):
    """A map run ended with fewer successes than ``min_success_ratio`` asks for.

    Nothing is lost: ``.run`` is the :class:`~mapnb.MapRun` (logs, errors, outputs) and
    ``.df`` the partial DataFrame, with ``None`` in the output columns of failed items.

    Attributes
    ----------
    run : MapRun
        The run that failed.
    index : int or None
        The first failing item, whose traceback is the ``__cause__``.
    """

    def __init__(self, message: str, run: MapRun, index: int | None) -> None:
        super().__init__(message)
        self.run = run
        self.index = index

    @property
    def df(self) -> pd.DataFrame:
        """The partial results, one row per item."""
        return self.run.df

    def __reduce__(self) -> tuple[Any, ...]:
        return (MapnbError, (str(self),))

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of mapnb's own frames: the item's traceback first."""
        lines: list[str] = []
        if self.index is not None:
            err = self.run.errors[self.index]
            if err is not None and err.traceback:
                lines.append(f"Traceback of item {self.index} (where it ran):")
                lines += err.traceback.rstrip().splitlines()
                lines.append("")
        lines.append(f"MapTaskError: {self}")
        return lines


class RunInterrupted(KeyboardInterrupt):
    """The caller was interrupted (Ctrl-C, the notebook's Interrupt button) while it waited
    for a run; the run was cancelled, and what finished is kept.

    It is a ``KeyboardInterrupt``, so scripts and notebooks stop as they would anyway; in
    IPython it shows as one line instead of a traceback through mapnb.

    Attributes
    ----------
    run : MapRun
        The cancelled run, also :func:`mapnb.last_run`.
    """

    def __init__(self, run: MapRun) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in run.counts.items() if v) or "no items"
        super().__init__(f"run {run.id} cancelled: {counts}; results in mapnb.last_run()")
        self.run = run

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyboardInterrupt, (str(self),))

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]
