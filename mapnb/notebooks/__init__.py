"""Run Jupyter notebooks in parallel, each notebook (or notebook x parameter set) one
mapnb item: concurrency, timeouts, retries, the live grid, the journal and every backend
apply as to any map task.

>>> import mapnb.notebooks
>>> run = mapnb.notebooks.run("notebooks/", concurrency=4, output_dir="executed")  # doctest: +SKIP
>>> run.df[["notebook", "status", "cell", "error", "duration_s"]]  # doctest: +SKIP

The command line does the same: ``mapnb notebooks notebooks/ --concurrency 4``
(``mapnb notebooks --help``), and so does pytest: ``pytest --mapnb-notebooks notebooks/``.
Inside a notebook, :func:`mapnb.record` adds a column to the notebook's row.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import glob
import itertools
import math
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidMapError, MapTaskError, RemoteError, RunInterrupted
from ..events import Event, ItemFinished, RunFinished, RunStatus, Status
from ..run import MapRun
from . import _params
from ._execute import (
    CellError,
    KernelDiedError,
    KernelStartError,
    Settings,
    details_of,
    kernel_of,
    write_text,
)
from ._params import ParameterWarning, parse_value

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "KernelDiedError",
    "KernelStartError",
    "CellError",
    "NotebookRun",
    "ParameterWarning",
    "find",
    "parse_value",
    "recover",
    "run",
]

CACHE_VERSION = "notebooks-1"  # bump when what an item returns changes shape
_SKIP_DIRS = {".ipynb_checkpoints", ".git", "__pycache__", ".venv", "node_modules"}


def find(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """The notebooks named by ``paths``: files, folders (searched recursively, checkpoints
    and hidden folders skipped) and glob patterns, in order, each once.

    Raises
    ------
    InvalidMapError
        A path that does not exist, is not a ``.ipynb`` file, or a pattern or folder that
        matches no notebook.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    skip = {Path(e).resolve() for e in exclude}

    def kept(p: Path) -> bool:
        r = p.resolve()
        return r not in skip and not any(s in r.parents for s in skip)

    found: dict[Path, None] = {}
    for raw in paths:
        for p in _notebooks_of(os.fspath(raw), kept):
            found.setdefault(p, None)
    if not found:
        raise InvalidMapError("paths: no notebooks given")
    return list(found)


def _notebooks_of(text: str, kept: Callable[[Path], bool]) -> list[Path]:
    """The notebooks one path names (a pattern, a folder or a file), sorted."""
    if glob.has_magic(text):
        hits = sorted(Path(h) for h in glob.glob(text, recursive=True) if h.endswith(".ipynb"))
        if not hits:
            raise InvalidMapError(f"paths: the pattern {text!r} matches no notebook")
        return [h for h in hits if kept(h)]
    p = Path(text)
    if p.is_dir():
        hits = [
            q for q in sorted(p.rglob("*.ipynb"))
            if kept(q) and not any(part in _SKIP_DIRS or part.startswith(".") for part in q.relative_to(p).parts[:-1])
        ]  # fmt: skip
        if not hits:
            raise InvalidMapError(f"paths: the folder {text!r} holds no notebook (*.ipynb)")
        return hits
    if p.is_file():
        if p.suffix != ".ipynb":
            raise InvalidMapError(f"paths: {text!r} is not a notebook; give .ipynb files, folders or patterns")
        return [p] if kept(p) else []
    raise InvalidMapError(f"paths: {text!r} does not exist")


class _Node(dict[str, Any]):
    """A notebook read as plain JSON, with nbformat's attribute access (``nb.cells``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _node(value: Any) -> Any:
    if isinstance(value, dict):
        node = _Node({k: _node(v) for k, v in value.items()})
        if isinstance(node.get("source"), list):
            node["source"] = "".join(node["source"])
        return node
    if isinstance(value, list):
        return [_node(v) for v in value]
    return value


def _read(path: Path) -> Any:
    """The notebook, checked: JSON of nbformat 4 with a list of cells.

    Read as plain JSON: importing nbformat costs ~0.7 s (its JSON-schema validator), a
    large share of a cached re-run; each worker imports it anyway while its kernel boots.
    """
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidMapError(f"{path} is not a valid notebook: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) or data.get("nbformat") != 4:
        if isinstance(data, dict) and data.get("nbformat") == 3:  # old notebooks: nbformat converts them
            import nbformat

            return nbformat.read(path, as_version=4)
        raise InvalidMapError(
            f"{path} is not a valid notebook: expected nbformat 4 JSON with a list of cells"
        )
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise InvalidMapError(f"{path} is not a valid notebook: cell {i} has no valid cell_type")
        if not isinstance(cell.get("source", ""), (str, list)):
            raise InvalidMapError(f"{path} is not a valid notebook: cell {i} has no valid source")
    return _node(data)


def _installed_kernels() -> dict[str, Any]:
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager()
    return {name: ksm.get_kernel_spec(name) for name in ksm.find_kernel_specs()}


def _param_sets(
    parameters: Mapping[str, Any] | None, product: Mapping[str, Sequence[Any]] | None
) -> list[dict[str, Any]]:
    base = dict(parameters or {})
    _params.check_names(base, "parameters")
    if not product:
        return [base]
    if not isinstance(product, Mapping):
        raise InvalidMapError(f"product must map names to lists of values; got {type(product).__name__}")
    both = sorted(set(base) & set(product))
    if both:
        raise InvalidMapError(
            f"parameter{'s' * (len(both) > 1)} {', '.join(both)} given both as a fixed value and in product; give each once"
        )
    lists: dict[str, list[Any]] = {}
    for name, values in product.items():
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
            raise InvalidMapError(f"product: {name} must be a list of values; got {values!r}")
        lists[name] = list(values)
        if not lists[name]:
            raise InvalidMapError(f"product: {name} has no values")
        for v in lists[name]:
            _params.check_names({name: v}, "product")
    return [{**base, **dict(zip(lists, combo))} for combo in itertools.product(*lists.values())]


def _slug(params: dict[str, Any]) -> str:
    text = "-".join(f"{k}={v}" for k, v in params.items())
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)[:100]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _output_path(
    output_dir: Path, shown: str, params: dict[str, Any], swept: Iterable[str], outside: Path | None
) -> str:
    rel = Path(shown)
    if rel.is_absolute() or ".." in rel.parts:
        # Outside the working folder: relative to the notebooks' common folder instead.
        rel = Path(shown).resolve().relative_to(outside) if outside is not None else Path(rel.name)
    varying = {k: params[k] for k in swept}
    if varying:  # one file per combination: the swept values in the name
        rel = rel.with_name(f"{rel.stem}[{_slug(varying)}]{rel.suffix}")
    return str(output_dir / rel)


_write_lock = threading.Lock()

_COLUMNS = (
    "notebook", "parameters", "status", "cell", "line", "source_line", "error", "duration_s", "attempts",
    "cells_run", "cell_durations", "output", "kernel",
)  # fmt: skip


class NotebookRun(MapRun):
    """A :class:`~mapnb.MapRun` of notebooks, whose DataFrame describes notebooks.

    Columns of :attr:`df`: ``notebook``, ``parameters``, ``status`` (``succeeded``,
    ``failed``, ``cached``, ...), ``cell`` (the failing cell's index in the notebook file,
    counting every cell from 0), ``line`` (its line, from 1) and ``source_line`` (that
    line's text), ``error`` (one line), ``duration_s``, ``attempts``, ``cells_run``,
    ``cell_durations`` (seconds per executed code cell, by cell index), ``output`` (the
    executed notebook's path) and ``kernel``; then one column per name the notebooks
    recorded with :func:`mapnb.record` (``record.NAME`` where a name is taken).
    """

    _ratio = 1.0  # the share of notebooks that must succeed for the run to succeed

    @classmethod
    def adopt(cls, run: MapRun, min_success_ratio: float | None = None) -> NotebookRun:
        """Make a run of notebook items a NotebookRun, in place."""
        run.__class__ = cls
        run.name = "notebooks"
        if min_success_ratio is not None:
            run._ratio = min_success_ratio  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    def _enough(self) -> bool:
        ok = sum(s in (Status.SUCCEEDED, Status.CACHED) for s in self.view.status)
        return ok >= math.ceil(len(self) * self._ratio - 1e-9)

    @property
    def state(self) -> RunStatus:
        """``"running"``, ``"succeeded"``, ``"failed"`` or ``"cancelled"``: failed when fewer
        notebooks succeeded than ``min_success_ratio`` asks (by default, any failed)."""
        s = MapRun.state.fget(self)  # type: ignore[attr-defined]
        return RunStatus.FAILED if s is RunStatus.SUCCEEDED and not self._enough() else s

    def exception(self) -> MapTaskError | None:
        """The error :meth:`result` would raise for a finished run, else None."""
        exc = MapRun.exception(self)
        if exc is not None or not self.done() or self._enough():
            return exc
        bad = self.failures()
        ok = len(self) - len(bad)
        need = math.ceil(len(self) * self._ratio - 1e-9)
        i = bad[0]
        d = self.details(i)
        msg = (
            f"notebooks: {ok} of {len(self)} succeeded, {need} needed (min_success_ratio).\n"
            f"First failure: {self.inputs[i][0]} {self.inputs[i][1] or ''}: {d.get('error')}"
        )
        exc = MapTaskError(msg, self, i)
        err = self.view.errors[i]
        if err is not None and err.traceback:
            exc.__cause__ = RemoteError(d.get("traceback") or err.traceback)
        return exc

    def details(self, index: int) -> dict[str, Any]:
        """What is known of notebook ``index``: its summary, or its failure's details
        (cell, line, source, traceback, per-cell durations, records)."""
        status = self.view.status[index]
        if status in (Status.SUCCEEDED, Status.CACHED):
            out = self.view.outputs[index]
            return dict(out) if isinstance(out, Mapping) else {}
        err = self.view.errors[index]
        if err is None:
            return {}
        got = details_of(err.message)
        if got is not None:
            return got
        return {"error": err.one_line(), "traceback": err.traceback}

    def columns(self) -> dict[str, list[Any]]:
        """The DataFrame's columns as plain lists (what :attr:`df` is made of; the command
        line reports from it without importing pandas)."""
        rows: list[dict[str, Any]] = []
        recorded: dict[str, None] = {}
        for i, (notebook, params, output, _key) in enumerate(self.inputs):
            d = self.details(i)
            status = self.view.status[i]
            good = status in (Status.SUCCEEDED, Status.CACHED)
            records = d.get("records") or {}
            recorded.update(dict.fromkeys(records))
            durations = d.get("cell_durations")
            rows.append({
                "notebook": notebook,
                "parameters": params,
                "status": status._value_,
                "cell": None if good else d.get("cell"),
                "line": None if good else d.get("line"),
                "source_line": None if good else d.get("source_line"),
                "error": None if good else d.get("error"),
                "duration_s": self.view.durations[i],
                "attempts": self.view.attempts[i],
                "cells_run": d.get("cells_run"),
                "cell_durations": {int(k): v for k, v in durations.items()} if durations else durations,
                "output": output,
                "kernel": d.get("kernel"),
                "_records": records,
            })  # fmt: skip
        columns: dict[str, list[Any]] = {k: [r[k] for r in rows] for k in _COLUMNS}
        for name in recorded:
            key = name if name not in columns else f"record.{name}"
            columns[key] = [r["_records"].get(name) for r in rows]
        return columns

    def rows(self) -> list[dict[str, Any]]:
        """The DataFrame's rows as plain dicts."""
        cols = self.columns()
        return [dict(zip(cols, values)) for values in zip(*cols.values())]

    @property
    def df(self) -> pd.DataFrame:
        """One row per notebook (x parameter set), in input order; see the class docstring."""
        import pandas as pd

        data: dict[str, Any] = {}
        for key, values in self.columns().items():
            if key == "duration_s":
                data[key] = pd.Series(values, dtype="float64")
            elif any(v is None for v in values):  # None stays None (not NaN, ints stay ints)
                data[key] = pd.Series(values, dtype=object)
            else:
                data[key] = values
        return pd.DataFrame(data, index=pd.RangeIndex(len(self)))

    def cancel(
        self, indices: Iterable[int] | bool | None = None, wait: bool = True, timeout: float | None = 30.0
    ) -> None:
        """As :meth:`mapnb.MapRun.cancel`, and the kernels of running notebooks are killed
        where mapnb cannot kill the item itself (the threads and sequential backends)."""
        from ._execute import kill_running

        if indices is not None and not isinstance(indices, bool):  # a subset: as MapRun does it
            MapRun.cancel(self, indices, wait=wait, timeout=timeout)
            return
        self._engine.cancel()  # (control: the run's engine)
        kill_running(self.id)
        MapRun.cancel(self, indices, wait=wait, timeout=timeout)

    _rewrite = False  # write cached notebooks' stored copies to their output paths
    _written: set[int] | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """As :meth:`mapnb.MapRun.wait`; once done, every cached notebook's stored executed
        copy is also in its output path."""
        done = MapRun.wait(self, timeout)
        if done and self._rewrite:
            self._write_cached(range(len(self)))
        return done

    def _on_cached(self, events: list[Event]) -> None:
        self._write_cached(
            [ev.index for ev in events if isinstance(ev, ItemFinished) and ev.status is Status.CACHED]
        )

    def _write_cached(self, indices: Iterable[int]) -> None:
        with _write_lock:
            if self._written is None:
                self._written = set()
            for i in indices:
                if i in self._written or self.view.status[i] is not Status.CACHED:
                    continue
                out, target = self.view.outputs[i], self.inputs[i][2]
                text = out.get("notebook_json") if isinstance(out, Mapping) else None
                if target and text:
                    write_text(target, text)
                self._written.add(i)

    def failures(self) -> list[int]:
        """The indices of the notebooks that did not succeed (failed, aborted, cancelled)."""
        return [
            i
            for i, s in enumerate(self.view.status)
            if s.final and s not in (Status.SUCCEEDED, Status.CACHED)
        ]


def _reap_when_done(kms: list[Any], spool: str | None) -> Any:
    """Once the run ends: kill the spooled kernels no item took, reap those items killed."""
    from ._execute import kill_group, kill_kernel

    def reap() -> None:
        for km in kms:
            kill_kernel(km)
        if spool:
            shutil.rmtree(spool, ignore_errors=True)

    def on_events(events: list[Event]) -> None:
        if any(isinstance(ev, RunFinished) for ev in events):
            for km in kms:  # at once; reaping them may take a moment, off the engine's thread
                kill_group(km)
            threading.Thread(target=reap, daemon=False).start()  # zmq: see _execute._launch_spare

    for km in kms:  # and if this process ends first
        atexit.register(kill_kernel, km)
    return on_events


def run(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    parameters: Mapping[str, Any] | None = None,
    product: Mapping[str, Sequence[Any]] | None = None,
    kernel: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    cell_timeout: float | None = None,
    startup_timeout: float = 60.0,
    retries: int = 0,
    min_success_ratio: float | None = None,
    backend: str | Any = "local",
    cache: bool = False,
    depends: Sequence[str | os.PathLike[str]] = (),
    lock_file: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    wait: bool = True,
    warm: bool = True,
) -> NotebookRun:
    """Execute notebooks in parallel, each (or each notebook x parameter set) one mapnb item.

    Everything is checked before anything runs: paths, notebooks, kernels, parameters.

    Parameters
    ----------
    paths : path, pattern, or a list of them
        Notebooks, folders (searched recursively) and glob patterns.
    parameters : mapping, optional
        Values injected into every notebook after its cell tagged ``parameters`` (as an
        ``injected-parameters`` cell), as papermill does. A name the notebook does not
        declare there is injected with a :class:`ParameterWarning`; a notebook without
        such a cell gets them at the top, with a warning too.
    product : mapping of lists, optional
        A sweep: each notebook runs once per combination of these values.
    kernel : str, optional
        The kernel to run every notebook in (default: each notebook's kernelspec).
    output_dir : path, optional
        Where the executed notebooks are written (same relative paths; a sweep adds the
        parameters to the name); a failed notebook gets a banner above its failing cell.
        None: nothing is written.
    concurrency : int, optional
        Notebooks running at once (default: the usable CPUs).
    timeout : float, optional
        Seconds per notebook; past it the kernel's process group is killed and the error
        names the cell that was running.
    cell_timeout : float, optional
        Seconds per cell, likewise.
    startup_timeout : float
        Seconds a kernel may take to start (a failed start is retried at once).
    retries : int
        Extra attempts for infrastructure failures only (the kernel died or did not start);
        a cell that raised or timed out is never retried.
    min_success_ratio : float, optional
        The share of notebooks that must succeed for the run to succeed. By default every
        notebook runs and all must succeed; given, the run stops as soon as the ratio can
        no longer be met, as :func:`mapnb.map_task` does.
    backend : str or Backend
        As in :func:`mapnb.map_task`: ``"local"``, ``"threads"``, ``"dask"``, ...
    cache : bool
        Skip a notebook whose content hash is unchanged since it last succeeded: its code
        cells, kernel, parameters, the contents of ``depends`` and the installed packages
        (or ``lock_file``). It shows as ``cached`` and its stored executed notebook is
        written to ``output_dir`` again.
    depends : sequence of paths
        Files and folders whose contents are part of the cache key.
    lock_file : path, optional
        A lock file whose contents stand for the installed packages in the cache key.
    progress : bool, optional
        The live grid in a notebook, a progress bar on a terminal (as ``map_task``).
    wait : bool
        Block until the run is done (showing progress); False: return at once.
    warm : bool
        Launch the next kernel while a notebook runs, so the next notebook of the same
        worker does not wait for a kernel to start.

    Returns
    -------
    NotebookRun
        A :class:`~mapnb.MapRun` whose ``df`` has one row per notebook; a failed run does
        not raise here (``run.result()`` does).
    """
    from ..api import map_task

    _check_options(output_dir, timeout, cell_timeout, startup_timeout, retries, kernel)
    out_dir = Path(output_dir) if output_dir is not None else None
    files = find(paths, exclude=[out_dir] if out_dir is not None else ())
    sets = _param_sets(parameters, product)
    shared = ""
    if cache:
        from ._cache import depends_hash, packages_hash

        shared = depends_hash(depends) + packages_hash(lock_file)
    elif depends or lock_file is not None:
        raise InvalidMapError("depends and lock_file are part of the cache key: they need cache=True")
    names, params_list, outputs, keys = _items(files, sets, list(product or {}), kernel, out_dir, cache, shared)

    from ..backends import get_backend

    slots = concurrency or (get_backend(backend).default_concurrency() if isinstance(backend, str) else 1)
    settings = Settings(
        kernel=kernel, cell_timeout=cell_timeout, timeout=timeout, startup_timeout=startup_timeout,
        keep_notebook=cache, warm=warm and len(names) > slots, items=len(names), slots=slots,
    )  # fmt: skip
    settings, spooled = _spool(settings, cache, backend, files, sets, kernel, names, slots)
    from ._execute import execute

    fn: Any = functools.partial(execute, settings=settings)
    if cache:
        from ..api import task

        fn = task(fn, cache=True, cache_version=CACHE_VERSION, cache_ignore_input_vars=("output", "settings"))
    # mapnb's own timeout is a backstop past ours, which says which cell hung.
    backstop = timeout + startup_timeout * START_FACTOR + 30 if timeout else None
    mt = map_task(
        fn, concurrency=concurrency, retries=retries, timeout=backstop,
        min_success_ratio=0.0 if min_success_ratio is None else min_success_ratio,
        backend=backend, progress=progress, cache=cache or None,
    )  # fmt: skip
    mrun = mt.submit(notebook=names, parameters=params_list, output=outputs, key=keys)
    nrun = NotebookRun.adopt(mrun, min_success_ratio)
    if spooled:
        nrun.subscribe(_reap_when_done(spooled, settings.spool))
    if cache and out_dir is not None:
        nrun._rewrite = True
        nrun.subscribe(nrun._on_cached)
    if wait:
        _block(nrun, progress)
    return nrun


def _check_options(
    output_dir: Any, timeout: Any, cell_timeout: Any, startup_timeout: Any, retries: Any, kernel: Any
) -> None:
    """Clear errors, before anything runs, for run()'s options."""
    from ..spec import check_int

    if output_dir is not None and not isinstance(output_dir, (str, os.PathLike)):
        raise InvalidMapError(f"output_dir must be a path; got {output_dir!r}")
    for name, value in (("timeout", timeout), ("cell_timeout", cell_timeout), ("startup_timeout", startup_timeout)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise InvalidMapError(f"{name} must be a positive number of seconds; got {value!r}")
    check_int("retries", retries, minimum=0)
    if kernel is not None and (not isinstance(kernel, str) or not kernel):
        raise InvalidMapError(f"kernel must be a kernel name such as 'python3'; got {kernel!r}")


def _check_kernel(path: Path, nb: Any, name: str, kernel: str | None, kernels: dict[str, Any], params: bool) -> None:
    """The notebook's kernel is installed, and can take parameters when there are some."""
    if name not in kernels:
        where = "given as kernel" if kernel else f"named in {path}'s metadata"
        raise InvalidMapError(
            f"kernel {name!r} ({where}) is not installed; installed: {', '.join(sorted(kernels)) or 'none'}. "
            "Install it, or pick one with kernel=... (--kernel)"
        )
    if params and (kernels[name].language or "").lower() != "python":
        raise InvalidMapError(
            f"{path}: parameters can only be injected into Python notebooks; kernel {name!r} runs "
            f"{kernels[name].language}"
        )


def _items(
    files: list[Path],
    sets: list[dict[str, Any]],
    swept: list[str],
    kernel: str | None,
    out_dir: Path | None,
    cache: bool,
    shared: str,
) -> tuple[list[str], list[dict[str, Any]], list[str | None], list[str]]:
    """The run's items, notebook x parameter set: names, parameters, output paths, cache keys.
    Every notebook is checked (kernel, declared parameters) before anything runs."""
    kernels = _installed_kernels()
    resolved = [f.resolve() for f in files]
    outside = Path(os.path.commonpath([str(r.parent) for r in resolved])) if resolved else None
    names: list[str] = []
    params_list: list[dict[str, Any]] = []
    outputs: list[str | None] = []
    keys: list[str] = []
    for path in files:
        nb = _read(path)
        name = kernel_of(nb, kernel)
        _check_kernel(path, nb, name, kernel, kernels, any(sets[0]))
        shown = _display(path)
        _params.check_against(nb, sets[0], shown)
        for params in sets:
            names.append(shown)
            params_list.append(params)
            outputs.append(_output_path(out_dir, shown, params, swept, outside) if out_dir is not None else None)
            if cache:
                from ._cache import notebook_key

                keys.append(notebook_key(nb, name, params, shared)[:16])
            else:
                keys.append("")
    return names, params_list, outputs, keys


def _spool(
    settings: Settings,
    cache: bool,
    backend: Any,
    files: list[Path],
    sets: list[dict[str, Any]],
    kernel: str | None,
    names: list[str],
    slots: int,
) -> tuple[Settings, list[Any]]:
    """The first notebooks' kernels, booting here while the worker pool starts; each item
    claims one (later ones find a kernel their worker started while it was busy). Not with
    the cache: its hits need no kernel, and it is not known here which will hit."""
    if not settings.warm or cache or not (isinstance(backend, str) and backend in ("local", "threads", "sequential")):
        return settings, []
    from ._execute import spool_kernels

    first = [kernel_of(_read(files[min(k // len(sets), len(files) - 1)]), kernel) for k in range(min(slots, len(names)))]
    spool, spooled = spool_kernels(first, os.getcwd())
    return dataclasses.replace(settings, spool=spool), spooled


START_FACTOR = 3  # kernel start attempts, in the backstop timeout


def _block(run: NotebookRun, progress: bool | None) -> None:
    try:
        run.show_until_done(progress)
    except (KeyboardInterrupt, SystemExit):
        run.cancel(wait=True)
        raise RunInterrupted(run) from None


def recover(run_id: str, *, wait: bool = True, progress: bool | None = None) -> NotebookRun:
    """Continue run ``run_id`` of notebooks (even one whose process died): notebooks that
    succeeded are kept, the others run again. See :func:`mapnb.recover`."""
    from ..api import recover as recover_run

    nrun = NotebookRun.adopt(recover_run(run_id))
    if wait:
        _block(nrun, progress)
    return nrun
