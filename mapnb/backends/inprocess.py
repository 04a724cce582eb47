"""What the in-process backends (sequential, threads) share: output routing and reporting."""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ItemError
from ..protocol import Finished, Log, Started
from ..worker import Capture, MetricBuffer, Router
from .base import ReportFn

_tls = threading.local()
_lock = threading.Lock()
_users = 0
_installed: list[tuple[Router, Router]] = []
_retired: list[tuple[Router, Router]] = []


def _current() -> Capture | None:
    return getattr(_tls, "capture", None)


def _set_capture(cap: Capture | None) -> None:
    _tls.capture = cap


@contextlib.contextmanager
def routed_output() -> Iterator[Callable[[Capture | None], None]]:
    """Route ``sys.stdout``/``sys.stderr`` per thread while any in-process item may run.

    Yields the function that sets the calling thread's capture. Text from threads not
    running an item passes through to the streams that were there before.
    """
    global _users
    with _lock:
        # Someone (pytest, IPython, contextlib.redirect_stdout) may have replaced the
        # streams since we installed ours: route in front of whatever is there now.
        if not (isinstance(sys.stdout, Router) and isinstance(sys.stderr, Router)):
            pair = (Router("stdout", sys.stdout, _current), Router("stderr", sys.stderr, _current))
            sys.stdout, sys.stderr = pair
            _installed.append(pair)
        _users += 1
    try:
        yield _set_capture
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                # Put the old streams back unless someone replaced ours meanwhile.
                for out, err in reversed(_installed):
                    if sys.stdout is out:
                        sys.stdout = out.fallback
                    if sys.stderr is err:
                        sys.stderr = err.fallback
                # Keep the routers alive a while: print() holds a borrowed reference to
                # sys.stdout, so a thread printing right now would use a freed object
                # (a crash, seen with items abandoned by pruning or timeouts).
                _retired.extend(_installed)
                del _retired[:-16]
                _installed.clear()


_FLUSH_INTERVAL = 0.05  # as the Outbox's: reported metrics reach the engine this often
_dirty: weakref.WeakSet[DirectEmitter] = weakref.WeakSet()
_dirty_cond = threading.Condition()
_flusher: list[threading.Thread] = []


def _flush_metrics() -> None:
    """The one thread that sends in-process items' reported metrics, in batches."""
    while True:
        with _dirty_cond:
            while not _dirty:
                _dirty_cond.wait()
        threading.Event().wait(_FLUSH_INTERVAL)  # collect a batch
        with _dirty_cond:
            emitters = list(_dirty)
            _dirty.clear()
        for e in emitters:
            e.flush_metrics()


class DirectEmitter:
    """An emitter that reports each event straight to the engine, and reported metrics
    in batches (a tight loop of ``mapnb.report`` must not flood the engine)."""

    __slots__ = ("task_id", "report", "_metrics", "_lock", "__weakref__")

    def __init__(self, task_id: int, report: ReportFn) -> None:
        self.task_id, self.report = task_id, report
        self._metrics = MetricBuffer()
        self._lock = threading.Lock()  # a batch of metrics is sent before the item's outcome

    def metrics(self, index: int, attempt: int, step: int, values: dict[str, float]) -> None:
        with self._lock:
            fresh = not self._metrics.pending
            self._metrics.add(index, attempt, step, values)
        if fresh:
            with _dirty_cond:
                _dirty.add(self)
                if not _flusher:
                    _flusher.append(threading.Thread(target=_flush_metrics, name="mapnb-metrics", daemon=True))
                    _flusher[0].start()
                _dirty_cond.notify()

    def flush_metrics(self) -> None:
        with self._lock:
            recs = self._metrics.take(self.task_id)
            if recs:
                self.report(list(recs))

    def started(self, index: int, attempt: int, t0: float) -> None:
        self.report([Started(self.task_id, index, attempt, t0)])

    def log(self, index: int, attempt: int, stream: str, text: str) -> None:
        self.report([Log(self.task_id, index, attempt, stream, text)])

    def finished(
        self, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float, t1: float
    ) -> None:
        done = Finished(self.task_id, index, attempt, ok, value if ok else error, t0, t1)
        with self._lock:
            self.report([*self._metrics.take(self.task_id, (index, attempt)), done])
