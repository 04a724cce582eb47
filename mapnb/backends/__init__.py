"""Backends: where the items of a map run. Looked up by name, imported only when used.

=============  ==========================================================================
``local``      the default: a warm pool of worker processes on this machine
``threads``    threads of this process, for I/O-bound work (a timed-out item cannot be
               killed: it is abandoned and runs on)
``sequential`` in the calling process, one item after the other: for tests and debugging
``dask``       a Dask distributed cluster (``pip install 'mapnb[dask]'``): the current
               ``distributed.Client``, else ``MAPNB_DASK_ADDRESS``
``flyte``      the whole map as one ArrayNode execution on a Flyte cluster
               (``pip install 'mapnb[flyte]'``; the user's Flyte config), followed live
=============  ==========================================================================

Register your own with :func:`register_backend`, or ship one in a package of its own with
an entry point in the ``mapnb.backends`` group (``backend="name"`` then finds it)::

    [project.entry-points."mapnb.backends"]
    slurm = "mapnb_slurm:SlurmBackend"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import InvalidMapError
from .base import Backend, Job, Task, usable_cpus

__all__ = ["Backend", "Job", "Task", "get_backend", "register_backend", "usable_cpus"]

# name -> "module:attribute" (imported on first use) or a factory
_REGISTRY: dict[str, str | Callable[[], Backend]] = {
    "local": "mapnb.backends.local:LocalBackend",
    "threads": "mapnb.backends.threads:ThreadBackend",
    "sequential": "mapnb.backends.sequential:SequentialBackend",
    "dask": "mapnb.backends.dask:DaskBackend",
    "flyte": "mapnb.backends.flyte:FlyteBackend",
}
_INSTANCES: dict[str, Backend] = {}


def register_backend(name: str, factory: str | Callable[[], Backend]) -> None:
    """Make ``backend=name`` create a backend with ``factory`` (or a "module:attr" path)."""
    _REGISTRY[name] = factory
    _INSTANCES.pop(name, None)


def _entry_points() -> dict[str, str]:
    """Backends that installed packages declare in the ``mapnb.backends`` entry-point group."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="mapnb.backends")}


def get_backend(backend: Any) -> Backend:
    """The backend for a name or an instance; one shared instance per name."""
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str) and backend not in _REGISTRY:
        # Only on a miss: scanning installed packages' metadata is not free.
        for name, target in _entry_points().items():
            _REGISTRY.setdefault(name, target)
    if not isinstance(backend, str) or backend not in _REGISTRY:
        raise InvalidMapError(
            f"backend must be one of {', '.join(map(repr, sorted(_REGISTRY)))} or a Backend instance; "
            f"got {backend!r}"
        )
    inst = _INSTANCES.get(backend)
    if inst is None:
        factory = _REGISTRY[backend]
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        inst = _INSTANCES[backend] = factory()
    return inst
