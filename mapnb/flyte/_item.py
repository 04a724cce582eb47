"""What flytekit's ``current_context()`` holds for one item, made when the item asks for it:
its checkpoint and its working folder (both paths of :mod:`._flytekit` and :mod:`._fast`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


class LazyFolder:
    """A ``tempfile.TemporaryDirectory`` made on first use: what ``SyncCheckpoint`` keeps in
    ``_td`` for ``restore()`` and ``save()``."""

    def __init__(self) -> None:
        self._td: tempfile.TemporaryDirectory[str] | None = None

    @property
    def name(self) -> str:
        if self._td is None:
            self._td = tempfile.TemporaryDirectory()
        return self._td.name

    def cleanup(self) -> None:
        if self._td is not None:
            self._td.cleanup()


def lazy_checkpoint(cls: Any, dest: str, src: str | None) -> Any:
    """flytekit's ``SyncCheckpoint(dest, src)``, less the temporary folder its ``__init__``
    makes (and ``__del__`` removes) for every item: most items never touch their checkpoint,
    and making and removing that folder was half of a trivial item's time in a worker.
    The attributes are ``SyncCheckpoint.__init__``'s (flytekit 1.x)."""
    cp = cls.__new__(cls)
    cp._checkpoint_dest = dest  # noqa: SLF001
    cp._checkpoint_src = src or None  # noqa: SLF001
    cp._td = LazyFolder()  # noqa: SLF001
    cp._prev_download_path = None  # noqa: SLF001
    return cp


def sandbox() -> tuple[str, bool]:
    """The item's working folder (``current_context().working_directory``), and whether
    it is a temporary one. In a map run it is ``<run folder>/flyte/<item>/<attempt>``,
    kept with the run (pruned with it): a ``FlyteFile`` output points into it."""
    from ..context import current_context

    item = current_context()
    if item.index is None or item._root is None:  # noqa: SLF001
        return tempfile.mkdtemp(prefix="mapnb-flyte-"), True
    folder = Path(item._root).parent / "flyte" / str(item.index) / str(item.attempt)  # noqa: SLF001
    shutil.rmtree(folder, ignore_errors=True)  # a rerun of the run starts clean
    return str(folder), False  # made when the item asks for it (_lazy_workdir_params)


def clean_up(workdir: str, temporary: bool, ok: bool) -> None:
    """After an item: a failed attempt's files are of no use; a success's may be its output
    (a FlyteFile is a path into this folder), so it stays unless it is empty."""
    if os.path.isdir(workdir) and (temporary or not ok or not any(Path(workdir).iterdir())):
        shutil.rmtree(workdir, ignore_errors=True)
        if not temporary:
            with contextlib.suppress(OSError):  # the item's folder, unless another attempt kept files
                os.rmdir(Path(workdir).parent)
