"""The Python face of mapnb: ``task``, ``map_task``, ``MapTask`` and ``recover``.

:func:`map_task` takes a plain function (see :mod:`mapnb.maptask`) or one of Flyte's own
tasks, which its adapter in :mod:`mapnb.flyte` turns into a map task of a plain function
with the task's settings (flytekit and flyte are imported only then).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any

from .backends import Backend
from .errors import InvalidMapError
from .flyte import is_flyte2, is_flytekit
from .maptask import MapTask, TaskFunction, map_function, recover, task
from .prune import MedianStopping
from .spec import function_name

__all__ = ["MapTask", "TaskFunction", "map_task", "recover", "task"]


def map_task(
    fn: Callable[..., Any],
    *,
    concurrency: int | None = None,
    min_success_ratio: float | None = None,
    retries: int | None = None,
    timeout: float | datetime.timedelta | None = None,
    backend: str | Backend = "local",
    progress: bool | None = None,
    cache: bool | None = None,
    cache_version: str | None = None,
    cache_serialize: bool | None = None,
    cache_overwrite: bool = False,
    prune: MedianStopping | None = None,
    min_successes: int | None = None,
    run_all_sub_nodes: bool | None = None,
    metadata: Any = None,
) -> MapTask:
    """Map ``fn`` over lists of inputs, in parallel, with Flyte's map-task semantics.

    Parameters
    ----------
    fn : callable
        A function, a :func:`task`, or a ``functools.partial`` whose bound arguments are
        fixed inputs of every item. Functions and lambdas defined in a notebook or
        ``__main__`` work (they travel with cloudpickle). A ``@flytekit.task``, a partial
        of one or a ``flytekit.map_task(...)`` brings its own settings, and so does a
        Flyte 2 ``@env.task``, sync or async (see :mod:`mapnb.flyte`).
    concurrency : int, optional
        At most this many items run at once; the rest queue. Default: the backend's
        (the number of usable CPUs for ``"local"``).
    min_success_ratio : float, optional
        The run succeeds when at least ``ceil(n * min_success_ratio)`` items succeed;
        failed items are ``None`` in the results. As soon as that cannot be reached, the
        run aborts (queued items never start, running ones are killed) and raises
        :class:`MapTaskError`. None (the default) is 1.0: every item must succeed.
    retries : int, optional
        Extra attempts per failed item (default: the task's, else 0).
    timeout : float or datetime.timedelta, optional
        Seconds per attempt (default: the task's); an attempt past it is killed and fails.
    backend : str or Backend
        ``"local"`` (worker processes, the default), ``"threads"``, ``"sequential"`` or a
        :class:`~mapnb.backends.Backend` instance.
    progress : bool, optional
        The live grid in a notebook, a one-line progress bar on a terminal's stderr; by
        default when either is there. False: neither.
    cache, cache_version, cache_serialize : optional
        Subtask caching, as in :func:`task` (whose settings are the defaults here).
    cache_overwrite : bool
        Run every item even if its output is cached, and replace the entries.
    prune : MedianStopping, optional
        Stop items whose metrics, reported with :func:`mapnb.report`, fall behind the
        other items' (status ``pruned``, not a failure; see :class:`MedianStopping`).
    min_successes : int, optional
        The run succeeds when at least this many items succeed (an absolute count, as
        Flyte's ``map_task(min_successes=...)``); it wins over ``min_success_ratio``, as in
        Flyte. More than the number of items is refused before anything runs.
    run_all_sub_nodes : bool, optional
        True: once ``min_successes``/``min_success_ratio`` can no longer be met, the other
        items still run to the end (Flyte's ArrayNode ``run_all_sub_nodes``), and then the
        run fails. False (the default, or the flytekit map's own setting): the run aborts
        at once.
    metadata : flytekit.TaskMetadata, optional
        For a flytekit task only, as ``flytekit.map_task(t, metadata=...)``: the subtasks'
        retries, timeout and cache instead of the task's own (explicit arguments here win).

    Returns
    -------
    MapTask
        Call it with one keyword list per mapped parameter to get a DataFrame, or use
        ``.submit(...)`` for a :class:`MapRun` handle.

    Examples
    --------
    >>> df = map_task(str.upper, concurrency=2)(self=["a", "b"])  # doctest: +SKIP
    """
    if prune is not None:  # validated once, whichever way the task goes
        mt = map_task(
            fn, concurrency=concurrency, min_success_ratio=min_success_ratio, retries=retries,
            timeout=timeout, backend=backend, progress=progress, cache=cache, cache_version=cache_version,
            cache_serialize=cache_serialize, cache_overwrite=cache_overwrite, min_successes=min_successes,
            run_all_sub_nodes=run_all_sub_nodes, metadata=metadata,
        )  # fmt: skip
        options = dataclasses.replace(mt.spec.options, prune=prune)
        return MapTask(dataclasses.replace(mt.spec, options=options))
    if is_flytekit(fn):  # its settings become the defaults; flytekit is imported only now
        from .flyte._flytekit import map_flytekit

        return map_flytekit(
            fn, concurrency=concurrency, min_success_ratio=min_success_ratio, retries=retries,
            timeout=timeout, backend=backend, progress=progress, cache=cache, cache_version=cache_version,
            cache_serialize=cache_serialize, cache_overwrite=cache_overwrite, min_successes=min_successes,
            run_all_sub_nodes=run_all_sub_nodes, metadata=metadata,
        )  # fmt: skip
    if metadata is not None:
        raise InvalidMapError(
            f"metadata= takes a flytekit TaskMetadata for a flytekit task; {function_name(fn)} is not one: "
            "pass retries=, timeout= and cache= instead"
        )
    if is_flyte2(fn):  # a Flyte 2 @env.task: the same, flyte imported only now
        from .flyte._flyte2 import map_flyte2

        return map_flyte2(
            fn, concurrency=concurrency, min_success_ratio=min_success_ratio, retries=retries,
            timeout=timeout, backend=backend, progress=progress, cache=cache, cache_version=cache_version,
            cache_serialize=cache_serialize, cache_overwrite=cache_overwrite, min_successes=min_successes,
            run_all_sub_nodes=run_all_sub_nodes,
        )  # fmt: skip
    return map_function(
        fn, concurrency=concurrency, min_success_ratio=min_success_ratio, retries=retries, timeout=timeout,
        backend=backend, progress=progress, cache=cache, cache_version=cache_version,
        cache_serialize=cache_serialize, cache_overwrite=cache_overwrite, min_successes=min_successes,
        run_all_sub_nodes=run_all_sub_nodes,
    )  # fmt: skip
