"""Following a map on a Flyte cluster: flytekit's execution models -> mapnb's item states.

A Flyte ArrayNode reports its subtasks in the task executions of its node: each carries,
in ``closure.metadata.external_resources``, one ``ExternalResourceInfo`` per subtask
attempt (``index``, ``retry_attempt``, ``phase``, ``cache_status``, ``logs``), which
flyteadmin merges per (index, retry attempt) (its ``mergeExternalResources``). :func:`subtask_states` reads them
(as ``FlyteRemote.sync_execution(..., sync_nodes=True)`` returns them) into one
:class:`SubtaskState` per item; :func:`changes` says what changed between two reads, as
the records the backend hands to mapnb's engine. Both are pure functions of flytekit's
own model objects, so they are tested without a cluster.

Flyte's phases as mapnb statuses (the latest attempt of each subtask):

====================================  =================================================
Flyte (``TaskExecution.Phase``)       mapnb
====================================  =================================================
no report yet, ``UNDEFINED``,         ``queued`` (``retrying`` when an earlier attempt
``QUEUED``, ``WAITING_FOR_RESOURCES``  failed)
``INITIALIZING``, ``RUNNING``         ``running``
``RETRYABLE_FAILED``                  ``retrying`` (Flyte starts another attempt)
``SUCCEEDED``                         ``succeeded``; ``cached`` with ``CACHE_HIT``
``FAILED``                            ``failed``; ``retrying`` while retries are left
                                      (older Flyte reports a retried attempt so)
``ABORTED``                           ``aborted``; ``cancelled`` when the execution was
====================================  =================================================

When the execution itself ends, every subtask is settled: one that had not ended becomes
``cancelled`` (the execution was terminated) or ``aborted`` (it failed as a whole: the
map could no longer meet its ``min_success_ratio``), as mapnb's own cancel and abort leave
them; a failed attempt is then final.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from ..events import Status

# flyteidl's enums, by value (flyteidl.core.execution_pb2 / catalog_pb2), so that this
# module imports nothing heavy: the tests check them against flyteidl's own.
_TASK_PHASES = {
    0: "UNDEFINED", 1: "QUEUED", 2: "RUNNING", 3: "SUCCEEDED", 4: "ABORTED", 5: "FAILED",
    6: "INITIALIZING", 7: "WAITING_FOR_RESOURCES", 8: "RETRYABLE_FAILED",
}  # fmt: skip
_WORKFLOW_PHASES = {
    0: "UNDEFINED", 1: "QUEUED", 2: "RUNNING", 3: "SUCCEEDING", 4: "SUCCEEDED", 5: "FAILING",
    6: "FAILED", 7: "ABORTED", 8: "TIMED_OUT", 9: "ABORTING",
}  # fmt: skip
_CACHE_STATUSES = {
    0: "CACHE_DISABLED", 1: "CACHE_MISS", 2: "CACHE_HIT", 3: "CACHE_POPULATED",
    4: "CACHE_LOOKUP_FAILURE", 5: "CACHE_PUT_FAILURE", 6: "CACHE_SKIPPED", 7: "CACHE_EVICTED",
}  # fmt: skip
_WAITING = {"UNDEFINED", "QUEUED", "WAITING_FOR_RESOURCES"}
_ENDED_WORKFLOW = {"SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT"}


@dataclasses.dataclass(frozen=True)
class SubtaskState:
    """What Flyte says of one subtask of the map, as mapnb shows an item.

    Attributes
    ----------
    index : int
        The item (the subtask's array index).
    status : Status
        mapnb's status (see the table in :mod:`mapnb.flyte._follow`).
    attempts : int
        Attempts Flyte started (0: none yet, or the output came from Flyte's cache).
    phase : str
        Flyte's phase of the latest attempt (``"RUNNING"``, ...; ``""`` before any report).
    cache : str
        Flyte's cache status of the latest attempt (``"CACHE_HIT"``, ...; ``""`` if none).
    logs : tuple of (attempt, name, uri)
        Log links of every attempt, in order (attempts counted from 1).
    error : str or None
        Why the item did not succeed, for an item that ended otherwise.
    """

    index: int
    status: Status
    attempts: int = 0
    phase: str = ""
    cache: str = ""
    logs: tuple[tuple[int, str, str], ...] = ()
    error: str | None = None


def external_resources(task_executions: Iterable[Any]) -> list[Any]:
    """Every ``ExternalResourceInfo`` of the ArrayNode's task executions, in report order."""
    out: list[Any] = []
    for te in task_executions:
        meta = getattr(te.closure, "metadata", None)
        if meta is not None and meta.external_resources:
            out.extend(meta.external_resources)
    return out


def subtask_states(
    task_executions: Iterable[Any],
    n: int,
    *,
    execution_phase: int | None = None,
    execution_error: str | None = None,
    retries: int = 0,
) -> list[SubtaskState]:
    """Each of the ``n`` subtasks' state, from the ArrayNode's task executions.

    Parameters
    ----------
    task_executions : iterable of flytekit.models.admin.task_execution.TaskExecution
        The ArrayNode's node execution's task executions (``FlyteNodeExecution.task_executions``
        after ``FlyteRemote.sync_execution(execution, sync_nodes=True)``).
    n : int
        The number of items.
    execution_phase : int, optional
        The workflow execution's phase (``execution.closure.phase``, a
        ``WorkflowExecution.Phase``): once it has ended, subtasks still open are settled.
    execution_error : str, optional
        The execution's error message, quoted in the failed items' errors.
    retries : int
        The subtasks' retries: a ``FAILED`` attempt with retries left shows ``retrying``
        until Flyte starts the next attempt or the execution ends (Flyte before its
        ``RETRYABLE_FAILED`` phase reports ``FAILED`` for an attempt it then retries).

    Returns
    -------
    list of SubtaskState
        One per item, in index order.
    """
    attempts: dict[int, dict[int, Any]] = {}  # index -> retry attempt -> its latest report
    for r in external_resources(task_executions):
        if 0 <= r.index < n:
            attempts.setdefault(r.index, {})[r.retry_attempt] = r
    wf_phase = _WORKFLOW_PHASES.get(execution_phase, "") if execution_phase is not None else ""
    return [_state(i, attempts.get(i, {}), wf_phase, execution_error, retries) for i in range(n)]


def _state(
    i: int, reports: dict[int, Any], wf_phase: str, wf_error: str | None, retries: int
) -> SubtaskState:
    logs = tuple(
        (a + 1, log.name or "log", log.uri) for a in sorted(reports) for log in reports[a].logs if log.uri
    )
    ended = wf_phase in _ENDED_WORKFLOW
    if not reports:
        status, attempts, phase, cache = Status.QUEUED, 0, "", ""
    else:
        status, attempts, phase, cache = _latest(reports, wf_phase, ended, retries)
    status, error = _outcome(status, attempts, wf_phase, ended, logs, wf_error)
    return SubtaskState(i, status, attempts, phase, cache, logs, error)


def _latest(
    reports: dict[int, Any], wf_phase: str, ended: bool, retries: int
) -> tuple[Status, int, str, str]:
    """The status, attempts, Flyte phase and cache status that an item's latest report says."""
    last = max(reports)
    r = reports[last]
    phase = _TASK_PHASES.get(r.phase, str(r.phase))
    cache = _CACHE_STATUSES.get(r.cache_status, "") if r.cache_status else ""
    started = phase not in _WAITING
    attempts = last + 1 if started else last
    if phase == "SUCCEEDED":
        status = Status.CACHED if cache == "CACHE_HIT" else Status.SUCCEEDED
        if status is Status.CACHED and last == 0:
            attempts = 0  # nothing ran: the output came from Flyte's cache
    elif phase in ("FAILED", "RETRYABLE_FAILED"):
        # Flyte before RETRYABLE_FAILED (and a non-recoverable error) reports FAILED; an
        # attempt with retries left may still be followed by another: final once none
        # are left, or once the execution has ended.
        final = ended or (phase == "FAILED" and attempts > retries)
        status = Status.FAILED if final else Status.RETRYING
    elif phase == "ABORTED":
        status = Status.CANCELLED if wf_phase in ("ABORTED", "ABORTING") else Status.ABORTED
    elif not started and last > 0:
        status = Status.RETRYING
    else:
        status = Status.RUNNING if started else Status.QUEUED
    return status, attempts, phase, cache


def _outcome(
    status: Status, attempts: int, wf_phase: str, ended: bool, logs: tuple[Any, ...], wf_error: str | None
) -> tuple[Status, str | None]:
    """The item's status once the execution's state is taken into account, and its error."""
    if not status.final and ended:
        # The execution ended around this subtask: terminated, or failed as a whole (the
        # map could no longer meet its min_success_ratio); or a last read was stale.
        if wf_phase == "ABORTED":
            return Status.CANCELLED, "the Flyte execution was terminated"
        how = wf_phase.lower().replace("_", " ")
        return Status.ABORTED, f"the Flyte execution {how} before this item ended"
    if status is Status.FAILED:
        where = f"; see its log: {logs[-1][2]}" if logs else ""
        error = f"attempt {attempts} failed on Flyte{where}"
        if wf_error:
            error += f"\n{wf_error}"
        return status, error
    if status is Status.ABORTED:
        return status, "Flyte aborted this subtask (the map could no longer meet its min_success_ratio)"
    if status is Status.CANCELLED:
        return status, "the Flyte execution was terminated"
    return status, None


@dataclasses.dataclass(frozen=True)
class Change:
    """One thing to tell mapnb about an item: ``kind`` is ``"started"``, ``"log"`` (with
    ``text``) or ``"finished"`` (with ``status``, ``attempts`` and, unless it succeeded,
    ``error``)."""

    index: int
    kind: str
    text: str = ""
    status: Status | None = None
    error: str | None = None
    attempts: int = 0


def changes(
    before: SubtaskState | None, now: SubtaskState, *, reported: bool, outputs_ready: bool
) -> list[Change]:
    """What an item's status and log panel gain between two reads of the execution.

    ``reported``: the item's end was told already. A subtask that succeeded on Flyte is
    ``finished`` only once ``outputs_ready`` (the map's outputs are read when the whole
    execution has ended); until then its log says so.
    """
    i = now.index
    out: list[Change] = []
    prev_logs = before.logs if before is not None else ()
    prev_attempts = before.attempts if before is not None else 0
    prev_phase = before.phase if before is not None else ""
    if _started(now) and (before is None or not _started(before)):
        out.append(Change(i, "started"))
    if now.attempts > max(prev_attempts, 1):
        text = f"[flyte] attempt {now.attempts} started (attempt {now.attempts - 1} failed)\n"
        out.append(Change(i, "log", text))
    elif now.phase != prev_phase and now.phase:
        out.append(Change(i, "log", f"[flyte] {now.phase.lower().replace('_', ' ')}\n"))
    if now.cache and (before is None or before.cache != now.cache):
        out.append(Change(i, "log", f"[flyte] cache: {now.cache}\n"))
    new_logs = now.logs[len(prev_logs) :] if now.logs[: len(prev_logs)] == prev_logs else now.logs
    for attempt, name, uri in new_logs:
        out.append(Change(i, "log", f"[flyte] attempt {attempt} log ({name}): {uri}\n"))
    if now.status.final and not reported:
        if now.status not in (Status.SUCCEEDED, Status.CACHED):
            out.append(Change(i, "finished", status=now.status, error=now.error, attempts=now.attempts))
        elif outputs_ready:
            out.append(Change(i, "finished", status=now.status, attempts=now.attempts))
        elif before is None or before.status is not now.status:
            out.append(Change(i, "log", "[flyte] done; its output comes when the whole map has ended\n"))
    return out


class Follower:
    """Successive reads of one execution -> the changes to report, each item's end once.

    Parameters
    ----------
    n : int
        The number of items.
    retries : int
        The subtasks' retries (see :func:`subtask_states`).
    """

    def __init__(self, n: int, retries: int = 0) -> None:
        self.n = n
        self.retries = retries
        self.states: list[SubtaskState | None] = [None] * n
        self.reported = [False] * n

    def update(
        self,
        task_executions: Iterable[Any],
        *,
        execution_phase: int | None = None,
        execution_error: str | None = None,
        outputs_ready: bool = False,
    ) -> list[Change]:
        """The changes since the last read (see :func:`subtask_states` for the arguments;
        ``outputs_ready``: the execution has ended and its outputs were read)."""
        now = subtask_states(
            task_executions,
            self.n,
            execution_phase=execution_phase,
            execution_error=execution_error,
            retries=self.retries,
        )
        out: list[Change] = []
        for i, state in enumerate(now):
            found = changes(self.states[i], state, reported=self.reported[i], outputs_ready=outputs_ready)
            self.reported[i] = self.reported[i] or any(c.kind == "finished" for c in found)
            self.states[i] = state
            out += found
        return out

    @property
    def done(self) -> bool:
        """Every item's end has been reported."""
        return all(self.reported)


def _started(s: SubtaskState) -> bool:
    return s.status is not Status.QUEUED


def outputs_by_index(values: Sequence[Any] | None, n: int) -> list[Any]:
    """The map's output list as one value per item (None where there is none)."""
    values = list(values or [])
    return [values[i] if i < len(values) else None for i in range(n)]
