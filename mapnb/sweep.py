"""Growing a sweep, and where each of its items sits.

A product's items are first every combination of its axes in ``itertools.product``
order (the last axis varies fastest). ``run.extend(lr=[...])`` appends the combinations
that use at least one new value, in ``itertools.product`` order over the grown axes (old
values first on each axis, then the new ones), so that the old items keep their indices.
The axes' lengths after each growth (:attr:`RunView.shapes`) say where every item sits:
:func:`coords`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from .errors import InvalidMapError
from .spec import materialise, max_items, short_repr


def coords(shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Each item's position on every axis (its index into each axis's values), from the
    axes' lengths as the sweep started and after each growth."""
    if not shapes:
        return []
    out = list(itertools.product(*(range(k) for k in shapes[0])))
    for old, new in itertools.pairwise(shapes):
        out += [c for c in itertools.product(*(range(k) for k in new)) if any(p >= o for p, o in zip(c, old))]
    return out


def _same(a: Any, b: Any) -> bool:
    """Whether two axis values are the same value (arrays and odd ``==`` included)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # an array's elementwise ==, say: not one value
        return False


def grow_product(
    names: tuple[str, ...], axes: list[list[Any]], lists: dict[str, Any]
) -> tuple[list[list[Any]], list[tuple[Any, ...]]]:
    """The axes with the new values of ``lists`` appended, and the new items (see the
    module docstring for their order). Refuses unknown axes and repeated values."""
    unknown = [n for n in lists if n not in names]
    if unknown:
        raise InvalidMapError(
            f"run.extend(): the sweep has no axis {', '.join(map(repr, unknown))}; its axes are {', '.join(names)}"
        )
    grown = [list(a) for a in axes]
    for name, value in lists.items():
        axis = grown[names.index(name)]
        for v in materialise(name, value):
            if any(_same(v, w) for w in axis):
                raise InvalidMapError(
                    f"run.extend({name}=...): {short_repr(v)} is already a value of {name} "
                    f"(values: {short_repr(axis)}); pass only new values"
                )
            axis.append(v)
    total, limit = math.prod(len(a) for a in grown), max_items()
    if total > limit:
        raise InvalidMapError(
            f"run.extend(): the grown sweep has {total:,} items; a run maps at most {limit:,} (MAPNB_MAX_ITEMS)"
        )
    old = tuple(len(a) for a in axes)
    new_items = [
        tuple(a[p] for a, p in zip(grown, c))
        for c in itertools.product(*(range(len(a)) for a in grown))
        if any(p >= o for p, o in zip(c, old))
    ]
    return grown, new_items


def more_items(names: tuple[str, ...], args: tuple[Any, ...], lists: dict[str, Any]) -> list[tuple[Any, ...]]:
    """New items of an element-wise map: one list per mapped parameter (by position, in
    the run's order, or by name), all of one length."""
    if len(args) > len(names):
        raise InvalidMapError(
            f"run.extend_items(): {len(args)} positional lists for {len(names)} mapped parameters ({', '.join(names)})"
        )
    given = dict(zip(names, args))
    twice = [n for n in lists if n in given]
    if twice:
        raise InvalidMapError(f"run.extend_items(): {', '.join(map(repr, twice))} given by position and by name")
    given.update(lists)
    unknown = [n for n in given if n not in names]
    missing = [n for n in names if n not in given]
    if unknown or missing:
        what = f"no mapped parameter {', '.join(map(repr, unknown))}" if unknown else ""
        what += ("; " if what else "") + (f"missing {', '.join(map(repr, missing))}" if missing else "")
        raise InvalidMapError(f"run.extend_items(): {what}; the run maps {', '.join(names)} (one list each)")
    columns = [materialise(n, given[n]) for n in names]
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        detail = ", ".join(f"{n} has {len(c)} item{'s' * (len(c) != 1)}" for n, c in zip(names, columns))
        raise InvalidMapError(f"run.extend_items(): the lists must have the same length: {detail}")
    return list(zip(*columns))


def not_a_product(what: str) -> InvalidMapError:
    return InvalidMapError(
        f"run.{what}(): this run maps its lists element-wise, it is not a sweep; "
        "use run.extend_items(...) to append items"
    )


def a_product() -> InvalidMapError:
    return InvalidMapError(
        "run.extend_items(): this run is a sweep (.product(...)); use run.extend(name=[new values]) "
        "to grow its axes"
    )

