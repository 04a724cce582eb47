"""MapRun: the handle of a running (or finished) map, usable while it runs."""

from __future__ import annotations

import logging
import numbers
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ItemError, MapTaskError, RemoteError
from .events import Event, RunFinished, RunStatus, Status
from .spec import short_repr

if TYPE_CHECKING:
    import pandas as pd

    from .engine import Engine

log = logging.getLogger(__name__)

_last: MapRun | None = None
_last_lock = threading.Lock()


class DisplayHook(Protocol):
    """How a run shows itself in a notebook: the notebook layer registers one
    (:func:`set_display_hook`), so that nothing here imports it."""

    def grid(self, run: MapRun) -> Any:
        """The run's live grid (made once, kept on the run), or None outside a notebook."""

    def static(self, run: MapRun) -> dict[str, Any]:
        """A mime bundle drawing the run without a live widget."""

    def wait(self, run: MapRun, progress: bool | None) -> None:
        """Block until ``run`` is done, showing its progress where wanted (``progress``:
        True, False, or None for "where one can be shown")."""


_display: DisplayHook | None = None


def set_display_hook(hook: DisplayHook | None) -> None:
    """Register how runs display themselves (``mapnb`` registers its notebook layer)."""
    global _display
    _display = hook


def last_run() -> MapRun | None:
    """The most recent run started in this process, so that nothing is lost when a
    blocking call is interrupted or raises."""
    return _last


class MapRun:
    """A map in progress or done: like a ``concurrent.futures.Future`` for a whole map.

    Everything here may be called from any thread while the run goes on.

    Attributes
    ----------
    id : str
        The run's id.
    names : tuple of str
        The mapped parameters, in the order given.
    inputs : sequence of tuple
        Each item's mapped values, in input order: ``run.inputs[i]`` is item i's tuple,
        a slice is a list of tuples, and it compares equal to that list. A map of lists
        holds them as one list per parameter (no tuple per item is made until read).
    """

    def __init__(self, engine: Engine, name: str, axes: list[list[Any]] | None = None) -> None:
        global _last
        self._engine = engine  # for control only (cancel, re-run, subscribe)
        self.view = engine.view  # what the run knows, read-only
        self.id = engine.run_id
        self.name = name
        self.names = self.view.names
        self.inputs = self.view.inputs  # (the run's own list: it grows with run.extend)
        self._axes = axes  # a run whose engine was not told them (an engine made by hand)
        self._grow_lock = threading.Lock()  # one growth at a time: each builds on the last
        self.started = time.time()
        self._grid: Any = None  # the LiveGrid, once shown in a notebook
        self._frames: list[weakref.ref[pd.DataFrame]] = []  # results handed out, kept current
        self._sel_lock = threading.Lock()
        self._selected: list[int] = []
        self._on_selected: list[Callable[[list[int]], None]] = []
        with _last_lock:
            _last = self

    # -- the Future-like part -----------------------------------------------------------

    def done(self) -> bool:
        """Whether every item has reached a final state."""
        return self.view.done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run is done or ``timeout`` seconds pass; return :meth:`done`.

        In a notebook, waiting also brings the saved picture of a shown grid up to date.
        """
        done = self.view.done.wait(timeout)
        if done and self._grid is not None and threading.current_thread() is threading.main_thread():
            self._grid.refresh_display()
        return done

    def result(self, timeout: float | None = None) -> pd.DataFrame:
        """The DataFrame, once the run is done.

        Raises
        ------
        TimeoutError
            The run is still going after ``timeout`` seconds (it goes on).
        MapTaskError
            Fewer items succeeded than ``min_success_ratio`` asks for, or the run was
            cancelled; ``.df`` holds the partial results.
        """
        if not self.wait(timeout):
            raise TimeoutError(f"run {self.id} is still running after {timeout} s ({self._progress()})")
        exc = self.exception()
        if exc is not None:
            raise exc
        return self._tracked(self.df)

    def _tracked(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Hand out ``frame`` as the run's result: a later Retry failed updates it in place,
        so a variable bound to it never shows stale rows."""
        self._frames = [r for r in self._frames if r() is not None] + [weakref.ref(frame)]
        return frame

    def exception(self) -> MapTaskError | None:
        """The error :meth:`result` would raise for a finished run, else None."""
        v = self.view
        if not self.done() or v.lifecycle is RunStatus.SUCCEEDED:
            return None
        i = v.first_failure
        err = v.errors[i] if i is not None else None
        if v.lifecycle is RunStatus.CANCELLED:
            msg = f"run {self.id} of {self.name} was cancelled: {self._progress()}"
            i = err = None
        else:
            pruned = v.counts[Status.PRUNED]
            also = f" (+{pruned} pruned, which count)" if pruned else ""
            msg = f"{self.name}: {v.succeeded()} of {v.n} items succeeded{also}, {v.need} needed ({v.need_rule})"
            if i is not None and err is not None:
                where = ", ".join(f"{n}={short_repr(x)}" for n, x in zip(self.names, self.inputs[i]))
                msg += (
                    f".\nFirst failure: item {i} ({where}) after {v.attempts[i]} "
                    f"attempt{'s' * (v.attempts[i] != 1)}: {err.one_line()}"
                    f"\nSee run.logs({i}) for its output and e.df for all results."
                )
        exc = MapTaskError(msg, self, i)
        if err is not None and err.traceback:
            exc.__cause__ = RemoteError(err.traceback)
        return exc

    def cancel(
        self, indices: Iterable[int] | bool | None = None, wait: bool = True, timeout: float | None = 30.0
    ) -> None:
        """Stop the run: queued items never start, running ones are killed.

        Finished results are kept. With ``wait``, return once the killed subtasks are gone.

        With ``indices``, cancel only those items: queued ones never start, running ones
        are killed (the other unstarted items of their subtask run later, uncharged), and
        the rest of the run goes on. It then ends as usual: a cancelled item has not
        succeeded, so with ``min_success_ratio=1`` the run fails.
        """
        if isinstance(indices, bool):  # cancel(True): ``wait`` passed by position, as before
            wait = indices
        elif indices is not None:
            self._engine.cancel_items(check_indices(indices, self.view.n, "cancel(indices)"))
            return
        self._engine.cancel()
        if wait:
            self.wait(timeout)

    def rerun(self, indices: Iterable[int]) -> int:
        """Run these items again, in this run, whether it is done or still running;
        return how many will run again.

        Items still queued or running are left as they are (not counted). The others
        (succeeded ones too) run again with the run's retries afresh, their log continues,
        and the cache does not answer a succeeded or cached one (its new output replaces
        the cached one). The run is "running" until they are done; the DataFrames it
        handed out are then updated in place. While it runs, not on ``backend="flyte"``
        (BackendError: that backend runs the whole map as one unit).
        """
        again = check_indices(indices, self.view.n, "rerun(indices)")
        count: int = self._engine.rerun(again)
        if count:
            self._goes_on()
        return count

    def _goes_on(self) -> None:
        """Items were re-run or added: the run is (maybe again) the one that runs now."""
        global _last
        with _last_lock:
            _last = self  # what runs now is the latest run
        self.started = time.time() - self.elapsed  # the clock resumes where it stopped
        # Before the run says it is done again, the DataFrames it handed out catch up.
        self._engine.bus.subscribe(self._when_rerun_ends, statuses=False)
        follow = getattr(self._grid, "_follow", None)  # a shown grid's updater stops when a run ends
        if follow is not None:
            follow()

    def retry_failed(self) -> int:
        """Run the failed, aborted and cancelled items again, in this run; return how many.

        Finished results stay; each re-run item gets the run's retries afresh, its log
        continues, and the run is "running" again until they are done. Only for a run
        that is done (:meth:`rerun` works on a running one too).
        """
        if not self.done():
            raise RuntimeError(f"run {self.id} is still running; wait for it (or cancel it) first")
        ok = (Status.SUCCEEDED, Status.CACHED, Status.PRUNED)  # pruned: stopped on purpose, not failed
        return self.rerun([i for i, s in enumerate(self.view.status) if s not in ok])

    def _when_rerun_ends(self, events: list[Event]) -> None:
        if not any(isinstance(ev, RunFinished) for ev in events):
            return
        self._engine.bus.unsubscribe(self._when_rerun_ends)
        frames = [f for f in (ref() for ref in self._frames) if f is not None]
        if frames:
            fresh = self.df
            for frame in frames:
                _refresh_frame(frame, fresh)

    # -- growing a sweep --------------------------------------------------------------

    @property
    def axes(self) -> list[list[Any]] | None:
        """For a product (a sweep), the values of each parameter, as grown by
        :meth:`extend`; None for an element-wise map. Where each item sits: :attr:`coords`."""
        axes = self.view.axes
        return axes if axes is not None else self._axes

    @property
    def coords(self) -> list[tuple[int, ...]] | None:
        """For a product, each item's position on every axis (``run.axes[j][coords[i][j]]``
        is item ``i``'s value of parameter ``j``); None for an element-wise map.

        Until the sweep grows this is ``itertools.product`` order (the last parameter
        varies fastest); :meth:`extend` appends items in the order it documents.
        """
        from .sweep import coords

        if self.axes is None:
            return None
        shapes = self.view.shapes or [tuple(len(a) for a in self.axes)]
        return coords(shapes)[: self.view.n]

    def extend(self, /, *args: Any, **values: Any) -> int:
        """Grow a sweep: new values for one or more of its parameters; return how many
        items were added.

        Every new combination runs in this run (while it runs, or after it is done: it
        is then running again): the items that use at least one new value, appended in
        ``itertools.product`` order over the grown axes (old values first, then new
        ones), so that the old items keep their indices (:attr:`coords` says where each
        sits). Old items are not run again; new ones use the cache like any item. Only
        for a run started by ``.product(...)`` / ``submit_product`` / ``--product``.

        >>> run = map_task(train).submit_product(lr=[0.1, 0.01], depth=[2, 4])  # doctest: +SKIP
        >>> run.extend(lr=[0.001])  # 2 new items: (0.001, 2), (0.001, 4)  # doctest: +SKIP
        2
        """
        from .errors import InvalidMapError
        from .sweep import grow_product, not_a_product

        if args:
            raise InvalidMapError(
                f"run.extend() takes new values by name, e.g. run.extend({self.names[0]}=[...]); "
                f"got {len(args)} positional argument{'s' * (len(args) != 1)}"
            )
        if self.axes is None:
            raise not_a_product("extend")
        if not values:
            raise InvalidMapError(
                f"run.extend() needs new values for at least one axis ({', '.join(self.names)}), e.g. "
                f"run.extend({self.names[0]}=[...])"
            )
        with self._grow_lock:
            axes, items = grow_product(self.names, self.axes, values)
            return self._add(items, axes)

    def extend_items(self, /, *args: Any, **lists: Any) -> int:
        """Append items to an element-wise map: one list per mapped parameter, by name
        (or by position, in the order of :attr:`names`), all of one length; return how
        many were added. They run in this run (while it runs, or after it is done: it is
        then running again). For a sweep, use :meth:`extend`.
        """
        from .sweep import a_product, more_items

        if self.axes is not None:
            raise a_product()
        with self._grow_lock:
            return self._add(more_items(self.names, args, lists), None)

    def _add(self, items: list[tuple[Any, ...]], axes: list[list[Any]] | None) -> int:
        if not items:
            return 0
        self._engine.add_items(items, axes)
        self._goes_on()  # (handed-out DataFrames grow when it ends)
        return len(items)

    def to_optuna(
        self,
        metric: str | None = None,
        direction: str = "minimize",
        study_name: str | None = None,
        storage: Any = None,
    ) -> Any:
        """The finished items as an Optuna study (``optuna.Study``), for optuna-dashboard
        and Optuna's plots. Needs ``pip install 'mapnb[optuna]'``.

        Each succeeded or cached item is a complete trial: its params are its inputs
        (distributions from the axis values: an int or float range when they are all
        numbers, else categorical), its value is ``metric``; a failed item is a FAIL
        trial, a pruned one PRUNED. Reported values (:func:`mapnb.report`) of ``metric``
        are the trials' intermediate values. Unfinished, aborted and cancelled items are
        left out.

        Parameters
        ----------
        metric : str, optional
            An output field, ``"output"`` for numeric outputs, or a reported metric
            (outputs win). By default the pruner's metric, else the first numeric output
            field, else the first reported metric.
        direction : {"minimize", "maximize"}
            The study's direction.
        study_name, storage : optional
            As :func:`optuna.create_study` takes them (e.g. ``storage="sqlite:///s.db"``
            for optuna-dashboard).
        """
        from .sweep import to_optuna

        return to_optuna(self.view, self.axes, metric, direction, study_name, storage)

    # -- selection (the grid's views set it, and so may you) ----------------------------

    @property
    def selected(self) -> list[int]:
        """The selected items' indices, sorted and unique (the grid's views select too).

        Set it to select from Python: ``run.selected = [3, 5]``; the grid shows it. Each
        index must be an int in ``range(len(run))`` (else ValueError).
        """
        with self._sel_lock:
            return list(self._selected)

    @selected.setter
    def selected(self, indices: Iterable[int]) -> None:
        new = check_indices(indices, self.view.n, "run.selected")
        with self._sel_lock:
            if new == self._selected:
                return
            self._selected = new
            callbacks = list(self._on_selected)
        for cb in callbacks:  # outside the lock: a callback may read run.selected
            try:
                cb(list(new))
            except Exception:
                log.exception("a selection callback of run %s failed", self.id)

    @property
    def selected_df(self) -> pd.DataFrame:
        """The rows of :attr:`df` for the selected items (index: the item indices)."""
        sel = self.selected
        return self.df.loc[sel]

    def on_selected(self, callback: Callable[[list[int]], None]) -> Callable[[], None]:
        """Call ``callback(indices)`` whenever the selection changes (from any thread: the
        thread that set it). Returns a function that unsubscribes."""
        with self._sel_lock:
            self._on_selected.append(callback)

        def unsubscribe() -> None:
            with self._sel_lock:
                if callback in self._on_selected:
                    self._on_selected.remove(callback)

        return unsubscribe

    # -- what is known so far -----------------------------------------------------------

    @property
    def state(self) -> RunStatus:
        """``"running"``, ``"succeeded"``, ``"failed"`` or ``"cancelled"`` (a :class:`RunStatus`)."""
        return self.view.lifecycle if self.done() else RunStatus.RUNNING

    def __len__(self) -> int:
        return self.view.n

    @property
    def outputs(self) -> list[Any]:
        """Outputs in input order; ``None`` for failed and unfinished items."""
        return list(self.view.outputs[: self.view.n])

    @property
    def statuses(self) -> list[Status]:
        """Each item's :class:`~mapnb.Status`."""
        return list(self.view.status[: self.view.n])

    @property
    def errors(self) -> list[ItemError | None]:
        """Each item's last error (``None`` when it succeeded or has not failed)."""
        return list(self.view.errors[: self.view.n])

    @property
    def attempts(self) -> list[int]:
        """How many attempts of each item ran."""
        return list(self.view.attempts[: self.view.n])

    @property
    def counts(self) -> dict[str, int]:
        """How many items are in each status, e.g. ``{"succeeded": 8, "failed": 1, ...}``."""
        return {s.value: k for s, k in self.view.counts.items()}

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it ended, once done)."""
        return self.view.elapsed()

    def logs(self, index: int, stream: str | None = None) -> str:
        """What item ``index`` printed so far: stdout and stderr interleaved, or one ``stream``.

        At most ~1 MiB per item is kept: the start and the end, with a marker between.
        """
        n = self.view.n
        if not -n <= index < n:
            raise IndexError(f"item index {index} out of range for a run of {n} items")
        if stream not in (None, "stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout', 'stderr' or None; got {stream!r}")
        return self.view.log_text(index % n, stream)

    def metrics(self, index: int) -> pd.DataFrame:
        """What item ``index`` reported with :func:`mapnb.report` so far: one row per step
        (its latest attempt's newest 1,000 steps), columns ``step`` and one per metric
        (NaN where a step did not report it). Empty (just ``step``) if it reported nothing.
        """
        import pandas as pd

        n = self.view.n
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"run.metrics(index): index must be an int, got {index!r}")
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"item index {index} out of range for a run of {n} items")
        history = self.view.metric_history(index % n)
        names: dict[str, None] = {}
        for _, values in history:
            names.update(dict.fromkeys(values))
        data: dict[str, Any] = {"step": pd.Series([step for step, _ in history], dtype="int64")}
        for name in names:
            data[name] = pd.Series([values.get(name, float("nan")) for _, values in history], dtype="float64")
        return pd.DataFrame(data)

    @property
    def df(self) -> pd.DataFrame:
        """A DataFrame of the run so far: one row per item, in input order."""
        from .frame import build_frame

        return build_frame(self.view)

    # -- events -------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[list[Event]], None], statuses: bool = True) -> Callable[[], None]:
        """Call ``callback(events)`` from the engine's thread with every batch of events.

        The first batch describes the run so far, logs included. Returns a
        function that unsubscribes. Keep the callback quick: it runs on the engine's thread.

        ``statuses=False`` says the callback needs no per-item status events
        (``ItemStarted``, ``ItemRetrying``, ``ItemFinished``) because it reads statuses from
        :attr:`view` (``view.codes`` changes with them, one byte per item): with no
        subscriber that wants them, the engine builds no event object per item.
        """
        bus = self._engine.bus
        bus.subscribe(callback, statuses)
        return lambda: bus.unsubscribe(callback)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Iterate over the run's events until it finishes (the first ones replay the past).

        ``timeout`` bounds the wait for each next event (``TimeoutError`` past it).
        """
        q: queue.SimpleQueue[list[Event]] = queue.SimpleQueue()
        unsubscribe = self.subscribe(q.put)
        try:
            while True:
                try:
                    batch = q.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"no event from run {self.id} for {timeout} s") from None
                for ev in batch:
                    yield ev
                    if isinstance(ev, RunFinished):
                        return
        finally:
            unsubscribe()

    # -- display ------------------------------------------------------------------------

    def show_until_done(self, progress: bool | None = None) -> None:
        """Block until the run is done, showing the live grid in a notebook or a progress
        bar on a terminal (``progress``: True, False, or None for where one can be shown).

        Short waits keep the calling thread responsive to KeyboardInterrupt.
        """
        if _display is not None:
            _display.wait(self, progress)
            return
        while not self.wait(0.1):
            pass

    def show(self) -> None:
        """Show the live grid in the notebook cell that calls this (nothing elsewhere).

        The grid keeps updating while the kernel runs other cells. A later :meth:`wait`
        (or :meth:`result`) also updates the picture that is saved with the notebook.
        """
        grid = self._live_grid()
        if grid is not None:
            grid.display()

    def _live_grid(self) -> Any:
        return _display.grid(self) if _display is not None else None

    def _ipython_display_(self) -> None:
        # ``run`` as a cell's last expression: shown with a display id, so that the picture
        # saved with the notebook is brought up to date after a later cell (an
        # execute_result, which _repr_mimebundle_ would make, cannot be updated). Not from
        # the grid's thread the moment the run ends: the update redraws the output, and
        # its views may be in use then.
        grid = self._live_grid()
        if grid is not None:
            grid.display(refresh_when_done=False)
            return
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        grid = self._live_grid()
        if grid is not None:
            return grid.mimebundle()
        if _display is not None:
            return _display.static(self)
        return {"text/plain": repr(self)}

    def _progress(self) -> str:
        c = self.counts
        parts = [f"{k} {v}" for k, v in c.items() if v]
        return ", ".join(parts) or "no items"

    def __repr__(self) -> str:
        return f"<MapRun {self.id} {self.name} {self.state}: {self._progress()} ({self.elapsed:.2f} s)>"


def check_indices(indices: Any, n: int, what: str) -> list[int]:
    """``indices`` as a sorted list of unique item indices of a run of ``n`` items, else
    a ValueError naming the bad value and the allowed range."""
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise ValueError(f"{what} must be a list of item indices; got {type(indices).__name__} {indices!r}")
    out = set()
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= int(i) < n:
            allowed = f"0 to {n - 1}" if n else "none (the run has no items)"
            raise ValueError(f"{what}: {i!r} is not an item index; allowed: ints from {allowed}")
        out.add(int(i))
    return sorted(out)


def _refresh_frame(frame: pd.DataFrame, fresh: pd.DataFrame) -> None:
    """Make ``frame`` hold ``fresh``'s values, in place (columns the user added stay; rows
    the run grew by are appended)."""
    for k in range(len(frame), len(fresh)):  # (one row at a time: pandas grows in place only so)
        frame.loc[k] = None
    for col in fresh.columns:
        frame[col] = fresh[col].to_numpy()
