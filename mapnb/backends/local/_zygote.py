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
import traceback
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recvfds

SAMPLE_EVERY = 0.05  # seconds between two looks at the limited workers' memory


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
        os._exit(code)


def main(control_fd: int) -> None:
    import cloudpickle  # noqa: F401  (preloaded for the workers)

    import mapnb.backends.local.serve  # noqa: F401  (preloaded for the workers)
    from mapnb.backends.local.serve import _become_subreaper
    from mapnb.resources import rss_of_tree

    sock = socket.socket(fileno=control_fd)
    control = Connection(os.dup(control_fd))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _become_subreaper()
    children: dict[int, int] = {}  # pid -> wid
    limits: dict[int, int] = {}  # wid -> bytes, for the workers that run a limited job
    over: dict[int, int] = {}  # wid -> bytes used, for the workers killed for their memory

    def reap() -> None:
        dead = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            wid = children.pop(pid, None)
            if wid is not None:
                dead = True
                limits.pop(wid, None)
                _kill_group(pid)  # what it left behind in its group
                control.send(("exit", wid, os.waitstatus_to_exitcode(status), over.pop(wid, None)))
        if dead:
            _kill_orphans(children)

    def sample() -> None:
        for pid, wid in list(children.items()):
            limit = limits.get(wid)
            if limit is None or wid in over:
                continue
            used = rss_of_tree(pid)
            if used > limit:
                over[wid] = used
                _kill(pid)

    try:
        while True:
            ready = wait([control, wake_r], timeout=SAMPLE_EVERY if limits else 1.0)
            if limits:
                sample()
            if not ready:  # now and then: orphans a worker's children left when they exited
                _kill_orphans(children)
                continue
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
            if control not in ready:
                continue
            msg = control.recv()
            if msg[0] == "spawn":
                fd, ledger_fd = recvfds(sock, 2)
                pid = os.fork()
                if pid == 0:
                    _child(fd, ledger_fd, [wake_r, wake_w, control.fileno(), control_fd])
                os.close(fd)
                os.close(ledger_fd)
                children[pid] = msg[1]
                control.send(("spawned", msg[1], pid))
            elif msg[0] == "kill":
                for pid, wid in list(children.items()):
                    if wid == msg[1]:
                        _kill(pid)
            elif msg[0] == "limit":
                if msg[2] is None:
                    limits.pop(msg[1], None)
                elif msg[1] in children.values():
                    limits[msg[1]] = msg[2]
            reap()
    except (EOFError, OSError):
        pass
    finally:
        for pid in list(children):
            _kill(pid)
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


if __name__ == "__main__":
    main(int(sys.argv[1]))
