"""Flyte's own objects in mapnb: flytekit 1.x tasks and Flyte 2 (``flyte`` SDK) tasks.

``mapnb.map_task(t)`` takes

- a ``@flytekit.task`` ``t``, ``functools.partial(t, b=...)`` or a
  ``flytekit.map_task(t, concurrency=..., min_success_ratio=..., min_successes=...)``
  object; see :mod:`mapnb.flyte._flytekit` for what is taken from them;
- a Flyte 2 ``@env.task`` (sync or ``async def``) or a partial of one, with its
  ``retries``, ``timeout``, ``cache`` and ``resources``; see :mod:`mapnb.flyte._flyte2`.

:data:`map` is a drop-in for ``flyte.map`` (and ``map.aio`` for ``flyte.map.aio``) that
runs the items in parallel on a mapnb backend, with the live grid in a notebook.

:func:`to_flyte` shows what ``backend="flyte"`` sends to a Flyte cluster: the map as
flytekit's ArrayNode map task in a workflow (see :mod:`mapnb.flyte._translate`).

This module stays light: it tells Flyte's objects apart by their classes' module names,
so ``import mapnb`` never imports flytekit or flyte (``pip install "mapnb[flyte]"``
brings them; a worker imports one only for a task that needs it).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

__all__ = ["is_flyte2", "is_flytekit", "map", "to_flyte"]


def _top_modules(obj: Any) -> set[str]:
    while isinstance(obj, functools.partial):
        obj = obj.func
    return {cls.__module__.split(".")[0] for cls in type(obj).__mro__}


def is_flytekit(obj: Any) -> bool:
    """Whether ``obj`` (or the callable inside a ``functools.partial``) is one of
    flytekit's objects: a task, a map task, a workflow, a launch plan."""
    return "flytekit" in _top_modules(obj)


def is_flyte2(obj: Any) -> bool:
    """Whether ``obj`` (or the callable inside a ``functools.partial``) is one of Flyte 2's
    (the ``flyte`` package's) objects: an ``@env.task``, a ``TaskEnvironment``, a remote task."""
    return "flyte" in _top_modules(obj)


class _Map:
    """``flyte.map``, in parallel: see :meth:`__call__` and :meth:`aio`."""

    def __call__(
        self,
        func: Any,
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = True,
        min_success_ratio: float | None = None,
        backend: Any = "local",
        progress: bool | None = None,
    ) -> Iterator[Any]:
        """Map ``func`` over the iterables zipped, as ``flyte.map`` does, in parallel.

        A drop-in for ``flyte.map``: the same arguments and the same results in the same
        order, but the items run at once on a mapnb backend (Flyte 2's local ``flyte.map``
        runs them one by one), with the live grid in a notebook and the task's retries,
        timeout and cache honoured per item.

        Parameters
        ----------
        func : Flyte 2 task, functools.partial of one, or any function mapnb maps
            A partial's own arguments are the same for every item; the iterables fill the
            inputs it leaves unbound, in order.
        *iterables : iterable
            Zipped, as ``zip`` does: the map stops at the shortest (with a warning when
            they all have lengths and these differ).
        group_name : str, optional
            The run's name in the grid (default: the task's short name).
        concurrency : int
            At most this many items at once; 0 (the default) is the backend's limit (the
            number of usable CPUs for ``"local"``).
        return_exceptions : bool
            True (the default, as ``flyte.map``): a failed item's exception takes its place
            in the results. False: iterating raises it when it reaches that item, and the
            items still running are cancelled.
        min_success_ratio : float, optional
            Not in ``flyte.map``: the run stops as soon as fewer than this share of the
            items can succeed, and iterating raises :class:`mapnb.MapTaskError` where it
            reaches an item that did not run. By default every item runs.
        backend : str or Backend
            ``"local"`` (worker processes, the default), ``"threads"``, ``"sequential"``, ...
        progress : bool, optional
            The live grid in a notebook (by default when in one). False: none.

        Returns
        -------
        iterator
            The results in input order, each as soon as it and those before it are done.
            A failed item is a ``flyte.errors.RuntimeUserError`` (``code`` the exception's
            type, as in a Flyte 2 run; a timeout is ``MaxRuntimeExceededError``) whose
            ``__cause__`` holds the item's traceback. The run starts at the first
            ``next()``; leaving the loop early cancels what still runs.

        Examples
        --------
        >>> squares = list(mapnb.flyte.map(square, range(10)))  # doctest: +SKIP
        """
        from ._flyte2 import map_sync

        return map_sync(
            func, *iterables, group_name=group_name, concurrency=concurrency,
            return_exceptions=return_exceptions, min_success_ratio=min_success_ratio,
            backend=backend, progress=progress,
        )  # fmt: skip

    def aio(
        self,
        func: Any,
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = True,
        min_success_ratio: float | None = None,
        backend: Any = "local",
        progress: bool | None = None,
    ) -> AsyncIterator[Any]:
        """``flyte.map.aio``: the same as calling :data:`map`, for ``async for``.

        The event loop is free while the items run (they run on the backend, not in it).

        Examples
        --------
        >>> async for r in mapnb.flyte.map.aio(square, range(10)):  # doctest: +SKIP
        ...     print(r)
        """
        from ._flyte2 import map_aio

        return map_aio(
            func, *iterables, group_name=group_name, concurrency=concurrency,
            return_exceptions=return_exceptions, min_success_ratio=min_success_ratio,
            backend=backend, progress=progress,
        )  # fmt: skip

    def __repr__(self) -> str:
        return "mapnb.flyte.map"


map = _Map()  # noqa: A001 - the name flyte.map has, for a drop-in


def to_flyte(mt: Any, /, **lists: Any) -> Any:
    """The flytekit ArrayNode map task (and a workflow around it) a map task is on a Flyte
    cluster; ``.idl()`` is its serialised text. See :func:`mapnb.flyte._translate.to_flyte`."""
    from ._translate import to_flyte as translate

    return translate(mt, **lists)
