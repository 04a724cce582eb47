"""Keeping the grid's controls answering while the kernel's main thread runs a cell.

A blocking ``map_task(...)(...)`` or ``%%map_task`` keeps the kernel's main thread busy
until the run ends, and a Jupyter kernel reads the front end's widget messages (Cancel,
a click on an item, Retry failed) on that same thread, so by default they wait for the
cell to end. Two mechanisms made for this, chosen by what the kernel offers:

* **ipykernel >= 7, kernel subshells** (JEP 91). Each subshell is a thread with its own
  event loop. JupyterLab >= 4.4 and Notebook 7 already send widget messages to a subshell
  ("comms over subshells"), but ipykernel routes a comm's messages back to the shell that
  last *sent* on it, which for a grid shown by a cell is the busy main shell. The grid's
  comms therefore route to the front end's subshell when it named one, and otherwise (VS
  Code, nbclient, any front end without comms over subshells) to one subshell mapnb opens
  for itself. Nothing polls: the messages are handled the moment they arrive.
* **ipykernel 6** (no subshells): while a blocking run waits in the main thread, it polls
  the kernel with `jupyter-ui-poll`_, which handles comm messages and holds back
  ``execute_request``\\ s until the cell is over, so no other cell's code runs early.

Only the grid's own comms are routed; other widgets keep the kernel's behaviour.
``MAPNB_BUSY=off`` turns both off (the grid's controls then answer when the cell ends).

.. _jupyter-ui-poll: https://github.com/Kirill888/jupyter-ui-poll
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_own_subshell: str | None = None  # the subshell mapnb opened in this kernel, once needed


def _kernel() -> Any:
    """The running ipykernel ``Kernel``, or None outside a Jupyter kernel (or when off)."""
    if "ipykernel" not in sys.modules or os.environ.get("MAPNB_BUSY", "").strip().lower() == "off":
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


def _has_subshells(kernel: Any) -> bool:
    return getattr(kernel, "shell_channel_thread", None) is not None


def _subshell_for(kernel: Any) -> Callable[[Any, str | None], str | None]:
    """The routing function for a grid's comm: called by ipykernel on its shell channel
    thread, with the message's data and the subshell the front end addressed (or None)."""

    def route(_data: Any, requested: str | None) -> str | None:
        global _own_subshell
        if requested is not None:
            return requested  # the front end sends comms over a subshell: keep to it
        with _lock:
            if _own_subshell is None:
                try:  # on the shell channel thread, where subshells are created
                    _own_subshell = kernel.shell_channel_thread.manager._create_subshell()
                except Exception:
                    log.warning("could not open a kernel subshell for the live grid", exc_info=True)
                    return None
            return _own_subshell

    return route


def serve_while_busy(widgets: Iterable[Any]) -> bool:
    """Have the kernel handle these widgets' messages even while a cell runs.

    Returns whether it could (ipykernel >= 7); otherwise a blocking wait polls, see
    :func:`wait`.
    """
    kernel = _kernel()
    if kernel is None or not _has_subshells(kernel):
        return False
    route = _subshell_for(kernel)
    routed = False
    for w in widgets:
        comm = getattr(w, "comm", None)
        if comm is not None and hasattr(comm, "_reply_subshell_for"):
            # An instance attribute shadows the method ipykernel's shell channel thread calls.
            comm._reply_subshell_for = route
            routed = True
    return routed


def wait(done: Callable[[float], bool], interval: float, polled: bool) -> None:
    """Block until ``done(timeout)`` is true; with ``polled``, handle widget messages meanwhile.

    ``done`` waits at most ``timeout`` seconds. Polling needs ipykernel's
    ``do_one_iteration`` (ipykernel 6) and jupyter-ui-poll; without them this just waits.
    """
    # Only the main thread may run the kernel's message loop (a run waited on in another
    # thread leaves the kernel free anyway).
    main = threading.current_thread() is threading.main_thread()
    kernel = _kernel() if polled and main else None
    if kernel is None or not hasattr(kernel, "do_one_iteration") or _has_subshells(kernel):
        while not done(interval):
            pass
        return
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:  # pragma: no cover - a dependency; kept soft for odd installs
        while not done(interval):
            pass
        return
    with ui_events() as poll:
        while not done(interval):
            poll(20)  # at most 20 queued messages per tick: a burst of clicks drains quickly
