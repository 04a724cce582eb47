"""mapnb: Flyte-style map tasks that really run in parallel, from a notebook or a script.

>>> from mapnb import map_task
>>> df = map_task(process, concurrency=4)(value=["a", "b", "c"])  # doctest: +SKIP

See the README for a tour. ``import mapnb`` stays light: pandas, IPython and the
backends are imported when first used.
"""

from __future__ import annotations

import logging

from .api import MapTask, TaskFunction, map_task, recover, task
from .backends import Backend, get_backend, register_backend
from .context import Checkpoint, TaskContext, current_context, report
from .errors import (
    BackendError,
    InvalidMapError,
    ItemError,
    MapnbError,
    MapTaskError,
    NotRetried,
    RemoteError,
    RunInterrupted,
)
from .events import Status
from .prune import MedianStopping
from .resources import Resources
from .run import MapRun, last_run, set_display_hook

__version__ = "0.1.0"

# A library logs; what reaches the screen is the application's choice.
logging.getLogger(__name__).addHandler(logging.NullHandler())


class _NotebookLayer:
    """How a run displays itself: the notebook layer (widget, grid), imported on first use,
    registered here so that no module below it imports it."""

    def grid(self, run: MapRun) -> object:
        from .jupyter.widget import run_grid

        return run_grid(run)

    def static(self, run: MapRun) -> dict[str, object]:
        from .jupyter.grid import static_bundle

        return static_bundle(run)

    def wait(self, run: MapRun, progress: bool | None) -> None:
        from .jupyter.progress import show_progress

        show_progress(run, progress)


set_display_hook(_NotebookLayer())
def __getattr__(name: str) -> object:
    # ``mapnb.record`` (called inside notebooks that mapnb.notebooks runs) and
    # ``mapnb.notebooks`` load on first use, so that ``import mapnb`` stays light.
    if name == "record":
        from ._record import record

        return record
    if name == "notebooks":
        import importlib

        return importlib.import_module(".notebooks", __name__)
    raise AttributeError(f"module 'mapnb' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext mapnb`` registers the ``%%map_task`` cell magic."""
    from .jupyter.magic import load_ipython_extension as load

    load(ipython)


__all__ = [
    "Backend",
    "BackendError",
    "Checkpoint",
    "InvalidMapError",
    "ItemError",
    "MapRun",
    "MapTask",
    "MapTaskError",
    "MapnbError",
    "MedianStopping",
    "NotRetried",
    "RemoteError",
    "Resources",
    "RunInterrupted",
    "Status",
    "TaskContext",
    "TaskFunction",
    "current_context",
    "get_backend",
    "last_run",
    "map_task",
    "record",
    "recover",
    "register_backend",
    "report",
    "task",
]
