"""The fork server of the local backend: a clean, single-threaded process that forks workers.

Forking the caller itself is fast but unsafe (a notebook kernel has threads, and libraries
such as OpenBLAS or PyTorch hold thread pools and locks that a fork copies half-taken);
spawning a fresh interpreter per worker is safe but slow. This process is started once,
imports only what workers need, and forks each worker in ~2 ms. It never imports the
caller's ``__main__``: task functions travel with cloudpickle, so a script without an
``if __name__ == "__main__"`` guard works.

Protocol on the control socket (multiprocessing ``Connection`` messages):

- in ``("spawn", wid)`` followed by one file descriptor (SCM_RIGHTS): the worker's end of
  its socket pair; out ``("spawned", wid, pid)``.
- in ``("kill", wid)``: SIGKILL the worker's process group (its own children too).
- out ``("exit", wid, returncode)`` when a worker ends (negative: killed by that signal).

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


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _child(fd: int, closing: list[int]) -> None:
    """In the forked worker: become a session leader and serve tasks."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C/Interrupt cancels us
    for other in closing:
        os.close(other)
    os.setsid()
    code = 0
    try:
        from mapnb.worker import serve

        serve(Connection(fd))
    except BaseException:  # pragma: no cover - serve handles item errors itself
        traceback.print_exc(file=sys.__stderr__)
        code = 1
    finally:
        os._exit(code)


def main(control_fd: int) -> None:
    import cloudpickle  # noqa: F401  (preloaded for the workers)

    import mapnb.worker  # noqa: F401

    sock = socket.socket(fileno=control_fd)
    control = Connection(os.dup(control_fd))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: dict[int, int] = {}  # pid -> wid

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            wid = children.pop(pid, None)
            if wid is not None:
                control.send(("exit", wid, os.waitstatus_to_exitcode(status)))

    try:
        while True:
            ready = wait([control, wake_r])
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
                fd = recvfds(sock, 1)[0]
                pid = os.fork()
                if pid == 0:
                    _child(fd, [wake_r, wake_w, control.fileno(), control_fd])
                os.close(fd)
                children[pid] = msg[1]
                control.send(("spawned", msg[1], pid))
            elif msg[0] == "kill":
                for pid, wid in list(children.items()):
                    if wid == msg[1]:
                        _kill(pid)
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
