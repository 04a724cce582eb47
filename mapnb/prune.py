"""Pruning: stop items whose reported metrics fall behind the others' (``map_task(prune=...)``).

The engine asks the pruner about each step an item reports with :func:`mapnb.report`;
the pruner answers with the reason to stop it, or None. A pruned item ends with status
``pruned``: not a failure (see :class:`MedianStopping`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence

from .errors import InvalidMapError


@dataclasses.dataclass(frozen=True)
class MedianStopping:
    """Stop an item whose metric is worse than the median of the other items' values at
    the same step (the median stopping rule of Google Vizier, as Optuna's MedianPruner).

    When an item reports ``metric`` at step ``s >= grace`` and at least ``min_items``
    other items of the run have reported it at step ``s`` (items still running, finished
    or pruned), the item is stopped if its value is worse than their median: greater
    with ``mode="min"``, smaller with ``mode="max"``. A NaN value is worse than any.

    A pruned item ends with status ``pruned``: its output is None, its last reported
    metrics stay in the DataFrame, the ``error`` column says why ("pruned at step 3:
    loss 0.9 > median 0.5"). It is not a failure: for ``min_success_ratio`` it counts
    like a success, it is not retried, and ``run.retry_failed()`` leaves it alone.
    Where the backend can kill (``"local"``, ``"dask"``) its worker is killed and the
    task's other items are queued again, uncharged; elsewhere (``"threads"``,
    ``"sequential"``) the item runs to its end and its result is ignored.

    Parameters
    ----------
    metric : str
        The name of the reported metric to compare (``mapnb.report(step, loss=...)``).
    mode : {"min", "max"}
        Whether smaller (``"min"``) or larger (``"max"``) values are better.
    grace : int
        Steps before this one are never pruned (>= 0).
    min_items : int
        Compare only once at least this many other items reported the step (>= 1).

    Examples
    --------
    >>> mapnb.map_task(train, prune=mapnb.MedianStopping("loss", grace=3))  # doctest: +SKIP
    """

    metric: str
    mode: str = "min"
    grace: int = 3
    min_items: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise InvalidMapError(f"MedianStopping(metric=...) must be a metric's name (a str); got {self.metric!r}")
        if self.mode not in ("min", "max"):
            raise InvalidMapError(f"MedianStopping(mode=...) must be 'min' or 'max'; got {self.mode!r}")
        for name, value, least in (("grace", self.grace, 0), ("min_items", self.min_items, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidMapError(f"MedianStopping({name}=...) must be an integer >= {least}; got {value!r}")

    def judge(self, step: int, value: float, others: Collection[float]) -> str | None:
        """Why an item whose ``metric`` is ``value`` at ``step`` should stop, given the
        other items' values at that step; None to let it go on."""
        return self.judge_sorted(step, value, sorted(v for v in others if not math.isnan(v)))

    def judge_sorted(self, step: int, value: float, others: Sequence[float]) -> str | None:
        """:meth:`judge` with the others' values sorted, without NaN (the engine keeps them
        so, per step: a large sweep's median then costs nothing)."""
        if step < self.grace or len(others) < self.min_items:
            return None
        k = len(others)
        median = others[k // 2] if k % 2 else (others[k // 2 - 1] + others[k // 2]) / 2
        if math.isnan(value):
            return f"pruned at step {step}: {self.metric} is NaN (median {median:.4g})"
        if self.mode == "min" and value > median:
            return f"pruned at step {step}: {self.metric} {value:.4g} > median {median:.4g}"
        if self.mode == "max" and value < median:
            return f"pruned at step {step}: {self.metric} {value:.4g} < median {median:.4g}"
        return None

Pruner = MedianStopping
"""What ``map_task(prune=...)`` takes."""
