"""Flyte's own objects in mapnb: ``mapnb.map_task`` accepts flytekit tasks.

``mapnb.map_task(t)`` takes a ``@flytekit.task`` ``t``, ``functools.partial(t, b=...)``
or a ``flytekit.map_task(t, concurrency=..., min_success_ratio=..., min_successes=...)``
object; see :mod:`mapnb.flyte._flytekit` for what is taken from them.

This module stays light: it tells flytekit's objects apart by their classes' module
names, so ``import mapnb`` never imports flytekit (``pip install "mapnb[flyte]"``
brings it; a worker imports it only for a task that needs it).
"""

from __future__ import annotations

import functools
from typing import Any


def is_flytekit(obj: Any) -> bool:
    """Whether ``obj`` (or the callable inside a ``functools.partial``) is one of
    flytekit's objects: a task, a map task, a workflow, a launch plan."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    return any(cls.__module__.split(".")[0] == "flytekit" for cls in type(obj).__mro__)


def to_flyte(mt: Any, /, **lists: Any) -> Any:
    """The flytekit ArrayNode map task (and a workflow around it) a map task is on a Flyte
    cluster; ``.idl()`` is its serialised text. See :func:`mapnb.flyte._translate.to_flyte`."""
    from ._translate import to_flyte as translate

    return translate(mt, **lists)
