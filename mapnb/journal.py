"""Run journals, for recovery: every run writes down its items' outcomes as they come.

A run's folder is ``MAPNB_HOME/runs/<run id>/`` (``MAPNB_HOME`` defaults to
``$XDG_DATA_HOME/mapnb`` or ``~/.local/share/mapnb``):

- ``run.pkl``: what is needed to run it again: the function, the mapped names and
  inputs, the options (cloudpickle; written when the run starts);
- ``journal.sqlite``: one row per item that succeeded, with its output, written in
  batches by a background thread as items finish (SQLite: crash-safe, readable while
  the run goes on).

:func:`mapnb.recover` rebuilds a run from its folder, even after the process that ran it
died: succeeded items come from the journal, the others run again. The newest
``MAPNB_KEEP_RUNS`` folders are kept (default 100). Like the cache, these are pickles:
do not recover runs from a folder others can write to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import queue
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_FLUSH_SECONDS = 0.05


def home() -> Path:
    """``MAPNB_HOME``, else ``$XDG_DATA_HOME/mapnb``, else ``~/.local/share/mapnb``."""
    env = os.environ.get("MAPNB_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mapnb"


def run_dir(run_id: str) -> Path:
    return home() / "runs" / run_id


def fingerprint(names: tuple[str, ...], inputs: list[tuple[Any, ...]]) -> str:
    """What identifies a run's items: their names and pickled inputs."""
    import cloudpickle

    return hashlib.sha256(cloudpickle.dumps((names, inputs), protocol=5)).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS outcomes (idx INTEGER PRIMARY KEY, output BLOB, attempts INTEGER, duration REAL)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    return db


def read(run_id: str) -> tuple[dict[str, str], dict[int, tuple[Any, int, float | None]]]:
    """A run's metadata and its succeeded items: ``{index: (output, attempts, duration)}``.

    An output that cannot be unpickled is left out (the item will run again), with a
    warning.
    """
    path = run_dir(run_id) / "journal.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no journal for run {run_id!r} in {path.parent.parent} (MAPNB_HOME)")
    db = sqlite3.connect(path, timeout=30)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        done: dict[int, tuple[Any, int, float | None]] = {}
        for idx, blob, attempts, duration in db.execute(
            "SELECT idx, output, attempts, duration FROM outcomes"
        ):
            try:
                done[idx] = (pickle.loads(blob), attempts, duration)
            except Exception as e:
                log.warning(
                    "run %s: item %s's journaled output could not be read (%s); it runs again", run_id, idx, e
                )
    finally:
        db.close()
    return meta, done


def load_run(run_id: str) -> dict[str, Any]:
    """What ``run.pkl`` holds: fn, name, names, inputs, axes, options, cache, backend."""
    path = run_dir(run_id) / "run.pkl"
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no journal for run {run_id!r} in {path.parent.parent} (MAPNB_HOME)")
    if not path.exists():
        raise FileNotFoundError(
            f"run {run_id!r} cannot be rebuilt on its own: {path} is missing (its function or inputs "
            "could not be pickled). Submit it again with MapTask.submit(..., recover=run_id)."
        )
    with open(path, "rb") as f:
        return pickle.load(f)


class Journal:
    """Writes one run's outcomes (off the engine's thread)."""

    def __init__(self, run_id: str, names: tuple[str, ...], n: int, spec: dict[str, Any] | None) -> None:
        self.run_id = run_id
        self.dir = run_dir(run_id)
        self._names, self._n, self._spec = names, n, spec
        self._queue: queue.SimpleQueue[tuple[int, Any, int, float | None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started = False
        self._lock = threading.Lock()
        self._ensure_writer()

    def _ensure_writer(self) -> None:
        with self._lock:  # (again) after close(): a run that is re-run writes on
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._write_loop, name=f"mapnb-journal-{self.run_id}", daemon=True
                )
                self._thread.start()

    def record(self, index: int, output: Any, attempts: int, duration: float | None) -> None:
        """An item succeeded (called from the engine's thread: only a queue put)."""
        self._ensure_writer()
        self._queue.put((index, output, attempts, duration))

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued; return when it is on disk."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self) -> sqlite3.Connection:
        if self._started:
            return _connect(self.dir / "journal.sqlite")
        self._started = True
        self.dir.mkdir(parents=True, exist_ok=True)
        _prune(self.dir.parent, keep=self.dir.name)
        db = _connect(self.dir / "journal.sqlite")
        spec = self._spec
        meta = {"names": ",".join(self._names), "n": str(self._n), "created": str(time.time())}
        if spec is not None:
            meta["fingerprint"] = fingerprint(spec["names"], spec["inputs"])
            try:
                import cloudpickle

                tmp = self.dir / "run.pkl.tmp"
                tmp.write_bytes(cloudpickle.dumps(spec, protocol=5))
                tmp.replace(self.dir / "run.pkl")
            except Exception as e:  # a lambda holding a lock, an open file...: record outcomes anyway
                log.info(
                    "run %s: cannot save its function and inputs for mapnb.recover(): %s", self.run_id, e
                )
        with db:
            db.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", meta.items())
        return db

    def _write_loop(self) -> None:
        try:
            db = self._start()
        except Exception:
            log.exception("run %s: no journal (recovery will not be possible)", self.run_id)
            while self._queue.get() is not None:  # keep the engine's puts cheap and harmless
                pass
            return
        import cloudpickle

        stop = False
        while not stop:
            batch = [self._queue.get()]
            deadline = time.monotonic() + _FLUSH_SECONDS
            while time.monotonic() < deadline:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            if None in batch:
                stop = True
            rows = []
            for rec in batch:
                if rec is None:
                    continue
                i, output, attempts, duration = rec
                try:
                    rows.append((i, cloudpickle.dumps(output, protocol=5), attempts, duration))
                except Exception as e:
                    log.warning("run %s: item %s's output cannot be journaled (%s)", self.run_id, i, e)
            if rows:
                try:
                    with db:
                        db.executemany("INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?)", rows)
                except sqlite3.Error:
                    log.exception("run %s: journal write failed", self.run_id)
        db.close()


def _prune(runs: Path, keep: str) -> None:
    """Keep the newest MAPNB_KEEP_RUNS run folders."""
    try:
        limit = int(os.environ.get("MAPNB_KEEP_RUNS", "100"))
    except ValueError:
        limit = 100
    try:
        folders = sorted(
            (p for p in runs.iterdir() if p.is_dir() and p.name != keep), key=lambda p: p.stat().st_mtime
        )
    except OSError:
        return
    for old in folders[: max(0, len(folders) - (limit - 1))]:
        shutil.rmtree(old, ignore_errors=True)
