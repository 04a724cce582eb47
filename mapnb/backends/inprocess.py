"""What the in-process backends (sequential, threads) share: output routing and reporting."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ItemError
from ..protocol import Finished, Log, Started
from ..worker import Capture, Router
from .base import ReportFn

_tls = threading.local()
_lock = threading.Lock()
_users = 0
_installed: list[tuple[Router, Router]] = []


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
                _installed.clear()


class DirectEmitter:
    """An emitter that reports each event straight to the engine."""

    __slots__ = ("task_id", "report")

    def __init__(self, task_id: int, report: ReportFn) -> None:
        self.task_id, self.report = task_id, report

    def started(self, index: int, attempt: int, t0: float) -> None:
        self.report([Started(self.task_id, index, attempt, t0)])

    def log(self, index: int, attempt: int, stream: str, text: str) -> None:
        self.report([Log(self.task_id, index, attempt, stream, text)])

    def finished(
        self, index: int, attempt: int, ok: bool, value: Any, error: ItemError | None, t0: float, t1: float
    ) -> None:
        self.report([Finished(self.task_id, index, attempt, ok, value if ok else error, t0, t1)])
