"""What the cache and the journal share about their SQLite files: telling a damaged file
from an unusable place, moving a damaged file aside, and warning about either once.

A store that fails must never fail the user's run: the run goes on without it, and the
user is told once per process and place (with :func:`warnings.warn`, which a notebook
shows under the cell), not with a traceback per write.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
import warnings
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

_warned: set[str] = set()
_lock = threading.Lock()


def is_damaged(error: BaseException) -> bool:
    """Whether ``error`` says the database file itself is damaged ("file is not a
    database", "database disk image is malformed"), as opposed to a place that cannot be
    used (read-only, full, missing, locked: ``sqlite3.OperationalError``)."""
    return type(error) is sqlite3.DatabaseError


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its ``-wal``/``-shm`` companions) out of the way,
    so a new one can be built in its place; return where it went."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))
    return aside


def warn_once(key: str, message: str) -> None:
    """Warn (:class:`UserWarning`) the first time ``key`` comes up in this process; log
    the later times at debug level. The warning points at the user's line that started
    the run, not at mapnb's insides (from a background thread: at mapnb)."""
    with _lock:
        first = key not in _warned
        _warned.add(key)
    if not first:
        log.debug("%s", message)
        return
    package = str(Path(__file__).parent)
    frame: FrameType | None = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level if frame is not None else 1)
