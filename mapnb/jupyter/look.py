"""Small drawing helpers shared by the grid (grid.py) and the sweep views (sweep.py):
the numeric fields of an output, the viridis ramp, WCAG contrast, short value labels."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable
from typing import Any


def _numeric_fields(value: Any) -> dict[str, float]:
    """The numeric fields of an output: itself, or those of a dict, dataclass or NamedTuple."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return {"output": float(value)}
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        items = zip(value._fields, value)
    else:
        return {}
    return {str(k): float(v) for k, v in items if isinstance(v, numbers.Real) and not isinstance(v, bool)}


def _luminance(rgb: tuple[float, float, float]) -> float:
    def ch(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b)


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """The WCAG contrast ratio of two sRGB colours (1 to 21)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_on(rgb: tuple[float, float, float]) -> str:
    """``"#000"`` or ``"#fff"``, whichever reads better on ``rgb`` (the front end does the same)."""
    return "#000" if contrast(rgb, (0, 0, 0)) >= contrast(rgb, (255, 255, 255)) else "#fff"


_VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def _ramp(t: float) -> str:
    """A colour on the viridis ramp for ``t`` in [0, 1] (the front end uses the same stops)."""
    t = min(1.0, max(0.0, t)) * (len(_VIRIDIS) - 1)
    k = min(len(_VIRIDIS) - 2, int(t))
    f = t - k
    a, b = _VIRIDIS[k], _VIRIDIS[k + 1]
    return "rgb({},{},{})".format(*(round(x + f * (y - x)) for x, y in zip(a, b)))


def _rgb(css: str) -> tuple[int, int, int]:
    return tuple(int(x) for x in css[4:-1].split(","))  # type: ignore[return-value]


def _fmt_value(v: float) -> str:
    """A value short enough for a heatmap cell (the front end formats the same way)."""
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
    return f"{v:.3g}"
