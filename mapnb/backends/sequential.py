"""Items run one after the other in the engine's thread: deterministic, for tests and debugging.

Same semantics as the other backends, with one difference that cannot be helped: a
running item cannot be interrupted, so a timeout is detected when the attempt returns
(it then fails as timed out, and may be retried) and cancel waits for the current item.
"""

from __future__ import annotations

from ..protocol import Ended
from ..worker import Hooks, run_items
from .base import Backend, ReportFn, Task
from .inprocess import DirectEmitter, routed_output


class SequentialBackend(Backend):
    """Runs each task to completion inside :meth:`submit`, in the engine's thread."""

    name = "sequential"

    def default_concurrency(self) -> int:
        return 1

    def submit(self, task: Task, report: ReportFn) -> None:
        with routed_output() as set_capture:
            run_items(task.job, task.items, Hooks(DirectEmitter(task.id, report), set_capture))
        report([Ended(task.id)])
