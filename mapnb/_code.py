"""Where the task's code came from, carried to the workers for their tracebacks.

cloudpickle (>= 3.1.3) ships a function defined in a notebook or ``__main__`` with its
code's file name set to ``"<dynamic-code>"``, and a worker has no copy of a notebook
cell's source anyway. So the job carries the file name and, when the file cannot be read
(a notebook cell, a ``%%map_task`` body), its lines: a worker's traceback then shows the
cell's file name, line numbers and source lines as the notebook would.
"""

from __future__ import annotations

import functools
import linecache
import os
import types
from typing import Any

DYNAMIC = "<dynamic-code>"
MAX_LINES = 5000  # a notebook cell is far smaller; keeps the job small whatever happens


def user_function(fn: Any) -> types.FunctionType | None:
    """The plain function behind ``fn`` (through partials and mapnb's small wrappers)."""
    for _ in range(4):
        if isinstance(fn, types.FunctionType):
            return fn
        if isinstance(fn, functools.partial):
            fn = fn.func
        else:
            fn = getattr(fn, "__wrapped__", None) or getattr(fn, "fn", None)
    return None


def origin_of(fn: Any) -> tuple[str, tuple[str, ...]] | None:
    """``(file name, lines)`` of ``fn``'s code when a worker cannot find it by itself:
    code that cloudpickle ships by value (defined in ``__main__``, a notebook). The lines
    are sent only when the file cannot be read there."""
    f = user_function(fn)
    if f is None or f.__module__ not in ("__main__", None):
        return None
    filename = f.__code__.co_filename
    if filename == DYNAMIC:
        return None
    lines: tuple[str, ...] = ()
    if not os.path.isfile(filename):
        lines = tuple(linecache.getlines(filename)[:MAX_LINES])
    return filename, lines


def with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` and the code of the functions defined in it, with ``co_filename`` set."""
    consts = tuple(with_filename(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def restore_origin(fn: Any, origin: tuple[str, tuple[str, ...]] | None) -> None:
    """In a worker: give ``fn``'s code its file name back, and its lines to ``linecache``."""
    if origin is None:
        return
    f = user_function(fn)
    if f is None or f.__code__.co_filename != DYNAMIC:
        return
    filename, lines = origin
    f.__code__ = with_filename(f.__code__, filename)
    if lines and filename not in linecache.cache:
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)


def traceback_from(tb: types.TracebackType | None, code: types.CodeType) -> types.TracebackType | None:
    """``tb`` from the frame running ``code`` on (the user's function, not the plumbing
    that called it); all of ``tb`` when no frame runs it."""
    t = tb
    while t is not None:
        if t.tb_frame.f_code is code:
            return t
        t = t.tb_next
    return tb
