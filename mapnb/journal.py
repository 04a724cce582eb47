"""Run journals, for recovery: every run writes down its items' outcomes as they come.

All runs of a user share one SQLite database, ``MAPNB_HOME/journal.sqlite``
(``MAPNB_HOME`` defaults to ``$XDG_DATA_HOME/mapnb`` or ``~/.local/share/mapnb``):

- ``runs``: per run, what is needed to run it again: the function, the mapped names and
  inputs, the options (cloudpickle), and a fingerprint of the items;
- ``outcomes``: the items that succeeded, with their outputs, a row per batch (one
  pickle per batch keeps the cost per item to a fraction of a microsecond). An output
  whose pickle is over ``INLINE_BYTES`` (1 MiB) is kept in a file of the run's folder,
  ``runs/<run id>/outputs/``, not in the database.

One background thread per process writes both, in batched transactions, so the engine
never waits for the disk; SQLite in WAL mode keeps the file consistent when a process
dies, and lets several processes write. :func:`mapnb.recover` rebuilds a run, even after
the process that ran it died: succeeded items come from the journal, the others run
again. The newest ``MAPNB_KEEP_RUNS`` runs are kept (default 100). Like the cache, these
are pickles: do not recover runs from a database others can write to.

A run's other files (intra-task checkpoints) live in ``MAPNB_HOME/runs/<run id>/``.
"""

from __future__ import annotations

import array
import atexit
import hashlib
import logging
import operator
import os
import pickle
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import _pickling
from ._sqlite import is_damaged, move_aside, warn_once
from .events import Status
from .state import Columns, RunState, consecutive

log = logging.getLogger(__name__)

_BATCH_SECONDS = 0.05  # outcomes gather this long before one transaction writes them
_PRUNE_EVERY = 20  # runs started between two prunings
_CACHE_KIB = 256  # SQLite page cache of the journal's connection


def home() -> Path:
    """``MAPNB_HOME``, else ``$XDG_DATA_HOME/mapnb``, else ``~/.local/share/mapnb``."""
    env = os.environ.get("MAPNB_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mapnb"


def run_dir(run_id: str) -> Path:
    """The folder for a run's own files (checkpoints)."""
    return home() / "runs" / run_id


def _items_pickle(names: tuple[str, ...], inputs: Sequence[tuple[Any, ...]]) -> bytes:
    return _pickling.dumps((names, _pickling.Rows(inputs)))


def fingerprint(names: tuple[str, ...], inputs: Sequence[tuple[Any, ...]], items: bytes | None = None) -> str:
    """What identifies a run's items: their names and pickled inputs (``items``, if pickled already)."""
    return hashlib.sha256(items if items is not None else _items_pickle(names, inputs)).hexdigest()


def same_items(fp: str, names: tuple[str, ...], inputs: Sequence[tuple[Any, ...]]) -> bool:
    """Whether ``fp`` (a journaled :func:`fingerprint`) is that of these items; journals
    written by mapnb 0.1.0 pickled every input with cloudpickle, so that is tried too."""
    if fp == fingerprint(names, inputs):
        return True
    import cloudpickle

    return fp == hashlib.sha256(cloudpickle.dumps((names, list(inputs)), protocol=5)).hexdigest()


class JournalError(OSError):
    """The run journal cannot be read (the message says what is wrong and what to do)."""


_repair_lock = threading.Lock()  # one repair at a time: the writer thread and the caller's
_checked: set[Path] = set()  # journals this process has opened once in the caller's thread


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The writer only appends: SQLite's default page cache (2 MB per connection) bought
        # nothing but a driver that grew with the journal until the cache was full.
        db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        with db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, names TEXT, n INTEGER, "
                "fingerprint TEXT, created REAL, spec BLOB)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS outcomes (run_id TEXT, seq INTEGER PRIMARY KEY, batch BLOB)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS outcomes_run ON outcomes (run_id)")
    except BaseException:
        db.close()
        raise
    return db


def _connect(path: Path) -> sqlite3.Connection:
    """Open the journal at ``path``, creating it; a damaged file is moved aside and a new
    journal built in its place (with a warning)."""
    with _repair_lock:
        try:
            return _open(path)
        except sqlite3.DatabaseError as e:
            if not is_damaged(e):
                raise
            _set_aside(path, e)
            return _open(path)


def _set_aside(path: Path, error: BaseException) -> Path:
    aside = move_aside(path)
    warn_once(
        f"journal-damaged:{aside}",
        f"mapnb journal: {path} was damaged ({error}); it was moved aside to {aside.name} and a "
        "new journal started (runs journaled before it cannot be recovered)",
    )
    return aside


def _unusable(path: Path, error: BaseException) -> None:
    """The journal cannot be written: say so once; the runs go on without it."""
    log.debug("mapnb: could not write the run journal %s", path, exc_info=error)
    warn_once(
        f"journal:{path}",
        f"mapnb journal: cannot write the run journal {path} ({error}); runs go on, but "
        "mapnb.recover() cannot rebuild them. Set MAPNB_HOME to a folder you can write to, "
        "or MAPNB_JOURNAL=0 to turn journaling off.",
    )


def _check(path: Path) -> None:
    """Open the journal once in the caller's thread, so that trouble is reported where the
    user sees it (under the notebook cell) when their first run starts."""
    if path in _checked:
        return
    _checked.add(path)
    try:
        _connect(path).close()
    except Exception as e:
        _unusable(path, e)


INLINE_BYTES = 1 << 20  # outputs whose pickle is larger go to files beside the journal


class _Spilled(NamedTuple):
    """Stands for an output kept in a file of its run's folder, not in the journal."""

    file: str


def _pickle_records(run_id: str, records: list[tuple[Any, ...]]) -> bytes:
    """One pickle for (index, output, attempts, duration) records: plain pickle first
    (fast), cloudpickle for notebook classes; what neither can pickle is left out."""
    try:
        return pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        good = []
        for rec in records:
            try:
                cloudpickle.dumps(rec[1], protocol=pickle.HIGHEST_PROTOCOL)
                good.append(rec)
            except Exception as e:
                log.warning("run %s: item %s's output cannot be journaled (%s)", run_id, rec[0], e)
        return cloudpickle.dumps(good, protocol=pickle.HIGHEST_PROTOCOL)


def _dump_batch(run_id: str, records: list[tuple[Any, ...]]) -> bytes:
    """The journal row for a batch of records. An output whose pickle is over
    ``INLINE_BYTES`` is written to a file in the run's folder and the row holds its name:
    a 300 MB output would otherwise be written whole into the database, and again into its
    write-ahead log."""
    blob = _pickle_records(run_id, records)
    if len(blob) <= INLINE_BYTES:
        return blob
    kept = []
    for rec in records:
        one = blob if len(records) == 1 else _pickle_records(run_id, [rec])
        if len(one) <= INLINE_BYTES:
            kept.append(rec)
            continue
        folder = run_dir(run_id) / "outputs"
        name = f"{rec[0]}-{rec[2]}.pkl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.{os.getpid()}"
            tmp.write_bytes(one)
            os.replace(tmp, folder / name)  # whole or absent, even if the process dies now
        except OSError as e:
            log.warning(
                "run %s: item %s's output (%d bytes) cannot be journaled (%s)", run_id, rec[0], len(one), e
            )
            continue
        kept.append((rec[0], _Spilled(name), rec[2], rec[3]))
    return _pickle_records(run_id, kept)


def _blobs(
    run_id: str,
    batch: list[tuple[int, Any, int, float | None]],
    state: RunState | None,
    succeeded: array.array[int],
) -> list[bytes]:
    """The journal rows of one flush: the records made on the engine's thread, and the
    succeeded items' fields read from the run's state, column by column."""
    out = [_dump_batch(run_id, batch)] if batch else []
    if succeeded and state is not None:
        out.append(_dump_columns(run_id, state, succeeded))
    return out


def _dump_columns(run_id: str, state: RunState, idx: array.array[int]) -> bytes:
    """``("cols", indices, outputs, attempts, durations)`` pickled (NaN: no duration):
    one tuple per column, gathered in C, not a tuple per item (a third of the journal's
    cost per item). What that cannot hold (unpicklable or large outputs) takes the
    record path, which leaves out or spills them."""
    # The floats as stored (NaN, no None check per item), by array's own __getitem__; not
    # through a memoryview, whose export would stop the engine growing the array.
    raw, floats = array.array.__getitem__, state.durations
    outputs: Sequence[Any]
    attempts: Sequence[Any]
    run = consecutive(idx)
    if run is not None:  # the usual batch: slices
        outputs, attempts = state.outputs[run], raw(state.attempts, run).tolist()
        durations = raw(floats, run).tolist()
    else:
        get = operator.itemgetter(*idx)
        outputs, attempts = get(state.outputs), get(state.attempts)
        durations = [raw(floats, i) for i in idx]
        if len(idx) == 1:  # itemgetter of one index gives the value itself
            outputs, attempts = (outputs,), (attempts,)
    try:
        blob = pickle.dumps(("cols", idx.tobytes(), outputs, attempts, durations), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        blob = b""
    if blob and len(blob) <= INLINE_BYTES:
        return blob
    nan = [None if x != x else x for x in durations]
    return _dump_batch(run_id, list(zip(idx, outputs, attempts, nan)))


def _records_of(loaded: Any) -> Any:
    """The records of a journal row: a list of ``(index, output, attempts, duration)``,
    or the columns :func:`_dump_columns` wrote, as such records."""
    if type(loaded) is not tuple or not loaded or loaded[0] != "cols":
        return loaded
    _, raw, outputs, attempts, durations = loaded
    idx = array.array("q")
    idx.frombytes(raw)
    return zip(idx, outputs, attempts, [None if x != x else x for x in durations])


def _load_spilled(run_id: str, spilled: _Spilled) -> Any:
    with open(run_dir(run_id) / "outputs" / spilled.file, "rb") as f:
        ((_, output, _, _),) = pickle.load(f)
    return output


class _Writer:
    """The process's one journal writer: a thread that owns the database connection."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unpruned = 0  # runs written since the last pruning

    def put(self, op: tuple[Any, ...]) -> None:
        if op[0] in ("run", "grow"):  # the thread is started (again, after a fork) with each run
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="mapnb-journal", daemon=True)
                    self._thread.start()
        self._queue.put(op)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything queued so far is written."""
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait(timeout)

    def _loop(self) -> None:
        db: sqlite3.Connection | None = None
        path: Path | None = None
        while True:
            ops = self._gather()
            want = home() / "journal.sqlite"
            # A lone flush has nothing to write (unless runs wait for their pruning).
            busy = any(op[0] != "flush" for op in ops) or (self._unpruned and db is not None and path == want)
            if busy:
                db, path = self._write_or_give_up(db, path, want, ops)
            for op in ops:
                if op[0] == "flush":
                    op[1].set()

    def _gather(self) -> list[tuple[Any, ...]]:
        """The next operation and all that queued behind it."""
        ops = [self._queue.get()]
        if ops[0][0] == "items":
            time.sleep(_BATCH_SECONDS)  # let more gather: one transaction for all
        while True:
            try:
                ops.append(self._queue.get_nowait())
            except queue.Empty:
                return ops

    def _write_or_give_up(
        self, db: sqlite3.Connection | None, path: Path | None, want: Path, ops: list[tuple[Any, ...]]
    ) -> tuple[sqlite3.Connection | None, Path | None]:
        """Write ``ops`` to the journal at ``want``: reconnect once, set a damaged file aside
        once, else warn that the journal is unusable and go on without it."""
        for attempt in range(3):
            try:
                if db is None or path != want:
                    _close(db)
                    db, path = _connect(want), want
                self._write(db, ops)
                return db, path
            except Exception as e:  # a full disk, a read-only home: the runs go on without it
                _close(db)
                db = None  # connect again next time
                if is_damaged(e) and attempt == 0:
                    continue  # a new connection first: the file may have been replaced
                if is_damaged(e) and attempt == 1 and want.exists():
                    with _repair_lock:
                        _set_aside(want, e)
                    continue
                _unusable(want, e)
                break
        return db, path

    def _write(self, db: sqlite3.Connection, ops: list[tuple[Any, ...]]) -> None:
        runs, rows, grown = [], [], []
        for op in ops:
            if op[0] == "run":
                runs.append(self._run_row(*op[1:]))
            elif op[0] == "grow":  # the run grew (run.extend): its items and n, anew
                run_id, names, n, fp, _, blob = self._run_row(*op[1:])
                grown.append((names, n, fp, blob, run_id))
            elif op[0] == "items":
                rows += [(op[1], blob) for blob in _blobs(*op[1:])]
        with db:
            if runs:
                db.executemany("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)", runs)
            if grown:
                db.executemany("UPDATE runs SET names = ?, n = ?, fingerprint = ?, spec = ? WHERE run_id = ?", grown)
            if rows:
                db.executemany("INSERT INTO outcomes (run_id, batch) VALUES (?, ?)", rows)
        self._unpruned += len(runs)
        # Every _PRUNE_EVERY runs, and whenever someone waits for the journal (read(), exit):
        # what a reader sees never depends on how the writes happened to be batched.
        if self._unpruned >= _PRUNE_EVERY or (self._unpruned and any(op[0] == "flush" for op in ops)):
            self._unpruned = 0
            _prune(db)

    @staticmethod
    def _run_row(run_id: str, names: tuple[str, ...], n: int, spec: dict[str, Any] | None) -> tuple[Any, ...]:
        blob, fp = None, None
        if spec is not None:
            import cloudpickle

            try:  # the items are pickled once: for the fingerprint, and kept as they are
                items = _items_pickle(spec["names"], spec["inputs"])
                fp = fingerprint(spec["names"], spec["inputs"], items)
                rest = {k: v for k, v in spec.items() if k not in ("names", "inputs")}
                blob = cloudpickle.dumps((rest, items), protocol=5)
            except Exception as e:  # a lambda holding a lock...: outcomes are journaled all the same
                log.info("run %s: cannot save its function and inputs for mapnb.recover(): %s", run_id, e)
        return (run_id, ",".join(names), n, fp, time.time(), blob)


def _close(db: sqlite3.Connection | None) -> None:
    """Close ``db`` if open, quietly."""
    if db is not None:
        try:
            db.close()
        except sqlite3.Error:
            pass


_writer = _Writer()
atexit.register(_writer.flush)


def _prune(db: sqlite3.Connection) -> None:
    """Keep the newest MAPNB_KEEP_RUNS runs (and their folders)."""
    try:
        keep = max(1, int(os.environ.get("MAPNB_KEEP_RUNS", "100")))
    except ValueError:
        keep = 100
    old = [
        r for (r,) in db.execute("SELECT run_id FROM runs ORDER BY created DESC LIMIT -1 OFFSET ?", (keep,))
    ]
    if not old:
        return
    with db:
        db.executemany("DELETE FROM outcomes WHERE run_id = ?", [(r,) for r in old])
        db.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in old])
    for r in old:
        shutil.rmtree(run_dir(r), ignore_errors=True)


class Journal:
    """One run's entries, collected on the engine's thread and handed to the writer in
    batches (:meth:`flush`, at each turn of the engine's loop)."""

    def __init__(
        self, run_id: str, names: tuple[str, ...], n: int, spec: dict[str, Any] | None, *, new: bool = True
    ) -> None:
        self.run_id = run_id
        self._batch: list[tuple[int, Any, int, float | None]] = []
        self._spec = spec  # what recover() needs, written again when the run grows
        self._succeeded = array.array("q")  # items_succeeded's indices, fields read by the writer
        self._state: RunState | None = None
        _check(home() / "journal.sqlite")
        # A recovered run has its entry already (this one is ignored, and pickles nothing).
        _writer.put(("run", run_id, names, n, spec if new else None))

    def record(self, index: int, output: Any, attempts: int, duration: float | None) -> None:
        """An item succeeded."""
        self._batch.append((index, output, attempts, duration))

    def item_final(self, i: int, status: Status, state: RunState) -> None:
        """The engine's observer hook: what succeeded (or came from the cache) is kept."""
        if status is Status.SUCCEEDED or status is Status.CACHED:
            self._batch.append((i, state.outputs[i], state.attempts[i], state.durations[i]))

    def items_added(self, start: int, count: int, state: RunState) -> None:
        """The engine's observer hook: the run grew; its entry gets the new items (a copy:
        the writer pickles it later, while the run may grow again)."""
        if self._spec is None:
            return
        n = state.n
        axes = [list(a) for a in state.axes] if state.axes is not None else None
        inputs = state.inputs
        head = inputs.head(n) if isinstance(inputs, Columns) else list(inputs[:n])
        spec = {**self._spec, "inputs": head, "axes": axes, "shapes": list(state.shapes)}
        _writer.put(("grow", self.run_id, state.names, n, spec))

    def items_succeeded(self, indices: Sequence[int], state: RunState) -> None:
        """Items ``indices`` succeeded (the engine's batch of :meth:`item_final` calls).

        Only their indices are kept (8 bytes each, no objects): the writer's thread reads
        their fields from ``state``, which no longer change once an item succeeded."""
        self._state = state
        self._succeeded.extend(indices)

    def flush(self) -> None:
        if self._batch or self._succeeded:
            batch, self._batch = self._batch, []
            succeeded, self._succeeded = self._succeeded, array.array("q")
            _writer.put(("items", self.run_id, batch, self._state, succeeded))

    def close(self) -> None:
        """The run ended. Nothing waits for the disk here: :func:`read` and the
        interpreter's exit do."""
        self.flush()


def read(run_id: str) -> tuple[dict[str, Any], dict[int, tuple[Any, int, float | None]]]:
    """A run's entry (names, n, fingerprint, spec blob) and its succeeded items as
    ``{index: (output, attempts, duration)}``.

    An output that cannot be unpickled is left out (the item will run again), with a
    warning.
    """
    _writer.flush()
    path = home() / "journal.sqlite"
    row = None
    try:
        if path.exists():
            db = sqlite3.connect(path, timeout=30)
            try:
                row = db.execute(
                    "SELECT names, n, fingerprint, spec FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                batches = [
                    b
                    for (b,) in db.execute(
                        "SELECT batch FROM outcomes WHERE run_id = ? ORDER BY seq", (run_id,)
                    )
                ]
            finally:
                db.close()
    except sqlite3.Error as e:  # say what is wrong, not a bare sqlite3 error
        if is_damaged(e):
            with _repair_lock:
                aside = _set_aside(path, e)
            raise JournalError(
                f"run {run_id!r} cannot be recovered: the run journal {path} is damaged ({e}); "
                f"it was moved aside to {aside.name} and a new journal started"
            ) from None
        raise JournalError(
            f"cannot read the run journal {path} to recover run {run_id!r}: {e} (MAPNB_HOME sets where it is)"
        ) from None
    if row is None:
        raise FileNotFoundError(f"no journal for run {run_id!r} in {path} (MAPNB_HOME)")
    meta = {"names": row[0], "n": row[1], "fingerprint": row[2], "spec": row[3]}
    done: dict[int, tuple[Any, int, float | None]] = {}
    for blob in batches:
        try:
            records = _records_of(pickle.loads(blob))
        except Exception as e:
            log.warning("run %s: a journaled batch could not be read (%s); its items run again", run_id, e)
            continue
        for idx, output, attempts, duration in records:
            if type(output) is _Spilled:
                try:
                    output = _load_spilled(run_id, output)
                except Exception as e:
                    log.warning(
                        "run %s: item %s's journaled output could not be read (%s); it runs again",
                        run_id,
                        idx,
                        e,
                    )
                    continue
            done[idx] = (output, attempts, duration)
    return meta, done


def load_run(meta: dict[str, Any], run_id: str) -> dict[str, Any]:
    """What a run's entry holds to run it again: fn, name, names, inputs, axes, options..."""
    if meta["spec"] is None:
        raise FileNotFoundError(
            f"run {run_id!r} cannot be rebuilt on its own: its function or inputs could not be "
            "pickled. Submit it again with MapTask.submit(..., recover=run_id)."
        )
    rest, items = pickle.loads(meta["spec"])
    names, inputs = pickle.loads(items)
    return {**rest, "names": names, "inputs": inputs}
