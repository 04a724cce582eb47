"""Items run in threads of the calling process: for I/O-bound work (downloads, API calls).

Python cannot kill a thread. When an item times out, or the run is aborted or cancelled,
the engine records the outcome and frees the slot at once; the abandoned thread finishes
its current item in the background (its result is ignored) and starts no further item.
"""

from __future__ import annotations

import threading

from ..protocol import Ended
from ..worker import Hooks, run_items
from .base import Backend, ReportFn, Task
from .inprocess import DirectEmitter, routed_output


class ThreadBackend(Backend):
    """One thread per task; concurrency bounds how many run at once."""

    name = "threads"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self._abandoned: set[int] = set()

    def default_concurrency(self) -> int:
        return 8  # I/O-bound work waits more than it computes

    def submit(self, task: Task, report: ReportFn) -> None:
        with self._lock:
            self._running.add(task.id)
        threading.Thread(
            target=self._run, args=(task, report), name=f"mapnb-task-{task.id}", daemon=True
        ).start()

    def _run(self, task: Task, report: ReportFn) -> None:
        with routed_output() as set_capture:
            lane = Hooks(DirectEmitter(task.id, report), set_capture, stop=lambda: task.id in self._abandoned)
            run_items(task.job, task.items, lane)
        with self._lock:
            abandoned = task.id in self._abandoned
            self._abandoned.discard(task.id)
            self._running.discard(task.id)
        if not abandoned:
            report([Ended(task.id)])

    def kill(self, task_id: int) -> None:
        with self._lock:
            if task_id in self._running:
                self._abandoned.add(task_id)
