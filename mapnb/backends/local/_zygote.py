"""The fork server of the local backend: a clean, single-threaded process that forks workers.

Forking the caller itself is fast but unsafe (a notebook kernel has threads, and libraries
such as OpenBLAS or PyTorch hold thread pools and locks that a fork copies half-taken);
spawning a fresh interpreter per worker is safe but slow. This process is started once,
imports only what workers need, and forks each worker in ~2 ms. It never imports the
caller's ``__main__``: task functions travel with cloudpickle, so a script without an
``if __name__ == "__main__"`` guard works.

Protocol on the control socket (multiprocessing ``Connection`` messages):

- in ``("spawn", wid)`` followed by two file descriptors (SCM_RIGHTS): the worker's end of
  its socket pair and its ledger (see :class:`mapnb.backends.local.serve.Ledger`); out
  ``("spawned", wid, pid)``.
- in ``("kill", wid)``: SIGKILL the worker's process group (its own children too).
- in ``("limit", wid, nbytes | None)``: the memory limit of what the worker runs now.
- out ``("exit", wid, returncode, used)`` when a worker ends (negative: killed by that
  signal); ``used`` is the resident memory of its process tree when this process killed
  it for going over its limit, else None.

Memory limits are enforced here, outside the workers: every 50 ms the resident memory of
each limited worker's process tree is sampled, and a worker over its limit is killed with
its children. A thread inside the worker could be starved by one long C call; this
process cannot. The fork server is also a child subreaper: what a dead worker's items
left running (even in a session of their own) is adopted here and killed.

When the control socket closes (the caller exited or died) every worker is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recvfds
from typing import Any

SAMPLE_EVERY = 0.05  # seconds between two looks at the limited workers' memory
COVERAGE_GRACE = 2.0  # seconds the workers have to save their coverage data at shutdown


def _coverage() -> Any:
    """The coverage.py measurement running in this process (under ``make test``), else None.

    Never imports coverage: it is in ``sys.modules`` only when its start-up hook started it.
    """
    module = sys.modules.get("coverage")
    return module.Coverage.current() if module is not None else None


_saving: list[bool] = []  # not empty once this worker has begun to save its coverage data


def _save_coverage() -> None:
    """Write this process's coverage data now: ``os._exit`` skips the atexit hook that would."""
    cov = _coverage()
    if cov is None or _saving:
        return
    _saving.append(True)
    try:
        cov.stop()
        cov.save()
    except Exception:  # pragma: no cover - measuring must never change how a worker ends
        pass


def _save_coverage_on_sigterm() -> None:
    """Under coverage, a worker that the fork server stops with SIGTERM (at shutdown)
    saves its data, then dies of the signal as it would have."""
    if _coverage() is None:
        return

    def handler(signum: int, frame: Any) -> None:
        if _saving:  # it is saving on its way out already: let it finish
            return
        _save_coverage()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


def _kill(pid: int) -> None:
    """SIGKILL a live (unreaped) worker, its process group and every descendant."""
    from mapnb.resources import descendants

    tree = descendants(pid)  # before the kill: its children move here once it is dead
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a reaped worker's process group (a group id is not reused
    while the group has members; no fallback to the pid, which may be reused)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _kill_orphans(workers: dict[int, int]) -> None:
    """Kill the processes adopted here (as subreaper) from dead workers' trees."""
    from mapnb.resources import children

    for pid in children(os.getpid()):
        if pid not in workers:
            _kill(pid)


def _child(fd: int, ledger_fd: int, closing: list[int]) -> None:
    """In the forked worker: become a session leader and serve tasks."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C/Interrupt cancels us
    _save_coverage_on_sigterm()
    for other in closing:
        os.close(other)
    os.setsid()
    code = 0
    try:
        from mapnb.backends.local.serve import serve

        serve(Connection(fd), ledger_fd)
    except BaseException:  # pragma: no cover - serve handles item errors itself
        traceback.print_exc(file=sys.__stderr__)
        code = 1
    finally:
        _save_coverage()
        os._exit(code)


def main(control_fd: int) -> None:
    """Serve the pool on ``control_fd`` until the caller closes it; then kill every worker."""
    import cloudpickle  # noqa: F401  (preloaded for the workers)

    import mapnb.backends.local.serve  # noqa: F401  (preloaded for the workers)
    import mapnb.resources  # noqa: F401  (the memory sampling's, loaded before any fork)
    from mapnb.backends.local.serve import _become_subreaper

    server = _ForkServer(control_fd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _become_subreaper()
    try:
        server.serve()
    except (EOFError, OSError):
        pass
    finally:
        _stop_all(server.children)


class _ForkServer:
    """The state of the fork server's loop and one method per thing it does."""

    def __init__(self, control_fd: int) -> None:
        self.control_fd = control_fd
        self.sock = socket.socket(fileno=control_fd)
        self.control = Connection(os.dup(control_fd))
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        self.children: dict[int, int] = {}  # pid -> wid
        self.limits: dict[int, int] = {}  # wid -> bytes, for the workers that run a limited job
        self.over: dict[int, int] = {}  # wid -> bytes used, for the workers killed for their memory
        self.handlers: dict[str, Callable[[tuple[Any, ...]], None]] = {
            "spawn": self.spawn,
            "kill": self.kill,
            "limit": self.limit,
        }

    def serve(self) -> None:
        """Answer the caller and watch the workers until the control socket closes."""
        while True:
            ready = wait([self.control, self.wake_r], timeout=SAMPLE_EVERY if self.limits else 1.0)
            if self.limits:
                self.sample()
            if not ready:  # now and then: orphans a worker's children left when they exited
                _kill_orphans(self.children)
                continue
            if self.wake_r in ready:  # a signal (SIGCHLD): a worker may have ended
                _drain(self.wake_r)
                self.reap()
            if self.control in ready:
                msg = self.control.recv()
                handler = self.handlers.get(msg[0])
                if handler is not None:
                    handler(msg)
                self.reap()

    def spawn(self, msg: tuple[Any, ...]) -> None:
        """``("spawn", wid)`` and two descriptors: fork a worker that serves them."""
        fd, ledger_fd = recvfds(self.sock, 2)
        pid = os.fork()
        if pid == 0:
            _child(fd, ledger_fd, [self.wake_r, self.wake_w, self.control.fileno(), self.control_fd])
        os.close(fd)
        os.close(ledger_fd)
        self.children[pid] = msg[1]
        self.control.send(("spawned", msg[1], pid))

    def kill(self, msg: tuple[Any, ...]) -> None:
        """``("kill", wid)``: SIGKILL that worker and what it started."""
        for pid, wid in list(self.children.items()):
            if wid == msg[1]:
                _kill(pid)

    def limit(self, msg: tuple[Any, ...]) -> None:
        """``("limit", wid, nbytes | None)``: hold that worker to a memory limit, or no more."""
        _, wid, nbytes = msg
        if nbytes is None:
            self.limits.pop(wid, None)
        elif wid in self.children.values():
            self.limits[wid] = nbytes

    def reap(self) -> None:
        """Report the workers that ended, and kill what they left behind."""
        dead = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            wid = self.children.pop(pid, None)
            if wid is not None:
                dead = True
                self.limits.pop(wid, None)
                _kill_group(pid)  # what it left behind in its group
                code = os.waitstatus_to_exitcode(status)
                self.control.send(("exit", wid, code, self.over.pop(wid, None)))
        if dead:
            _kill_orphans(self.children)

    def sample(self) -> None:
        """Kill each limited worker whose process tree uses more memory than its limit."""
        from mapnb.resources import rss_of_tree

        for pid, wid in list(self.children.items()):
            limit = self.limits.get(wid)
            if limit is None or wid in self.over:
                continue
            used = rss_of_tree(pid)
            if used > limit:
                self.over[wid] = used
                _kill(pid)


def _drain(fd: int) -> None:
    """Read a non-blocking pipe empty."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _stop_all(children: dict[int, int]) -> None:
    """The caller is gone: kill every worker and reap it.

    Under coverage, the workers first get SIGTERM and a moment to save their data (see
    :func:`_save_coverage_on_sigterm`), which a SIGKILL would lose.
    """
    if _coverage() is not None:
        _terminate(children, COVERAGE_GRACE)
        _kill_orphans(children)  # what the terminated workers' items left running
    for pid in list(children):
        _kill(pid)
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _terminate(children: dict[int, int], grace: float) -> None:
    """SIGTERM every worker, and reap (dropping from ``children``) those that exit in time."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while children and time.monotonic() < deadline:
        for pid in list(children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                del children[pid]
                _kill_group(pid)  # what it left behind in its group
        time.sleep(0.01)


if __name__ == "__main__":
    main(int(sys.argv[1]))
