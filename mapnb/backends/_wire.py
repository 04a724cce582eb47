"""Pickling what crosses to other processes: jobs and inputs out, outputs back.

Shared by the backends whose items run in other processes (local, dask). A failure to
pickle an input or to unpickle an output fails that item alone, with a message saying so.
"""

from __future__ import annotations

import dataclasses
import operator
import pickle
import time
from typing import Any

from .. import _pickling
from ..errors import ErrorKind, ItemError
from ..protocol import FAILED, FINISHED, OK, OUTCOMES, PICKLED, Ended, Finished, Outcomes
from .base import ReportFn, Task


def dumps(obj: Any) -> bytes:
    """Pickled so that functions and classes defined in a notebook travel by value
    (cloudpickle), in C where nothing needs that (:func:`mapnb._pickling.dumps`)."""
    return _pickling.dumps(obj)


def load_output(r: Finished) -> Finished:
    """A successful Finished record with its pickled output loaded (or failed, if it cannot be).

    Records arrive here as plain tuples (see :mod:`mapnb.protocol`), and leave as such.
    """
    kind, task_id, index, attempt, _ok, blob, *times = r
    try:
        return (kind, task_id, index, attempt, True, pickle.loads(blob), *times)  # type: ignore[return-value]
    except Exception as e:
        err = ItemError(
            ErrorKind.SERIALIZATION, type(e).__qualname__, f"the output could not be unpickled in the caller: {e}"
        )
        return (kind, task_id, index, attempt, False, err, *times)  # type: ignore[return-value]


def load_outputs(records: list[Any]) -> list[Any]:
    """A batch of report records with every successful output loaded (``r[4]``: ``ok``;
    in an Outcomes record, the rows whose output is still PICKLED)."""
    return [
        load_output(r) if r[0] == FINISHED and r[4] else _load_rows(r) if r[0] == OUTCOMES else r for r in records
    ]


_CODE = operator.itemgetter(2)  # an outcome row's OK, FAILED or PICKLED


def _load_rows(r: Outcomes) -> Outcomes:
    """An Outcomes record whose PICKLED outputs are loaded: OK, or FAILED with a
    serialization error when one cannot be (that item alone)."""
    kind, task_id, rows = r
    if PICKLED not in set(map(_CODE, rows)):  # raw outputs only (a trivial map's): nothing to do
        return r
    for k, (index, attempt, ok, value, t0, t1) in enumerate(rows):
        if ok == PICKLED:
            try:
                rows[k] = (index, attempt, OK, pickle.loads(value), t0, t1)
            except Exception as e:
                err = ItemError(
                    ErrorKind.SERIALIZATION,
                    type(e).__qualname__,
                    f"the output could not be unpickled in the caller: {e}",
                )
                rows[k] = (index, attempt, FAILED, err, t0, t1)
    return r


def dump_job(task: Task, report: ReportFn, where: str) -> bytes | None:
    """The task's job pickled; None (the task reported as failed) when it cannot be."""
    try:
        return dumps(task.job)
    except Exception as e:
        job_unpicklable(task, report, where, e)
        return None


def job_unpicklable(task: Task, report: ReportFn, where: str, e: Exception) -> None:
    """End ``task``, every item failed: its job could not be pickled (``e``) to send to ``where``."""
    msg = f"the task function could not be pickled to send to {where}: {e}"
    report([Ended(task.id, ItemError(ErrorKind.SERIALIZATION, type(e).__qualname__, msg), all_items=True)])


def dump_items(task: Task, report: ReportFn, where: str) -> tuple[Task, bytes | None]:
    """The task's items pickled. Items whose inputs cannot be pickled fail alone; the
    task comes back without them (and None, the task ended, when none is left)."""
    try:
        return task, dumps(task.items)
    except Exception:
        task = drop_unpicklable(task, report, where)
        if not task.items:
            report([Ended(task.id)])
            return task, None
        return task, dumps(task.items)


def drop_unpicklable(task: Task, report: ReportFn, where: str) -> Task:
    """Fail the items whose inputs cannot be pickled to send to ``where``; keep the others."""
    good, failed = [], []
    for item in task.items:
        try:
            dumps(item)
            good.append(item)
        except Exception as e:
            msg = f"the inputs could not be pickled to send to {where}: {e}"
            now = time.monotonic()
            err = ItemError(ErrorKind.SERIALIZATION, type(e).__qualname__, msg)
            failed.append(Finished(task.id, item[0], item[1], False, err, now, now))
    report(failed)
    return dataclasses.replace(task, items=tuple(good))
