"""Subtask caching, as Flyte's ``cache=True`` map tasks have it: one entry per item.

An item's key covers the task's identity, its cache version and the item's inputs (bound
``functools.partial`` inputs included, ``cache_ignore_input_vars`` left out). With no
``cache_version``, the version is derived from the function's source, so editing the
function in the notebook starts a fresh set of entries.

Entries live in a diskcache ``Cache`` (SQLite plus files, safe across processes, writes
atomic) under ``MAPNB_CACHE_DIR``, by default ``~/.cache/mapnb``. Values are pickles:
never load a cache directory written by someone you do not trust. An entry that cannot
be read counts as a miss, with a warning in the log. A damaged database is moved aside
and rebuilt; a cache that cannot be used at all is warned about once and runs go uncached.

>>> import mapnb.cache
>>> mapnb.cache.info()  # doctest: +SKIP
{'directory': '/home/me/.cache/mapnb', 'entries': 2000, 'bytes': 1843200}
>>> mapnb.cache.clear()  # doctest: +SKIP
2000
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import pickle
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ._sqlite import is_damaged, move_aside, warn_once
from .events import Status
from .spec import CacheSettings, target_function

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # how long a cache_serialize claim lasts unless renewed
_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def directory() -> Path:
    """Where the cache lives: ``MAPNB_CACHE_DIR``, else ``$XDG_CACHE_HOME/mapnb`` or ``~/.cache/mapnb``."""
    env = os.environ.get("MAPNB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mapnb"


class CacheUnavailable(OSError):
    """The cache's directory or database cannot be used (the message says why and what to do)."""


def _store(path: Path | None = None) -> Any:
    """The diskcache store in ``path`` (default: :func:`directory`), opened once per process.

    A damaged database is moved aside and an empty one built in its place (with a warning);
    a place that cannot be used raises :class:`CacheUnavailable`.
    """
    path = path or directory()
    key = str(path)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _open(path)
        return store


def _open(path: Path) -> Any:
    import diskcache

    def build() -> Any:
        # Values are our own pickled bytes: diskcache stores them as they are.
        return diskcache.Cache(str(path), eviction_policy="none", size_limit=2**62)

    try:
        path.mkdir(parents=True, exist_ok=True)
        try:
            return build()
        except sqlite3.DatabaseError as e:
            if not is_damaged(e):
                raise
            db = path / "cache.db"
            aside = move_aside(db)
            warn_once(
                f"cache-damaged:{aside}",
                f"mapnb cache: {db} was damaged ({e}); it was moved aside to {aside.name} and an "
                "empty cache started in its place (earlier outputs will be computed again)",
            )
            return build()
    except (OSError, sqlite3.Error) as e:
        raise CacheUnavailable(
            f"cannot use the mapnb cache in {path}: {e}. Set MAPNB_CACHE_DIR to a folder you can "
            "write to, or repair or delete that one"
        ) from e


def _damaged_while_open(error: BaseException) -> None:
    """The open store's database turned out damaged: warn once, and open it afresh at the
    next run (a database damaged when opened is moved aside and rebuilt then)."""
    path = directory()
    with _stores_lock:
        _stores.pop(str(path), None)
    warn_once(
        f"cache-damaged-open:{path}",
        f"mapnb cache: the cache database in {path} is damaged ({error}); items are computed "
        "again. The next run rebuilds it (or delete that folder)",
    )


def _usable_store() -> Any | None:
    """The store, or None (with a warning, once per directory) when it cannot be used: the
    run then goes on uncached rather than failing."""
    try:
        return _store()
    except CacheUnavailable as e:
        warn_once(f"cache:{directory()}", f"{e}. Runs go on uncached until it can be used.")
        return None


def clear() -> int:
    """Remove every cached output; return how many entries there were."""
    return int(_store().clear())


def info() -> dict[str, Any]:
    """The cache's directory, number of entries and size on disk in bytes."""
    store = _store()
    entries = sum(1 for k in store.iterkeys() if isinstance(k, str) and k.startswith("out:"))
    return {"directory": str(directory()), "entries": entries, "bytes": int(store.volume())}


def _identity(fn: Any) -> tuple[str, str]:
    """(who the task is, a version derived from its code) for the function behind ``fn``."""
    fn = target_function(fn)
    if getattr(fn, "__mapnb_cell__", False):  # a %%map_task body: its source is all it is
        params = ",".join(inspect.signature(fn).parameters)
        return "%%map_task", hashlib.sha256(f"{params}\n{fn.body}".encode()).hexdigest()[:16]
    who = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    try:
        code = inspect.getsource(fn)
    except (OSError, TypeError):  # no source file: the compiled code stands in
        code_obj = getattr(fn, "__code__", None)
        code = repr((code_obj.co_code, code_obj.co_consts)) if code_obj is not None else who
    return who, hashlib.sha256(code.encode()).hexdigest()[:16]


def _bound(fn: Any) -> dict[str, Any]:
    """The inputs fixed by functools.partial (keywords, and positionals by position)."""
    out: dict[str, Any] = {}
    while isinstance(fn, functools.partial):
        out = {**fn.keywords, **out}
        if fn.args:
            out.update({f"__arg{i}": a for i, a in enumerate(fn.args)})
        fn = fn.func
    return out


class ItemCache:
    """The cache as one run uses it: keys per item, lookups, and writes off the engine thread."""

    def __init__(self, fn: Any, names: tuple[str, ...], settings: CacheSettings) -> None:
        import cloudpickle

        self.settings = settings
        self._dumps = functools.partial(cloudpickle.dumps, protocol=5)
        # None: the cache cannot be used and the run goes uncached (key() is then None for
        # every item, so no other method touches the store).
        self.store: Any = _usable_store()
        who, derived = _identity(fn)
        self._prefix = (who, settings.version if settings.version is not None else f"source:{derived}")
        self._names = names
        self._bound = {k: v for k, v in _bound(fn).items() if k not in settings.ignore}
        self._owner = uuid.uuid4().hex
        self._claims: set[str] = set()
        self._writes: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._next_renewal = time.monotonic() + LEASE_SECONDS / 3

    def key(self, args: tuple[Any, ...]) -> str | None:
        """The item's key, or None when its inputs cannot be pickled or there is no usable
        store (the item then is not cached)."""
        if self.store is None:
            return None
        inputs = {n: v for n, v in zip(self._names, args) if n not in self.settings.ignore}
        try:
            blob = self._dumps((self._prefix, sorted({**self._bound, **inputs}.items())))
        except Exception as e:
            log.warning("mapnb cache: an item's inputs cannot be pickled, so it is not cached: %s", e)
            return None
        return hashlib.sha256(blob).hexdigest()

    def get(self, key: str) -> tuple[bool, Any]:
        """(hit, output). An unreadable entry is a miss, with a warning."""
        try:
            blob = self.store.get(f"out:{key}")
            if blob is None:
                return False, None
            return True, pickle.loads(blob)
        except Exception as e:
            if is_damaged(e):  # the database, not one entry: say it once, not per item
                _damaged_while_open(e)
                return False, None
            log.warning("mapnb cache: entry %s could not be read (%s); computing the item again", key[:12], e)
            return False, None

    def put(self, key: str, output: Any) -> None:
        """Store an output (in the background); release our claim on the key after."""
        self._ensure_writer()
        self._writes.put((key, output))

    def _ensure_writer(self) -> None:
        with self._writer_lock:  # (again) after close(): a run that is re-run writes on
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, name="mapnb-cache", daemon=True)
                self._writer.start()

    # -- cache_serialize: one computation per key at a time, across processes -----------

    def claim(self, key: str) -> bool:
        """Try to become the one computing ``key``; False if someone else already is."""
        try:
            got = bool(self.store.add(f"claim:{key}", self._owner, expire=LEASE_SECONDS))
            if not got and self.store.get(f"claim:{key}") == self._owner:
                got = True
        except Exception as e:  # the store failed under us: compute, rather than wait forever
            warn_once(f"cache-claim:{directory()}", f"mapnb cache: cache_serialize cannot claim items ({e}); "
                      "items may be computed more than once")  # fmt: skip
            return True
        if got:
            self._claims.add(key)
        return got

    def claimed_elsewhere(self, key: str) -> bool:
        try:
            owner = self.store.get(f"claim:{key}")
        except Exception:  # unreadable: nobody we know of is computing it
            return False
        return owner is not None and owner != self._owner

    def release(self, key: str) -> None:
        """Give up a claim (the item failed or was cancelled): a waiter may compute it."""
        if key in self._claims:
            self._claims.discard(key)
            self._ensure_writer()
            self._writes.put((key, _RELEASE))

    def renew(self) -> None:
        """Keep our claims alive while their items run (called from the engine's loop)."""
        now = time.monotonic()
        if self._claims and now >= self._next_renewal:
            self._next_renewal = now + LEASE_SECONDS / 3
            for key in list(self._claims):
                try:
                    self.store.touch(f"claim:{key}", expire=LEASE_SECONDS)
                except Exception as e:
                    log.warning("mapnb cache: could not renew the claim on %s: %s", key[:12], e)

    def close(self, wait: bool = True) -> None:
        """Finish the pending writes (and give up claims still held)."""
        for key in list(self._claims):
            self.release(key)
        if self._writer is None:
            return
        self._writes.put(None)
        if wait:
            self._writer.join(30)

    def _write_loop(self) -> None:
        while True:
            job = self._writes.get()
            if job is None:
                return
            key, output = job
            try:
                if output is not _RELEASE:
                    self.store.set(f"out:{key}", self._dumps(output))
                    self._claims.discard(key)
                if self.store.get(f"claim:{key}") == self._owner:
                    self.store.delete(f"claim:{key}")
            except Exception as e:  # an unpicklable output, a full disk: not cached, not fatal
                if is_damaged(e):
                    _damaged_while_open(e)
                else:
                    log.warning("mapnb cache: an output could not be stored: %s", e)


class CacheCoordinator:
    """One run's side of the cache: lookups before it runs, and cache_serialize's claims.

    The engine calls it at three points (:meth:`before_run`, :meth:`may_run`,
    :meth:`on_final`) and once per turn of its loop (:meth:`poll`); in return the
    coordinator calls ``take_cached(i, output)`` for an item whose output the cache holds
    (now, or once another computation of the same key is done), and ``run_next(i)`` for
    an item that waited for a key and must now compute it itself. All on the engine thread.

    With ``cache_serialize``, an item computes its key only if it holds the key's claim:
    the other items with that key, in this run or in another process, wait for its output.
    """

    def __init__(
        self,
        cache: ItemCache,
        inputs: Sequence[tuple[Any, ...]],
        take_cached: Callable[[int, Any], None],
        run_next: Callable[[int], None],
    ) -> None:
        self.cache = cache
        self._inputs = inputs
        self._take_cached, self._run_next = take_cached, run_next
        self._keys: list[str | None] = [None] * len(inputs)
        self._waiting: dict[str, list[int]] = {}  # key -> items waiting for its output
        self._elsewhere: set[str] = set()  # keys another process is computing
        self._next_poll = 0.0

    @property
    def waiting(self) -> bool:
        """Whether items wait for a key's output (the run is not over)."""
        return bool(self._waiting)

    @property
    def polling(self) -> bool:
        """Whether other processes compute keys we wait for (poll often)."""
        return bool(self._elsewhere)

    def before_run(self, open_items: Iterable[int]) -> set[int]:
        """Key every open item, hand out what the cache holds; return the items held back
        to wait for another item of this run with the same key."""
        cache, leaders, held = self.cache, set(), set()
        for i in open_items:
            key = self._keys[i] = self._keys[i] or cache.key(self._inputs[i])
            if key is None:
                continue
            if not cache.settings.overwrite:
                hit, value = cache.get(key)
                if hit:
                    self._take_cached(i, value)
                    continue
            if cache.settings.serialize:
                if key in leaders:  # the same item again in this run: wait for the first
                    self._waiting.setdefault(key, []).append(i)
                    held.add(i)
                leaders.add(key)
        return held

    def may_run(self, i: int) -> bool:
        """cache_serialize: may item ``i`` run now? Not if another process is computing it
        (it then waits), nor if that process has just finished it (it is then cached)."""
        key = self._keys[i]
        if key is None or not self.cache.settings.serialize:
            return True
        if not self.cache.claim(key):
            self._waiting.setdefault(key, []).insert(0, i)
            self._elsewhere.add(key)
            return False
        hit, value = self.cache.get(key)  # finished between our first look and the claim?
        if hit:
            self.cache.release(key)
            self._take_cached(i, value)
            return False
        return True

    def on_final(self, i: int, status: Status, output: Any, running: bool) -> None:
        """Item ``i`` is final: store its output, or let a waiter compute it (``running``:
        the run still starts items)."""
        key = self._keys[i]
        if key is None:
            return
        if status is Status.SUCCEEDED:
            self.cache.put(key, output)
            self._hand_out(key, output)
        elif status is Status.CACHED:
            # Found in the cache (at claim time, say: another process had just computed it):
            # the items waiting for this key are owed the same output, or they wait forever.
            self._elsewhere.discard(key)
            self._hand_out(key, output)
        else:
            self.cache.release(key)
            if running and key not in self._elsewhere:
                self._next_in_line(key)

    def poll(self) -> None:
        """Keep claims alive; take what other processes computed, or take over from them."""
        cache = self.cache
        cache.renew()
        if not self._elsewhere or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + 0.1
        for key in list(self._elsewhere):
            hit, value = cache.get(key)
            if hit:
                self._elsewhere.discard(key)
                self._hand_out(key, value)
            elif not cache.claimed_elsewhere(key):  # they gave up or died: our turn
                self._elsewhere.discard(key)
                self._next_in_line(key)

    def grow(self, count: int) -> None:
        """The run has ``count`` more items (its ``inputs`` list grew in place)."""
        self._keys.extend([None] * count)

    def drop_waiting(self) -> list[int]:
        """The run stops: the items still waiting for a key, which will never run."""
        waiting = [i for items in self._waiting.values() for i in items]
        self._waiting.clear()
        self._elsewhere.clear()
        return waiting

    def close(self) -> None:
        """Outputs are on disk before the run says it is done."""
        self.cache.close()

    def _hand_out(self, key: str, value: Any) -> None:
        """The items waiting for ``key`` asked for exactly this output."""
        for j in self._waiting.pop(key, []):
            self._take_cached(j, value)

    def _next_in_line(self, key: str) -> None:
        """The first item waiting for ``key`` computes it now; the others go on waiting."""
        waiters = self._waiting.get(key)
        if waiters:
            self._run_next(waiters.pop(0))
            if not waiters:
                del self._waiting[key]


class _Release:
    pass


_RELEASE = _Release()
