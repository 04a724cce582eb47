"""One notebook as one mapnb item: run it in a real Jupyter kernel through nbclient.

:func:`execute` is the item's function. It runs wherever mapnb runs the item (a worker
process of the local pool, a thread, a Dask worker) and

- takes a kernel: a warm one launched while the previous notebook of this worker ran, or
  a new one; a start that fails (two kernels racing for the same ports, jupyter_client
  #487) is retried with a fresh kernel here, before any cell ran;
- runs the cells, printing ``── cell k/N ──`` and the cells' streamed output, so the item's
  log (the grid, ``run.logs(i)``) follows the notebook as it runs;
- enforces the per-cell and the per-notebook timeouts itself, killing the kernel's process
  group, so that the error says which cell hung;
- writes the executed notebook (a banner at the failing cell, as papermill does) and
  returns a summary, or raises.

Cell failures raise :class:`CellError`, a :class:`mapnb.errors.NotRetried` (the engine
never retries it), so ``retries`` apply only to infrastructure failures:
:class:`KernelStartError` and :class:`KernelDiedError`.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import NotRetried
from ..worker import run_coroutine
from . import _params

MARK = "[mapnb.notebooks] "  # the last line of a failure's message: its details, as JSON
START_ATTEMPTS = 3
SPARE_DELAY = 1.0  # seconds into a notebook at the latest, the next kernel is launched
SPARE_IDLE = float(os.environ.get("MAPNB_NOTEBOOK_SPARE_IDLE", "20"))
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every notebook of a run shares (bound to :func:`execute` with a partial)."""

    kernel: str | None = None  # None: the notebook's own kernelspec
    cell_timeout: float | None = None
    timeout: float | None = None
    startup_timeout: float = 60.0
    keep_notebook: bool = False  # return the executed notebook (the cache stores it)
    warm: bool = True  # launch the next kernel while this notebook runs
    spool: str | None = None  # a folder of kernels the caller launched for the first notebooks
    items: int = 0  # notebooks in the run, and
    slots: int = 1  # how many run at once: no warm kernel for the last ones, nobody would use it


class CellError(NotRetried):
    """A notebook failed on its own: a cell raised, or ran out of time. Retrying cannot help."""


class KernelStartError(RuntimeError):
    """The kernel did not start (after several tries): an infrastructure failure, retried."""


class KernelDiedError(RuntimeError):
    """The kernel died while a cell ran (out of memory, a crash): retried with ``retries``."""


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


# -- kernels: warm spares, started while the previous notebook runs ------------------------

_spares: dict[str, list[Any]] = {}
_active: dict[str | None, set[Any]] = {}  # run id -> kernels running its notebooks in this process
_spares_lock = threading.Lock()
_reaper: threading.Timer | None = None


def _kernel_pid(km: Any) -> int | None:
    prov = getattr(km, "provisioner", None)
    proc = getattr(prov, "process", None)
    return getattr(proc, "pid", None)


def kill_group(km: Any) -> None:
    """Kill the kernel and everything it started: its process group (jupyter_client puts
    each kernel in a session of its own)."""
    pid = _kernel_pid(km)
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_kernel(km: Any) -> None:
    """:func:`kill_group`, then reap the process and clean up its files."""
    kill_group(km)
    try:
        km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - it is gone either way; only its files may remain
        pass
    try:
        km.cleanup_resources()
    except Exception:  # noqa: BLE001
        pass


def _launch(kernel_name: str, cwd: str) -> Any:
    """Launch a kernel process; it gets ready on its own while we do something else."""
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name=kernel_name, client_class="jupyter_client.asynchronous.AsyncKernelClient")
    extra = []
    if km.ipykernel:
        # Its start-up warnings (TCP without encryption) would open every notebook's log.
        extra.append("--IPKernelApp.log_level=ERROR")
        # Parallel kernels sharing one IPython history database lock each other out.
        extra.append("--HistoryManager.hist_file=:memory:")
    km.start_kernel(cwd=cwd, extra_arguments=extra, env=_kernel_env())
    return km


def _kernel_env() -> dict[str, str]:
    """The worker's environment, with this mapnb importable in the kernel: ``mapnb.record``
    then talks to the very mapnb that reads it back (a worktree, a source checkout)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts and Path(root).name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


def _take_spare(kernel_name: str) -> Any | None:
    with _spares_lock:
        pool = _spares.get(kernel_name) or []
        while pool:
            km = pool.pop()
            if km.is_alive():
                return km
            kill_kernel(km)
    return None


def _add_spare(kernel_name: str, cwd: str) -> None:
    from jupyter_client import KernelManager

    try:
        if not KernelManager(kernel_name=kernel_name).ipykernel:
            return  # only an IPython kernel can be moved to the next notebook's folder
        km = _launch(kernel_name, cwd)
    except Exception:  # noqa: BLE001 - a spare is an optimisation; the next item starts its own
        return
    if not km.ipykernel:  # only an IPython kernel can be moved to the next notebook's folder
        kill_kernel(km)
        return
    km._mapnb_spare = True
    with _spares_lock:
        _spares.setdefault(kernel_name, []).append(km)


def _schedule_reap() -> None:
    """Spares unused for SPARE_IDLE seconds are shut down: nothing outlives the run for long."""
    global _reaper
    with _spares_lock:
        if _reaper is not None:
            _reaper.cancel()
        _reaper = threading.Timer(SPARE_IDLE, shutdown_spares)
        _reaper.daemon = True
        _reaper.start()


def _run_id() -> str | None:
    from ..context import current_context

    return current_context().run_id


def kill_running(run_id: str) -> int:
    """Kill the kernels of run ``run_id``'s notebooks running in this process (the threads
    and sequential backends cannot stop an item; killing its kernel ends it). Returns how many."""
    with _spares_lock:
        kms = list(_active.pop(run_id, ()))
    for km in kms:
        kill_group(km)
    return len(kms)


def shutdown_spares() -> None:
    """Kill every warm kernel of this process."""
    with _spares_lock:
        kms = [km for pool in _spares.values() for km in pool]
        _spares.clear()
    for km in kms:
        kill_kernel(km)


atexit.register(shutdown_spares)


class ForeignKernel:
    """A kernel launched by the process that started the run (see :func:`spool_kernels`),
    driven here through its connection file: the few attributes nbclient and this module
    use of a ``KernelManager``."""

    has_kernel = True
    ipykernel = True

    def __init__(self, connection_file: str, pid: int) -> None:
        self.connection_file, self.pid = connection_file, pid
        self.provisioner = type("P", (), {"process": type("Q", (), {"pid": pid})()})()

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def client(self) -> Any:
        from jupyter_client.asynchronous import AsyncKernelClient

        kc = AsyncKernelClient()
        kc.load_connection_file(self.connection_file)
        return kc

    def interrupt_kernel(self) -> None:
        os.kill(self.pid, signal.SIGINT)

    def shutdown_kernel(self, now: bool = True) -> None:
        kill_group(self)

    def cleanup_resources(self) -> None:
        pass  # the process that launched it reaps it and removes its files


def _claim_spooled(spool: str | None, kernel_name: str) -> ForeignKernel | None:
    """A kernel from the run's spool, claimed by an atomic rename (one taker each)."""
    if not spool:
        return None
    try:
        entries = sorted(os.listdir(spool))
    except OSError:
        return None
    for entry in entries:
        if not (entry.startswith(kernel_name + ".") and entry.endswith(".json")):
            continue
        src = os.path.join(spool, entry)
        claimed = src + f".claimed-{os.getpid()}"
        try:
            os.rename(src, claimed)
        except OSError:
            continue  # another worker took it
        try:
            with open(claimed, encoding="utf-8") as f:
                info = json.load(f)
            km = ForeignKernel(info["connection_file"], int(info["pid"]))
        except (OSError, ValueError, KeyError):
            continue
        if km.is_alive():
            return km
    return None


def spool_kernels(names: list[str], cwd: str) -> tuple[str, list[Any]]:
    """Launch kernels for the first notebooks of a run, in the caller, before the workers
    exist: they boot while the pool starts. Returns the spool folder and the managers
    (the caller kills and reaps them all when the run ends)."""
    import uuid

    spool = tempfile.mkdtemp(prefix="mapnb-kernels-")
    kms = []
    for name in names:
        try:
            km = _launch(name, cwd)
        except Exception:  # noqa: BLE001 - an optimisation only: the item launches its own
            continue
        kms.append(km)
        if not km.ipykernel:  # only an IPython kernel can be moved to its notebook's folder
            kill_group(km)
            continue
        entry = os.path.join(spool, f"{name}.{uuid.uuid4().hex}.json")
        with open(entry + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"connection_file": km.connection_file, "pid": _kernel_pid(km)}, f)
        os.replace(entry + ".tmp", entry)
    return spool, kms


def _acquire(kernel_name: str, cwd: str, spool: str | None = None) -> Any:
    """A kernel the caller launched, a warm one of this process, else one launched now:
    either way it boots while this process imports nbclient and reads the notebook."""
    return _claim_spooled(spool, kernel_name) or _take_spare(kernel_name) or _launch(kernel_name, cwd)


async def _ready_kernel(km: Any, kernel_name: str, cwd: str, startup_timeout: float) -> tuple[Any, Any]:
    """``km`` (or a replacement) answering kernel_info, its client's channels open, working
    in ``cwd``. A start that fails is retried with a new kernel: no cell has run yet."""
    last: BaseException | None = None
    for attempt in range(START_ATTEMPTS):
        kc = None
        try:
            if km is None:
                km = _launch(kernel_name, cwd)
            kc = km.client()
            kc.start_channels()
            await _wait_ready(km, kc, startup_timeout)
            kc.allow_stdin = False
            if km.ipykernel:
                # A warm kernel was launched for another folder; every kernel works where
                # its notebook is (papermill and nbclient do the same with cwd).
                await _silent(kc, f"import os as _mapnb_os; _mapnb_os.chdir({cwd!r}); del _mapnb_os")
            return km, kc
        except Exception as e:  # the port race, a kernel that died at start, a slow start
            last = e
            if kc is not None:
                try:
                    kc.stop_channels()
                except Exception:  # noqa: BLE001
                    pass
            if km is not None:
                kill_kernel(km)
            km = None
            print(
                f"kernel {kernel_name} failed to start ({type(e).__name__}: {e}); trying again",
                file=sys.stderr,
            )
            await asyncio.sleep(0.2 * (attempt + 1))
    raise KernelStartError(f"kernel {kernel_name!r} did not start after {START_ATTEMPTS} tries: {last}")


async def _wait_ready(km: Any, kc: Any, timeout: float) -> None:
    """Until the kernel answers kernel_info and IOPub is connected (a message arrives on it;
    before that, a cell's output would be lost), as ``wait_for_ready`` does, without its
    final wait for 0.2 s of silence on IOPub, a fifth of a second per notebook: what is
    left there is drained at once (nbclient reads only the messages of its own cells)."""
    deadline = time.monotonic() + timeout
    while True:
        if await _kernel_info_replied(kc) and await _iopub_connected(kc):
            return
        if not km.is_alive():
            raise RuntimeError("the kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the kernel did not answer within {timeout:g} s")


async def _kernel_info_replied(kc: Any) -> bool:
    """Ask for kernel_info; whether the reply came within half a second."""
    from queue import Empty

    msg_id = kc.kernel_info()
    try:
        while True:
            reply = await kc.get_shell_msg(timeout=0.5)
            if reply["parent_header"].get("msg_id") == msg_id:
                return True
    except Empty:
        return False


async def _iopub_connected(kc: Any) -> bool:
    """Whether a message arrives on IOPub within half a second (then drain what is there)."""
    from queue import Empty

    try:
        await kc.get_iopub_msg(timeout=0.5)
    except Empty:
        return False  # IOPub not connected yet: ask again
    while True:
        try:
            await kc.get_iopub_msg(timeout=0)
        except Empty:
            return True


async def _silent(kc: Any, code: str) -> None:
    msg_id = kc.execute(code, silent=True, store_history=False)
    while True:
        reply = await kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"setting up the kernel failed: {reply['content'].get('evalue')}")
            return


# -- running one notebook ------------------------------------------------------------------


def kernel_of(nb: Any, override: str | None) -> str:
    """The kernel a notebook runs in: ``override``, else its kernelspec, else python3."""
    if override:
        return override
    spec = nb.get("metadata", {}).get("kernelspec") or {}
    return spec.get("name") or "python3"


def _location(cell_source: str, traceback_lines: list[str], execution_count: Any) -> int | None:
    """The line of the failing cell that raised, from IPython's traceback ("Cell In[3], line 2")."""
    found = None
    for raw in traceback_lines:
        for cell_at in re.finditer(r"Cell In\s*\[(\d*)\],\s*line (\d+)", strip_ansi(raw)):
            if str(cell_at.group(1)) in ("", str(execution_count)):
                found = int(cell_at.group(2))
    if found is None:  # a SyntaxError says "line N" in its message
        for raw in traceback_lines:
            file_at = re.search(r'File "?<?[^,]*>?"?, line (\d+)', strip_ansi(raw))
            if file_at:
                found = int(file_at.group(1))
    n = len(cell_source.splitlines())
    if found is not None and not 1 <= found <= max(n, 1):
        return None
    return found


def _banner(cell_index: int, line: int | None, message: str) -> Any:
    import nbformat

    where = f"cell {cell_index}" + (f", line {line}" if line else "")
    text = (
        f'<span style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;">'
        f"An exception was raised in the cell below ({where}):</span><br>\n\n```\n{message}\n```"
    )
    cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": ["mapnb-error"]})
    return cell


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, target)


def _write(nb: Any, path: str) -> None:
    import nbformat

    text = nbformat.writes(nb)
    write_text(path, text if text.endswith("\n") else text + "\n")  # as nbformat.write does


def records_of(nb: Any) -> dict[str, Any]:
    """What the notebook recorded with ``mapnb.record``, read back from its outputs."""
    from .._record import read

    found: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") in ("display_data", "execute_result"):
                got = read(out.get("data", {}))
                if got is not None:
                    found[got[0]] = got[1]
    return found


def _more_to_come(settings: Settings) -> bool:
    """Whether a notebook after this one will probably start in this worker: items start in
    order, so item ``i`` is followed by ``items - 1 - i``, shared among ``slots`` workers."""
    from ..context import current_context

    index = current_context().index
    if index is None or not settings.items:
        return True
    return index + settings.slots < settings.items


def _import_nbclient() -> None:
    """Import nbclient (and nbformat) without ``rfc3987_syntax``, when nothing here has
    imported jsonschema yet.

    jsonschema imports that optional package, when installed (Jupyter servers pull it in),
    only to check the "iri" string format, which nbformat's schema never uses; it builds a
    parser grammar at import, 0.6 s of CPU in every fresh worker. It stays importable for
    anyone else: the block is lifted right after.
    """
    if "nbclient" in sys.modules or "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        import nbclient  # noqa: F401

        return
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # import fails: skipped
    try:
        import nbclient  # noqa: F401
    finally:
        if sys.modules.get("rfc3987_syntax", 0) is None:
            del sys.modules["rfc3987_syntax"]


def execute(
    notebook: str, parameters: dict[str, Any], output: str | None, key: str, *, settings: Settings
) -> dict[str, Any]:
    """Run one notebook in a kernel; return its summary, or raise (see the module docstring).

    ``key`` is the notebook's content hash: unused here, it is what mapnb's cache keys on.
    """
    del key
    return _Execution(notebook, parameters, output, settings).run()


_FAILURES: dict[str, str] = {
    "cell-timeout": "the cell ran longer than cell_timeout={cell_timeout:g} s and was killed",
    "timeout": "the notebook ran longer than timeout={timeout:g} s; this cell was running and was killed",
    "died": "the kernel died while this cell ran (out of memory? a crash in native code?)",
}


class _Execution:
    """One notebook in one kernel: what the steps and nbclient's callbacks share."""

    def __init__(self, notebook: str, parameters: dict[str, Any], output: str | None, settings: Settings) -> None:
        self.settings, self.output = settings, output
        path = Path(notebook)
        self.cwd = str(path.parent.resolve())
        text = path.read_text(encoding="utf-8")
        self.kernel_name = kernel_of(json.loads(text), settings.kernel)
        # The kernel boots while nbformat and nbclient are imported (~1 s in a fresh worker).
        self.first_km, self.how = self._launch_first()
        _import_nbclient()
        import nbformat

        self.nbformat = nbformat
        self.nb = _params.inject(nbformat.reads(text, as_version=4), parameters)
        # Cell indices are reported as in the file the user edits: without the injected cell.
        self.injected_at = next(
            (i for i, c in enumerate(self.nb.cells) if _params.INJECTED_TAG in c.get("metadata", {}).get("tags", [])),
            None,
        )
        self.code = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code" and c.source.strip()]
        self.total = sum(1 for i in self.code if self.original(i) is not None)
        self.cell: int | None = None  # the index of the cell running (in self.nb)
        self.k = 0  # how many of the user's code cells have started
        self.t0: float | None = None  # when the running cell started
        self.why: str | None = None  # "timeout" once the notebook's timeout killed the kernel
        self.durations: dict[int, float] = {}
        self.started = time.monotonic()
        self.elapsed = 0.0
        self._spare_lock = threading.Lock()
        self._spare_launched = False
        self._spare_timer: threading.Timer | None = None

    def _launch_first(self) -> tuple[Any, str]:
        try:
            km = _acquire(self.kernel_name, self.cwd, self.settings.spool)
        except Exception as e:  # noqa: BLE001 - retried by _ready_kernel
            print(f"kernel {self.kernel_name} failed to launch ({type(e).__name__}: {e}); trying again", file=sys.stderr)
            return None, "started now"
        ahead = isinstance(km, ForeignKernel) or getattr(km, "_mapnb_spare", False)
        return km, "started ahead" if ahead else "started now"

    def original(self, i: int) -> int | None:
        """Cell ``i`` of the executed notebook as numbered in the user's file (None: injected)."""
        if self.injected_at is None or i < self.injected_at:
            return i
        return None if i == self.injected_at else i - 1

    # -- nbclient's callbacks (the kernel's thread of events) ------------------------------

    def on_execute(self, cell: Any, cell_index: int) -> None:
        self.cell, self.t0 = cell_index, time.monotonic()
        if self.original(cell_index) is None:
            print("── injected parameters ──", flush=True)
            return
        self.k += 1
        # "cell k/N": the code cells of the notebook as written; the CLI's live view reads it.
        print(f"── cell {self.k}/{self.total} ──", flush=True)

    def on_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        orig = self.original(cell_index)
        if self.t0 is not None and orig is not None:
            self.durations[orig] = round(time.monotonic() - self.t0, 6)
            if self._spare_timer is not None:
                self._spare_timer.cancel()
                self._launch_spare()

    def _launch_spare(self) -> None:
        with self._spare_lock:
            if self._spare_launched:
                return
            self._spare_launched = True
        # Not a daemon, nor the kernel killers below: a thread still talking to zmq while
        # the interpreter tears it down aborts the process (libzmq's "pfd.revents & POLLIN"
        # assertion, seen at the end of a CLI run); exit waits for them instead (< 1 s).
        threading.Thread(target=_add_spare, args=(self.kernel_name, self.cwd), daemon=False).start()

    # -- running ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        failure = self._execute()
        self.elapsed = time.monotonic() - self.started
        summary = self._summary()
        if failure is None:
            if self.output:
                _write(self.nb, self.output)
            if self.settings.keep_notebook:
                summary["notebook_json"] = self.nbformat.writes(self.nb)
            return summary
        self._fail(failure, summary)
        raise AssertionError("unreachable")  # _fail raises

    def _execute(self) -> dict[str, Any] | None:
        """Run every cell; None, or what went wrong (its kind, and a cell's exception)."""
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        s = self.settings
        client = _client_class()(
            self.nb, timeout=s.cell_timeout, kernel_name=self.kernel_name, allow_errors=False,
            interrupt_on_timeout=False, resources={"metadata": {"path": self.cwd}},
            on_cell_execute=self.on_execute, on_cell_executed=self.on_executed, record_timing=True,
        )  # fmt: skip
        try:
            run_coroutine(self._main(client))
        except CellExecutionError as e:
            return {"kind": "error", "ename": e.ename, "evalue": e.evalue}
        except CellTimeoutError:
            return {"kind": "cell-timeout"}
        except DeadKernelError:
            return {"kind": "timeout" if self.why == "timeout" else "died"}
        finally:
            if s.warm:
                _schedule_reap()
        return None

    async def _main(self, client: Any) -> None:
        t_ready = time.monotonic()
        km, kc = await _ready_kernel(self.first_km, self.kernel_name, self.cwd, self.settings.startup_timeout)
        print(f"── kernel {self.kernel_name}, {self.how}, ready in {time.monotonic() - t_ready:.2f} s ──", flush=True)
        if self.settings.warm and _more_to_come(self.settings):
            # The next notebook of this worker finds its kernel booted, or booting. It is
            # launched once the first cell is done, or after SPARE_DELAY s: a first cell
            # is mostly imports, CPU-bound, and a booting kernel would slow them down.
            self._spare_timer = threading.Timer(SPARE_DELAY, self._launch_spare)
            self._spare_timer.daemon = True
            self._spare_timer.start()
        client.km, client.kc = km, kc
        run_id = _run_id()
        with _spares_lock:
            _active.setdefault(run_id, set()).add(km)
        client.owns_km = False  # we kill it below, at once: no graceful shutdown to wait for
        watchdog = self._watchdog(km)
        try:
            await client.async_execute()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            try:
                kc.stop_channels()
            except Exception:  # noqa: BLE001
                pass
            # The notebook is done with it, whatever happened. Reaping it and removing its
            # files need not hold up the item.
            kill_group(km)
            with _spares_lock:
                _active.get(run_id, set()).discard(km)
            threading.Thread(target=kill_kernel, args=(km,), daemon=False).start()

    def _watchdog(self, km: Any) -> threading.Timer | None:
        """The notebook's timeout: it kills the kernel's process group (the clock starts
        with the first cell: a slow kernel start has startup_timeout)."""
        if not self.settings.timeout:
            return None

        def expire() -> None:
            self.why = "timeout"
            pid = _kernel_pid(km)
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        watchdog = threading.Timer(self.settings.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        return watchdog

    # -- the outcome ---------------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        mine = [i for i in self.code if self.original(i) is not None]
        return {
            "kernel": self.kernel_name,
            "cells_run": sum(1 for i in mine if self.original(i) in self.durations),
            "cells_total": len(mine),
            "cell_durations": {str(k): v for k, v in self.durations.items()},
            "records": records_of(self.nb),
        }

    def _what(self, failure: dict[str, Any], cell: Any, source: str) -> tuple[int | None, str, str]:
        """The failing line (if known), the traceback and one line saying what happened."""
        if failure["kind"] != "error":
            what = _FAILURES[failure["kind"]].format(cell_timeout=self.settings.cell_timeout or 0,
                                                     timeout=self.settings.timeout or 0)  # fmt: skip
            return None, "", what
        tb_lines: list[str] = []
        for out in cell.get("outputs", []) if cell is not None else []:
            if out.get("output_type") == "error":
                tb_lines = out.get("traceback", [])
        line = _location(source, tb_lines, cell.get("execution_count") if cell is not None else None)
        return line, strip_ansi("\n".join(tb_lines)), f"{failure['ename']}: {failure['evalue']}".rstrip(": ")

    def _where(self, cell_index: int | None, line: int | None) -> str:
        orig = self.original(cell_index) if cell_index is not None else None
        if cell_index is not None and orig is None:
            where = "the injected parameters"
        else:
            where = f"cell {orig}" if orig is not None else "before the first cell"
        return f"{where}, line {line}" if line else where

    def _fail(self, failure: dict[str, Any], summary: dict[str, Any]) -> None:
        """Write the notebook with a banner at the failing cell; raise what the item fails with."""
        cell_index = self.cell
        cell = self.nb.cells[cell_index] if cell_index is not None else None
        source = cell.source if cell is not None else ""
        line, tb_text, what = self._what(failure, cell, source)
        orig = self.original(cell_index) if cell_index is not None else None
        where = self._where(cell_index, line)
        lines = source.splitlines()
        source_line = lines[line - 1] if line and line <= len(lines) else None
        if failure["kind"] in ("timeout", "cell-timeout") and cell_index is not None:
            self.durations[orig if orig is not None else -1] = round(time.monotonic() - (self.t0 or self.started), 6)
            summary["cell_durations"] = {str(k): v for k, v in self.durations.items()}
            summary["cells_run"] = len(self.durations)
        details = {
            **summary, "kind": failure["kind"], "cell": orig, "line": line, "source_line": source_line,
            "error": f"{where}: {what}", "cell_source": source, "traceback": tb_text, "elapsed": self.elapsed,
        }  # fmt: skip
        if cell_index is not None:
            self.nb.cells.insert(cell_index, _banner(orig if orig is not None else cell_index, line, what))
        if self.output:
            _write(self.nb, self.output)
        if failure["kind"] == "died":
            raise KernelDiedError(f"{where}: {what}") from None
        numbered = "\n".join(f"{'>' if i == line else ' '} {i:>3} | {text}" for i, text in enumerate(lines, 1))
        raise CellError(f"{where}: {what}\n\n{numbered}\n\n{tb_text}\n{MARK}{json.dumps(details, default=repr)}")


_CLIENT: list[type] = []


def _client_class() -> type:
    """nbclient's NotebookClient, made once (nbclient is imported late: it is slow to
    import), whose outputs also go to the item's log as they come."""
    if not _CLIENT:
        from nbclient import NotebookClient

        class Client(NotebookClient):
            def output(self, outs: Any, msg: Any, display_id: Any, cell_index: int) -> Any:
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":  # the item's log follows the running cell's output
                    stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
                    stream.write(content.get("text", ""))
                elif kind == "error":
                    sys.stderr.write(strip_ansi("\n".join(content.get("traceback", []))) + "\n")
                return super().output(outs, msg, display_id, cell_index)

        _CLIENT.append(Client)
    return _CLIENT[0]


def details_of(message: str) -> dict[str, Any] | None:
    """The details a failure's message carries on its last line, or None."""
    tail = message.rstrip().rsplit("\n", 1)[-1]
    if not tail.startswith(MARK):
        return None
    try:
        return json.loads(tail[len(MARK) :])
    except ValueError:
        return None
