"""Pickling for other processes: the C pickler when it is enough, cloudpickle when not.

cloudpickle's pickler calls back into Python for every object it meets (its
``reducer_override``), which made pickling a million plain inputs cost ~0.4 s of the
caller's time; the standard pickler does the same job in C in ~20 ms. It is enough unless
the data refers to something a new process cannot import by name:

- a function or class that cannot be pickled by reference (a lambda, a local or dynamic
  class): the standard pickler raises, and cloudpickle takes over;
- anything defined in ``__main__`` (a notebook, a script): the standard pickler would
  write a reference to ``__main__.name`` that another process cannot resolve, so its
  output is searched for ``__main__`` (one ``memmem`` pass, a few ms for 10 MB) and
  cloudpickle, which ships such objects by value, takes over;
- a module registered with ``cloudpickle.register_pickle_by_value``.
"""

from __future__ import annotations

import operator
import pickle
import sys
from collections.abc import Sequence
from typing import Any

_MAIN = b"__main__"


def dumps(obj: Any) -> bytes:
    """``obj`` pickled (protocol 5) so that another process can load it with ``pickle.loads``.

    The standard pickler first; cloudpickle when that fails or when its output refers to
    ``__main__`` (a string holding ``"__main__"`` sends data that way too: slower, not
    wrong).
    """
    if not _by_value_registered():
        try:
            blob = pickle.dumps(obj, protocol=5)
        except Exception:  # a lambda, a local class...: cloudpickle ships those by value
            pass
        else:
            if _MAIN not in blob:
                return blob
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=5)


def _by_value_registered() -> bool:
    """Whether some module was registered with ``cloudpickle.register_pickle_by_value``
    (only cloudpickle honours that), without importing cloudpickle when nobody did."""
    cp = sys.modules.get("cloudpickle.cloudpickle")
    return bool(cp is not None and getattr(cp, "_PICKLE_BY_VALUE_MODULES", None))


class Rows:
    """A list of equal-length tuples that pickles column by column, and loads (with plain
    ``pickle.loads``, in any process that can import mapnb) as the same list of tuples.

    Pickle memoizes every tuple it writes: for a million items' inputs that memo, not the
    data, was most of the cost (0.5 s against 0.1 s as columns). Rows of unequal lengths
    (which ``zip`` would cut) are pickled as the plain list.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: Sequence[Any]) -> None:
        self.rows = rows

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        rows = self.rows
        columns = getattr(rows, "columns", None)  # a state.Columns: the columns are there
        if columns is not None and len(rows):
            return from_columns, tuple(columns)
        if not rows or set(map(type, rows)) != {tuple} or len(set(map(len, rows))) != 1:
            return list, (list(rows),)
        return from_columns, tuple(list(map(operator.itemgetter(k), rows)) for k in range(len(rows[0])))


def from_columns(*columns: Any) -> list[tuple[Any, ...]]:
    """The rows of :class:`Rows`, from its columns."""
    return list(zip(*columns))
