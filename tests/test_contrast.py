"""Text on the live grid is readable: every text/background pair in the widget's CSS, and
in the static picture, passes WCAG AA (4.5:1) in JupyterLab's light and dark themes and
with the CSS fallbacks (front ends without JupyterLab's variables, such as VS Code).

The CSS is parsed from the widget's source (mapnb/assets/grid.css): its --mapnb-* tokens
are resolved against each theme's --jp-* values, then every rule that sets ``color`` is
checked against each colour of its background (a hatch's stripes included).
"""

from __future__ import annotations

import pathlib
import re

import pytest

from mapnb.jupyter import grid
from mapnb.jupyter.grid import COLORS, TEXT_ON, contrast, render_html, text_on

CSS = (pathlib.Path(grid.__file__).parent / "assets" / "grid.css").read_text()
JS = (pathlib.Path(grid.__file__).parent / "assets" / "grid.js").read_text()
AA = 4.5

# JupyterLab 4's own values (theme-light-extension / theme-dark-extension index.css).
JP_LIGHT = {
    "--jp-layout-color0": "#fff", "--jp-layout-color1": "#fff", "--jp-layout-color2": "#eee",
    "--jp-layout-color3": "#bdbdbd", "--jp-ui-font-color1": "rgba(0,0,0,.87)",
    "--jp-ui-font-color2": "rgba(0,0,0,.54)", "--jp-border-color1": "#bdbdbd",
    "--jp-rendermime-error-background": "#fdd",
}  # fmt: skip
JP_DARK = {
    "--jp-layout-color0": "#111", "--jp-layout-color1": "#212121", "--jp-layout-color2": "#424242",
    "--jp-layout-color3": "#616161", "--jp-ui-font-color1": "rgba(255,255,255,.87)",
    "--jp-ui-font-color2": "rgba(255,255,255,.54)", "--jp-border-color1": "#616161",
    "--jp-rendermime-error-background": "rgba(244,67,54,.28)",
}  # fmt: skip
THEMES = {  # name: (the --jp-* values defined, whether the dark block applies)
    "jupyterlab-light": (JP_LIGHT, False),
    "jupyterlab-dark": (JP_DARK, True),
    "fallback-light": ({}, False),
    "fallback-dark": ({}, True),  # VS Code's dark theme (body.vscode-dark), no --jp-* values
}
COLOR = r"#[0-9a-fA-F]{3,8}\b|rgba?\([^)]*\)|\bwhite\b|\bblack\b|\btransparent\b|var\(--[\w-]+(?:,[^()]*(?:\([^)]*\))?)?\)"


def rules(css: str) -> list[tuple[str, dict[str, str]]]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(r"@keyframes[^{]*\{(?:[^{}]*\{[^}]*\})*\s*\}", "", css)
    out = []
    for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        decls = {}
        for d in body.split(";"):
            if ":" in d:
                k, v = d.split(":", 1)
                decls[k.strip()] = v.strip()
        out.append((" ".join(sel.split()), decls))
    return out


RULES = rules(CSS)


def tokens(dark: bool) -> dict[str, str]:
    """The --mapnb-* tokens as the theme sees them: the light block, then the dark one."""
    out: dict[str, str] = {}
    for sel, decls in RULES:
        dark_block = 'data-jp-theme-light="false"' in sel and any(k.startswith("--mapnb-") for k in decls)
        if sel == ".mapnb-grid" or (dark and dark_block):
            out.update({k: v for k, v in decls.items() if k.startswith("--mapnb-")})
    return out


def parse(c: str) -> tuple[float, float, float, float]:
    c = c.strip()
    if c == "white":
        return (255, 255, 255, 1)
    if c == "black":
        return (0, 0, 0, 1)
    if c == "transparent":
        return (0, 0, 0, 0)
    if c.startswith("#"):
        h = c[1:]
        if len(h) in (3, 4):
            h = "".join(x * 2 for x in h)
        a = int(h[6:8], 16) / 255 if len(h) == 8 else 1.0
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), a)
    nums = [float(x) for x in re.findall(r"[\d.]+", c)]
    return (nums[0], nums[1], nums[2], nums[3] if len(nums) > 3 else 1.0)


def over(top: tuple[float, ...], below: tuple[float, ...]) -> tuple[float, float, float, float]:
    a = top[3]
    return (*(a * t + (1 - a) * b for t, b in zip(top[:3], below[:3])), 1.0)


def resolve(value: str, jp: dict[str, str], toks: dict[str, str]) -> str:
    """A colour with every var() replaced: --jp-* from the theme (else its fallback),
    --mapnb-* from the tokens."""
    for _ in range(10):
        m = re.search(r"var\((--[\w-]+)\s*(?:,\s*((?:[^()]|\([^)]*\))*))?\)", value)
        if not m:
            return value
        name, fallback = m.group(1), (m.group(2) or "").strip()
        if name.startswith("--jp-"):
            rep = jp.get(name, fallback)
        else:
            rep = toks[name]
        assert rep, f"{name} has no value and no fallback"
        value = value[: m.start()] + rep + value[m.end() :]
    raise AssertionError(f"var() nesting too deep in {value}")


def pairs(theme: str) -> list[tuple[str, str, float]]:
    """(selector, background, ratio) for every text colour the CSS sets."""
    jp, dark = THEMES[theme]
    toks = tokens(dark)
    page = parse(resolve("var(--mapnb-page)", jp, toks))
    assert page[3] == 1, "the grid's page colour is opaque"
    out = []
    for sel, decls in RULES:
        if "color" not in decls:
            continue
        back = " ".join(decls.get(k, "") for k in ("background", "background-color", "background-image"))
        assert back.strip(), f"{sel!r} sets a text colour but not the background it is read on"
        layers = [resolve(c, jp, toks) for c in re.findall(COLOR, back)]
        base = page
        for c in layers:  # the first opaque colour is the base; stripes lie over it
            p = parse(c)
            if p[3] == 1:
                base = p
                break
        fg = over(parse(resolve(decls["color"], jp, toks)), base)
        for c in layers:
            bg = over(parse(c), base)
            out.append((sel, c, contrast(fg[:3], bg[:3])))
    return out


@pytest.mark.parametrize("theme", THEMES)
def test_every_text_colour_in_the_css_passes_aa(theme):
    found = pairs(theme)
    assert len(found) >= 20  # chips, states, glyph cells, legend, ticks, panel, log, error
    selectors = {s for s, _, _ in found}
    for must in (".s-queued", ".s-running", ".s-failed", ".mapnb-state.st-running", ".mapnb-error",
                 ".mapnb-stderr", ".mapnb-tick", ".mapnb-cell.s-cancelled", ".mapnb-dropped"):  # fmt: skip
        assert must in selectors, must
    bad = [(s, c, round(r, 2)) for s, c, r in found if r < AA]
    assert not bad, f"{theme}: below 4.5:1: {bad}"


def test_the_css_repeats_the_python_status_colours():
    toks = tokens(False)
    for status, bg in COLORS.items():
        assert toks[f"--mapnb-{status}-bg"].lower() == bg.lower(), status
        assert toks[f"--mapnb-{status}-fg"].lower() == TEXT_ON[status].lower(), status
        assert contrast(parse(bg)[:3], parse(TEXT_ON[status])[:3]) >= AA, status


def test_the_old_unreadable_pairs_are_caught():
    """The checker itself: white on the old light-grey 'queued' chip, the old dark-theme
    stderr red, both fail."""
    assert contrast(parse("#fff")[:3], parse("#bdbdbd")[:3]) < AA
    old = over(parse("rgba(255,255,255,.54)"), parse("#111"))
    assert contrast(parse("#c62828")[:3], parse("#424242")[:3]) < AA and old[3] == 1
    css = ".mapnb-grid { --mapnb-page: #fff; }\n.mapnb-chip.s-queued { background: #bdbdbd; color: #fff; }"
    global RULES
    saved, RULES = RULES, rules(css)
    try:
        assert [round(r, 2) for _, _, r in pairs("jupyterlab-light")] == [1.88]
    finally:
        RULES = saved


def test_heatmap_values_are_readable_on_every_colour_of_the_ramp():
    js = re.search(r"const RAMP = (\[\[.*?\]\]);", JS).group(1)
    assert [list(t) for t in grid._VIRIDIS] == [[int(x) for x in re.findall(r"\d+", t)] for t in
                                                re.findall(r"\[[\d, ]+\]", js[1:-1])]  # fmt: skip
    for k in range(201):
        rgb = parse(grid._ramp(k / 200))[:3]
        fg = parse(text_on(rgb))[:3]
        assert contrast(fg, rgb) >= AA, (k, rgb)


def test_the_static_picture_passes_aa():
    snap = {"run_id": "r1", "title": "t", "n": 8, "statuses": "qrtsfcax", "state": "running",
            "counts": dict.fromkeys(COLORS, 1), "elapsed": 1.0,
            "sheet": {"y": {"name": "a", "labels": ["1", "2"]}, "x": {"name": "b", "labels": list("wxyz")}},
            "heat_field": "loss", "heat": [None, None, None, 0.5, None, 2.5, None, None],
            "heat_scale": {"lo": 0.0, "hi": 3.0, "ticks": [0.0, 1.0, 2.0, 3.0], "was": None}}  # fmt: skip
    html = render_html(snap)
    found = re.findall(r"background:(#[0-9a-f]{3,6}|rgb\([^)]*\));color:(#[0-9a-f]{3,6})", html)
    assert len(found) >= 8 + 2  # eight chips, two valued cells
    for bg, fg in found:
        assert contrast(parse(bg)[:3], parse(fg)[:3]) >= AA, (bg, fg)
    hatched = re.findall(r"gradient\(45deg,(#\w+) 0 3px,(#\w+) 3px 5px\);color:(#\w+)", html)
    assert len(hatched) == 3  # the failed, aborted and cancelled cells, each with its glyph
    for a, b, fg in hatched:
        assert min(contrast(parse(a)[:3], parse(fg)[:3]), contrast(parse(b)[:3], parse(fg)[:3])) >= AA


@pytest.mark.parametrize("theme", ["jupyterlab-light", "jupyterlab-dark"])
def test_the_ipywidgets_faces_traceback_passes_aa(theme):
    """The core face has inline styles only: its traceback is the theme's text on the
    theme's error background."""
    from mapnb.jupyter.widget import _detail_html

    d = {"index": 0, "inputs": [["x", "1"]], "output": None, "finished": True, "status": "failed",
         "attempts": 1, "duration": 0.5, "error": "Traceback\nValueError: no", "log": [], "log_dropped": 0}  # fmt: skip
    html = _detail_html(d)
    style = re.search(r'<pre style="([^"]*)">Traceback', html).group(1)
    decls = dict(x.split(":", 1) for x in style.split(";") if ":" in x)
    jp = THEMES[theme][0]
    page = parse(jp["--jp-layout-color0"])
    bg = over(parse(resolve(decls["background"], jp, {})), page)
    fg = over(parse(resolve(decls["color"], jp, {})), bg)
    assert contrast(fg[:3], bg[:3]) >= AA


@pytest.mark.parametrize(("name", "table"), [("light", JP_LIGHT), ("dark", JP_DARK)])
def test_the_theme_table_matches_the_installed_jupyterlab(name, table):
    import sys

    css = pathlib.Path(sys.prefix) / f"share/jupyter/lab/themes/@jupyterlab/theme-{name}-extension/index.css"
    if not css.exists():
        pytest.skip("JupyterLab is not installed here")
    text = css.read_text()
    for var, value in table.items():
        m = re.search(re.escape(var) + r"\s*:\s*([^;}]+)", text)
        assert m, var
        got = re.sub(r"var\(--md-[\w-]+,\s*([^)]+)\)", r"\1", m.group(1)).strip()
        assert parse(got) == pytest.approx(parse(value), abs=0.01), (var, got, value)


def test_statuses_differ_by_more_than_hue():
    """Failed, aborted and cancelled cells carry a glyph and a hatch; queued cells are
    hollow (dashed), so they never look like cancelled ones (filled, with a glyph)."""
    by = {sel: decls for sel, decls in RULES}
    glyphs = {by[f".mapnb-cell.s-{s}::after"]["content"] for s in ("failed", "aborted", "cancelled")}
    assert len(glyphs) == 3  # three different glyphs
    for s in ("failed", "aborted", "cancelled"):
        assert "repeating-linear-gradient" in by[f".mapnb-cell.s-{s}"]["background-image"]
    queued = by[".mapnb-cell.s-queued"]
    assert queued["background"] == "transparent" and "dashed" in queued["border"]
    # coloured by value: running items are rings, not a colour on (or off) the scale
    ring = next(d for s, d in RULES if s.startswith(".mapnb-cells.by-value .mapnb-cell.s-running"))
    assert ring["background"] == "transparent" and "solid" in ring["border"]
