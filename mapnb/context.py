"""What a running item can ask about itself: :func:`current_context`, and checkpoints.

Shaped like flytekit's ``current_context().checkpoint``: an attempt saves its progress
with :meth:`Checkpoint.write` (bytes) or :meth:`Checkpoint.save` (a file or a folder);
when the item fails, times out or its worker dies and it is retried, the next attempt
finds that progress with :meth:`Checkpoint.read` or :meth:`Checkpoint.restore` and
resumes instead of starting over::

    def train(epochs: int) -> float:
        cp = mapnb.current_context().checkpoint
        start = int(cp.read() or b"0")  # the epoch the previous attempt reached
        for epoch in range(start, epochs):
            ...
            cp.write(str(epoch + 1).encode())

Checkpoints live in ``MAPNB_HOME/runs/<run id>/checkpoints/<item>/<attempt>/`` on the
machine that runs the item: on a Dask cluster of several machines, point ``MAPNB_HOME``
at a filesystem the workers share. Writes are atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import contextvars
import numbers
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_current: contextvars.ContextVar[TaskContext | ItemSlot | None] = contextvars.ContextVar(
    "mapnb_context", default=None
)
_DATA = "checkpoint"  # the file write()/read() use; save() of a folder keeps its contents beside it


class Checkpoint:
    """One item's checkpoint: what this attempt saves, and what the previous one saved.

    Parameters
    ----------
    root : path
        The item's checkpoint folder; attempts get a sub-folder each.
    attempt : int
        The running attempt (from 1).
    """

    def __init__(self, root: str | os.PathLike[str], attempt: int) -> None:
        self._root = Path(root)
        self._attempt = attempt
        self._prev = self._find_previous()
        self._restored: Path | None = None

    def _dir(self, attempt: int) -> Path:
        return self._root / str(attempt)

    def _find_previous(self) -> Path | None:
        for a in range(self._attempt - 1, 0, -1):  # the latest attempt that saved something
            d = self._dir(a)
            if d.is_dir() and any(d.iterdir()):
                return d
        return None

    def prev_exists(self) -> bool:
        """Whether an earlier attempt of this item saved a checkpoint."""
        return self._prev is not None

    def read(self) -> bytes | None:
        """The bytes the previous attempt wrote with :meth:`write` (or the one file it
        saved with :meth:`save`), or None.

        As flytekit's ``SyncCheckpoint.read``: a checkpoint of several files raises
        ``ValueError``; use :meth:`restore` for those.
        """
        if self._prev is None:
            return None
        if (self._prev / _DATA).is_file():
            return (self._prev / _DATA).read_bytes()
        files = list(self._prev.iterdir())
        if not files:
            return None
        if len(files) > 1:
            raise ValueError(f"Expected exactly one checkpoint - found {len(files)}")
        return files[0].read_bytes() if files[0].is_file() else None

    def write(self, data: bytes) -> None:
        """Save ``data`` as this attempt's checkpoint (replacing what it saved before)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"checkpoint.write() takes bytes; got {type(data).__name__} (encode it first)")
        d = self._dir(self._attempt)
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, d / _DATA)

    def restore(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Copy the previous attempt's checkpoint into folder ``path`` (by default a
        temporary folder, as flytekit's); return it, or None when there is nothing to
        restore."""
        if self._prev is None:
            return None
        if path is None:
            if self._restored is not None:  # once, as flytekit's: later calls get the same folder
                return self._restored
            path = tempfile.mkdtemp(prefix="mapnb-restored-")
        dest = Path(path)
        shutil.copytree(self._prev, dest, dirs_exist_ok=True)
        if self._restored is None:
            self._restored = dest
        return dest

    def save(self, src: str | os.PathLike[str] | IO[bytes]) -> None:
        """Save a file, a folder's contents, or an open binary file as this attempt's checkpoint."""
        if hasattr(src, "read"):
            self.write(src.read())
            return
        src = Path(src)
        d = self._dir(self._attempt)
        tmp = self._root / f".tmp-{self._attempt}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            tmp.mkdir(parents=True)
            shutil.copy2(src, tmp / (_DATA if src.name == _DATA else src.name))
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)

    def __repr__(self) -> str:
        return f"<Checkpoint attempt {self._attempt}, previous {'yes' if self._prev else 'none'}>"


class TaskContext:
    """Who the running item is. ``index`` and ``attempt`` are None outside a map task."""

    __slots__ = ("run_id", "index", "attempt", "_root", "_checkpoint", "_report")

    def __init__(
        self,
        run_id: str | None,
        index: int | None,
        attempt: int | None,
        root: str | None,
        report: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.run_id, self.index, self.attempt = run_id, index, attempt
        self._root = root  # the run's checkpoint folder; None: a temporary one
        self._checkpoint: Checkpoint | None = None
        self._report = report  # where mapnb.report() sends to; None outside an item

    @property
    def checkpoint(self) -> Checkpoint:
        """This item's :class:`Checkpoint` (made on first use: most items never ask)."""
        if self._checkpoint is None:
            if self.index is None:
                folder = Path(tempfile.mkdtemp(prefix="mapnb-cp-"))
            else:
                base = Path(
                    self._root or Path(tempfile.gettempdir()) / "mapnb-checkpoints" / str(self.run_id)
                )
                folder = base / str(self.index)
            self._checkpoint = Checkpoint(folder, self.attempt or 1)
        return self._checkpoint

    def __repr__(self) -> str:
        return f"<TaskContext run={self.run_id} item={self.index} attempt={self.attempt}>"


def current_context() -> TaskContext:
    """The running item's context (its run, index, attempt and checkpoint).

    Outside a map task (calling the function directly, in a test), the checkpoint is a
    fresh temporary folder with nothing to resume from.
    """
    ctx = _current.get()
    if isinstance(ctx, ItemSlot):
        return ctx.context()
    if ctx is None:
        ctx = TaskContext(None, None, None, None)
        _current.set(ctx)
    return ctx


class ItemSlot:
    """Which item of a batch runs now: made current once per batch (:func:`enter_items`),
    its ``index`` and ``attempt`` set per item, two stores. The item's
    :class:`TaskContext` is made only when the item asks for it (most never do)."""

    __slots__ = ("run_id", "root", "index", "attempt", "_metrics", "_ctx")

    def __init__(
        self,
        run_id: str | None,
        root: str | None,
        metrics: Callable[[int, int, int, dict[str, float]], None],
    ) -> None:
        self.run_id, self.root, self._metrics = run_id, root, metrics
        self.index = self.attempt = 0
        self._ctx: TaskContext | None = None

    def context(self) -> TaskContext:
        """The running item's context: the same object for the whole attempt."""
        ctx = self._ctx
        if ctx is None or ctx.index != self.index or ctx.attempt != self.attempt:
            index, attempt, metrics = self.index, self.attempt, self._metrics

            def report(step: int, values: dict[str, float]) -> None:
                metrics(index, attempt, step, values)

            ctx = self._ctx = TaskContext(self.run_id, index, attempt, self.root, report)
        return ctx


def leave_item(token: Any) -> None:
    _current.reset(token)


def enter_items(
    root: str | None, run_id: str | None, metrics: Callable[[int, int, int, dict[str, float]], None]
) -> tuple[ItemSlot, Any]:
    """Make a new :class:`ItemSlot` current for a batch of items (``run_items`` sets its
    index and attempt per item); returns it and the reset token for :func:`leave_item`.
    ``metrics(index, attempt, step, values)`` takes what ``mapnb.report`` is given."""
    slot = ItemSlot(run_id, root, metrics)
    return slot, _current.set(slot)


def report(step: int, **metrics: float) -> None:
    """Report intermediate metrics of the running item at ``step`` (an epoch, an iteration).

    The values stream to the caller while the item runs: ``run.metrics(i)`` has the item's
    history, the DataFrame a column per metric with its last value, the grid a sparkline;
    and ``map_task(..., prune=mapnb.MedianStopping(...))`` stops items that fall behind.
    Reporting is cheap: a tight loop may call it thousands of times; per step the last
    values are kept and sent in batches, a few times a second.

    Parameters
    ----------
    step : int
        The step these values belong to (>= 0). Reporting a step again updates it.
    **metrics : float
        Each metric's value at ``step``: a real number (Python, NumPy, or anything
        ``float()`` accepts except strings, e.g. a 0-d tensor).

    Raises
    ------
    TypeError
        ``step`` is not an int, a metric is not a number, or no metric is given.
    ValueError
        ``step`` is negative.

    Notes
    -----
    Outside a map task (calling the function directly, in a test) nothing is sent: the
    call validates its arguments and warns (``RuntimeWarning``) once per call site, so the
    same function runs unchanged both ways.
    """
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"report(step={step!r}): step must be an int, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"report(step={step!r}): step must be >= 0")
    if not metrics:
        raise TypeError(f"report(step={step}): give at least one metric, e.g. report({step}, loss=0.5)")
    values = {name: _number(step, name, v) for name, v in metrics.items()}
    ctx = _current.get()
    if isinstance(ctx, ItemSlot):
        ctx = ctx.context()
    if ctx is None or ctx._report is None:
        warnings.warn(
            "mapnb.report() was called outside a map task's item: the metrics are ignored",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    ctx._report(int(step), values)


def _number(step: int, name: str, value: Any) -> float:
    """``value`` as a float, or a TypeError naming the metric and the value."""
    if isinstance(value, (str, bytes, bool)) or not (
        isinstance(value, numbers.Real) or hasattr(value, "__float__")
    ):
        raise TypeError(
            f"report(step={step}, {name}={value!r}): a metric must be a real number, got {type(value).__name__}"
        )
    try:
        out = float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"report(step={step}, {name}={value!r}): a metric must be a real number ({e})") from None
    return out
