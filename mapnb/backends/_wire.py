"""Pickling what crosses to other processes: jobs and inputs out, outputs back.

Shared by the backends whose items run in other processes (local, dask). A failure to
pickle an input or to unpickle an output fails that item alone, with a message saying so.
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from typing import Any

from ..errors import ItemError
from ..worker import FINISHED
from .base import ReportFn, Task


def dumps(obj: Any) -> bytes:
    """cloudpickle, so that functions and classes defined in a notebook travel by value."""
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=5)


def load_output(r: tuple[Any, ...]) -> tuple[Any, ...]:
    """A successful FINISHED record with its pickled output loaded (or failed, if it cannot be)."""
    try:
        value = pickle.loads(r[5])
    except Exception as e:
        err = ItemError(
            "serialization", type(e).__qualname__, f"the output could not be unpickled in the caller: {e}"
        )
        return (*r[:4], False, err, *r[6:])
    return (*r[:5], value, *r[6:])


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
            err = ItemError("serialization", type(e).__qualname__, msg)
            failed.append((FINISHED, task.id, item[0], item[1], False, err, now, now))
    report(failed)
    return dataclasses.replace(task, items=tuple(good))
