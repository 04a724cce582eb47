"""``mapnb notebooks PATH...``: run notebooks in parallel from a terminal or CI.

The application around :func:`mapnb.notebooks.run`: it parses papermill-style
parameters, shows a live view (one line per running notebook, "cell 7/23, 12 s", and an
overall bar), prints each failure's cell and traceback, writes JUnit XML, annotates
GitHub Actions, and exits non-zero when notebooks failed.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import quoteattr

from ..errors import InvalidMapError, MapnbError
from ..events import Event, ItemFinished, ItemLog, ItemStarted
from ._params import parse_value, read_file, split_values

_CELL = re.compile(r"── cell (\d+)/(\d+) ──")


def build_parser(prog: str = "mapnb notebooks") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Execute Jupyter notebooks in parallel, each one a mapnb item (in a kernel of its own).",
        epilog=(
            "examples:\n"
            "  mapnb notebooks notebooks/ --concurrency 4 --junit-xml report.xml\n"
            "  mapnb notebooks train.ipynb -p epochs 3 --product lr=0.1,0.01 seed=1,2\n"
            "  mapnb notebooks 'docs/**/*.ipynb' --cache --depends data/ --cell-timeout 300"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help="notebooks, folders (searched recursively) or glob patterns"
    )
    g = p.add_argument_group("parameters (injected after the cell tagged 'parameters', as papermill does)")
    g.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a value, parsed as a Python literal or YAML (else text)")  # fmt: skip
    g.add_argument("-f", "--parameters-file", action="append", default=[], metavar="FILE",
                   help="a YAML (or JSON) file of names and values")  # fmt: skip
    g.add_argument("--product", nargs="+", action="append", default=[], metavar="NAME=V1,V2",
                   help="a sweep: every notebook runs once per combination of the values")  # fmt: skip
    r = p.add_argument_group("running")
    r.add_argument("--kernel", help="run every notebook in this kernel (default: each notebook's own)")
    r.add_argument("--concurrency", type=int, help="notebooks at once (default: the usable CPUs)")
    r.add_argument("--timeout", type=float, metavar="S", help="seconds per notebook")
    r.add_argument("--cell-timeout", type=float, metavar="S", help="seconds per cell")
    r.add_argument("--retries", type=int, default=0, metavar="N",
                   help="retries of infrastructure failures only (kernel died or did not start)")  # fmt: skip
    r.add_argument("--min-success-ratio", type=float, metavar="R",
                   help="succeed when this share of notebooks succeeds (default: all; given, the run "
                   "stops once it cannot be met)")  # fmt: skip
    r.add_argument("--backend", default="threads",
                   help="mapnb backend (default: threads: each notebook runs in a kernel process of its own "
                   "anyway, driven from a thread of this command; 'local' drives each from a worker process)")  # fmt: skip
    r.add_argument("--address", help="run on the Dask scheduler at ADDR")
    r.add_argument(
        "--no-warm", action="store_true", help="do not start the next kernel while a notebook runs"
    )
    c = p.add_argument_group("cache")
    c.add_argument("--cache", action="store_true",
                   help="skip notebooks whose code, kernel, parameters, --depends and packages are unchanged")  # fmt: skip
    c.add_argument("--depends", nargs="+", action="extend", default=[], metavar="PATH",
                   help="files and folders whose contents are part of the cache key")  # fmt: skip
    c.add_argument("--lock-file", metavar="FILE", help="stands for the installed packages in the cache key")
    o = p.add_argument_group("output")
    o.add_argument(
        "--output-dir", default="executed", metavar="DIR", help="executed notebooks (default: executed/)"
    )
    o.add_argument("--junit-xml", metavar="FILE", help="a JUnit XML report, a testcase per notebook")
    o.add_argument("--junit-cells", action="store_true", help="in the JUnit report, a testcase per cell too")
    o.add_argument("--no-live", action="store_true", help="no live view, one line per finished notebook")
    return p


def _parameters(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    fixed: dict[str, Any] = {}
    for f in args.parameters_file:
        fixed.update(read_file(f))
    given: set[str] = set()
    for name, value in args.parameter:
        if name in given:
            raise InvalidMapError(f"-p {name} is given twice; give each parameter once")
        given.add(name)
        fixed[name] = parse_value(value)
    product: dict[str, list[Any]] = {}
    for group in args.product:
        for token in group:
            if "=" not in token:  # a path after --product: argparse cannot tell
                args.paths.append(token)
                continue
            name, _, values = token.partition("=")
            name = name.strip()
            if name in product:
                raise InvalidMapError(f"--product {name} is given twice; give each parameter once")
            if name in given:
                raise InvalidMapError(
                    f"{name} is given both with -p and with --product; give each parameter once"
                )
            fixed.pop(name, None)  # a sweep over a name of a -f file replaces its value
            product[name] = [parse_value(v) for v in split_values(values)]
    return fixed, product


class LiveView:
    """Follows a run's events: what each running notebook is doing, and what finished.

    On a terminal, a block of lines redrawn in place; elsewhere (CI logs), one line per
    finished notebook.
    """

    def __init__(self, run: Any, stream: TextIO, live: bool) -> None:
        self.run, self.stream, self.live = run, stream, live
        self._lock = threading.Lock()
        self._running: dict[int, list[Any]] = {}  # index -> [started, k, n]
        self._finished: list[int] = []
        self._drawn = 0
        self.t0 = time.monotonic()

    def on_events(self, events: list[Event]) -> None:
        with self._lock:
            for ev in events:
                if isinstance(ev, ItemStarted):
                    self._running[ev.index] = [time.monotonic(), 0, None]
                elif isinstance(ev, ItemLog) and ev.index in self._running:
                    for m in _CELL.finditer(ev.text):
                        self._running[ev.index][1:] = [int(m.group(1)), int(m.group(2))]
                elif isinstance(ev, ItemFinished):
                    self._running.pop(ev.index, None)
                    self._finished.append(ev.index)

    def name(self, i: int) -> str:
        return label(self.run, i)

    def draw(self, final: bool = False) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
            running = sorted(self._running.items())
        out: list[str] = []
        if self.live and self._drawn:
            out.append(f"\x1b[{self._drawn}F\x1b[J")  # back to the block's first line, clear below
        rows = None
        for i in finished:
            if rows is None:
                rows = self.run.rows()
            out.append(_finished_line(rows[i], self.name(i)) + "\n")
        self._drawn = 0
        if self.live and not final:
            now = time.monotonic()
            width = shutil.get_terminal_size().columns
            for i, (t0, k, n) in running:
                what = f"cell {k}/{n}" if n else "starting kernel"
                line = f"  ▸ {self.name(i)}  {what}, {now - t0:.0f} s"
                out.append(line[: width - 1] + "\n")
            c = self.run.counts
            done = sum(c[s] for s in ("succeeded", "failed", "cached", "aborted", "cancelled"))
            n = len(self.run)
            bar_w = max(10, min(40, width - 60))
            fill = int(bar_w * done / n) if n else bar_w
            parts = [f"{c[s]} {s}" for s in ("running", "succeeded", "cached", "failed") if c[s]]
            out.append(
                f"[{'█' * fill}{'·' * (bar_w - fill)}] {done}/{n}  {', '.join(parts)}  {now - self.t0:.0f} s\n"
            )
            self._drawn = len(running) + 1
        self.stream.write("".join(out))
        self.stream.flush()


def label(run: Any, i: int) -> str:
    """Notebook ``i``'s name, with the parameters that differ between the run's items."""
    varying = getattr(run, "_cli_varying", None)
    if varying is None:
        seen: dict[str, set[str]] = {}
        for _, params, *_ in run.inputs:
            for k, v in params.items():
                seen.setdefault(k, set()).add(repr(v))
        varying = run._cli_varying = {k for k, vals in seen.items() if len(vals) > 1}
    params = {k: v for k, v in run.inputs[i][1].items() if k in varying}
    return f"{run.inputs[i][0]} {_short(params)}" if params else run.inputs[i][0]


def _short(params: dict[str, Any]) -> str:
    return "[" + ", ".join(f"{k}={v!r}" for k, v in params.items()) + "]"


def _finished_line(row: Any, name: str) -> str:
    mark = {"succeeded": "✓", "cached": "✓", "failed": "✗", "aborted": "!", "cancelled": "⊘"}.get(
        row["status"], "?"
    )
    dur = f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else "-"
    text = f"{mark} {row['status']:<9} {name}  ({dur})"
    if row["error"]:
        text += f"  {row['error']}"
    return text


def source_line_in_file(path: str | Path, cell: int, line: int | None) -> int:
    """The line of the ``.ipynb`` file (JSON) that holds ``line`` of cell ``cell``, for
    annotations that point into the notebook; 1 when it cannot be found."""
    try:
        text = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 1
    seen = -1
    for n, raw in enumerate(text, 1):
        if re.match(r'\s*"source":', raw):
            seen += 1
            if seen == cell:
                if raw.rstrip().endswith("["):  # one string per source line, from the next line
                    return n + (line or 1)
                return n
    return 1


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github(run: Any, rows: list[dict[str, Any]], out: TextIO) -> None:
    """``::error`` annotations at the failing lines, and a table in the job's summary."""
    for row in rows:
        if row["status"] != "failed":
            continue
        cell = row["cell"]
        line = source_line_in_file(row["notebook"], cell, row["line"]) if cell is not None else 1
        title = f"{row['notebook']} failed" + (f" in cell {cell}" if cell is not None else "")
        msg = row["error"] or "failed"
        out.write(
            f"::error file={_gh_escape(str(row['notebook']), True)},line={line},title={_gh_escape(title, True)}::{_gh_escape(msg)}\n"
        )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        lines = [
            f"### mapnb notebooks: {run.counts['succeeded'] + run.counts['cached']} of {len(run)} succeeded",
            "",
            "| notebook | parameters | status | duration | cell | error |",
            "|---|---|---|---:|---:|---|",
        ]
        for row in rows:
            dur = f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else ""
            cell = "" if row["cell"] is None else str(row["cell"])
            err = html.escape(row["error"] or "", quote=False).replace("|", "\\|")
            params = html.escape(_short(row["parameters"]) if row["parameters"] else "", quote=False).replace(
                "|", "\\|"
            )
            lines.append(f"| `{row['notebook']}` | {params} | {row['status']} | {dur} | {cell} | {err} |")
        with open(summary, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


def junit(run: Any, rows: list[dict[str, Any]], path: str | Path, cells: bool) -> None:
    """A JUnit XML report: a testcase per notebook (x parameters), and with ``cells`` one
    per code cell too (not run after a failure: skipped)."""
    import nbformat

    cases: list[str] = []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for i, row in enumerate(rows):
        name = label(run, i)
        d = run.details(i)
        body = ""
        counts["tests"] += 1
        if row["status"] == "failed":
            detail = "\n".join(x for x in (d.get("cell_source"), d.get("traceback")) if x)
            tag = "failure" if d.get("kind") in ("error", "timeout", "cell-timeout") else "error"
            counts["failures" if tag == "failure" else "errors"] += 1
            body = f"<{tag} message={quoteattr(row['error'] or '')}>{html.escape(detail)}</{tag}>"
        elif row["status"] in ("aborted", "cancelled"):
            counts["skipped"] += 1
            body = f"<skipped message={quoteattr(row['error'] or row['status'])}/>"
        dur = row["duration_s"] if row["duration_s"] is not None else 0.0
        cases.append(
            f'    <testcase classname="mapnb.notebooks" name={quoteattr(name)} file={quoteattr(str(row["notebook"]))} '
            f'time="{dur:.3f}">{body}</testcase>'
        )
        if not cells:
            continue
        try:
            nb = nbformat.read(row["notebook"], as_version=4)
        except Exception:  # noqa: BLE001 - a notebook gone since: no per-cell cases
            continue
        durations = row["cell_durations"] or {}
        for k, c in enumerate(nb.cells):
            if c.cell_type != "code" or not c.source.strip():
                continue
            counts["tests"] += 1
            inner = ""
            if row["status"] == "failed" and row["cell"] == k:
                counts["failures"] += 1
                inner = f"<failure message={quoteattr(row['error'] or '')}>{html.escape(d.get('traceback') or '')}</failure>"
            elif k not in durations:
                counts["skipped"] += 1
                inner = '<skipped message="not run"/>'
            cases.append(
                f'    <testcase classname={quoteattr("mapnb.notebooks." + name)} name="cell {k}" '
                f'time="{durations.get(k, 0.0):.3f}">{inner}</testcase>'
            )
    total = f"{run.elapsed:.3f}"
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n'
        f'  <testsuite name="mapnb.notebooks" tests="{counts["tests"]}" failures="{counts["failures"]}" '
        f'errors="{counts["errors"]}" skipped="{counts["skipped"]}" time="{total}">\n'
        + "\n".join(cases)
        + "\n  </testsuite>\n</testsuites>\n"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(xml, encoding="utf-8")


def _report_failures(run: Any, rows: list[dict[str, Any]], out: TextIO) -> None:
    for i, row in enumerate(rows):
        if row["status"] != "failed":
            continue
        d = run.details(i)
        name = label(run, i)
        out.write(f"\n{'━' * 8} {name}: {row['error']}\n")
        if d.get("cell_source"):
            line = d.get("line")
            for n, text in enumerate(d["cell_source"].splitlines(), 1):
                out.write(f"{'>' if n == line else ' '} {n:>3} | {text}\n")
        if d.get("traceback"):
            out.write("\n" + d["traceback"].rstrip() + "\n")
        if row["output"]:
            out.write(f"(executed notebook: {row['output']})\n")


def main(argv: Sequence[str] | None = None, prog: str = "mapnb notebooks") -> int:
    """Run the command; return the exit code (0: success, 1: notebooks failed, 2: bad usage,
    130: interrupted)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    err = sys.stderr
    try:
        fixed, product = _parameters(args, parser)
        if not args.paths:
            parser.error("the following arguments are required: PATH")
        if args.junit_cells and not args.junit_xml:
            raise InvalidMapError("--junit-cells needs --junit-xml FILE")
        backend: Any = args.backend
        if args.address:
            from ..backends.dask import DaskBackend

            backend = DaskBackend.for_address(args.address)
        from . import run as run_notebooks

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = run_notebooks(
                args.paths, parameters=fixed, product=product or None, kernel=args.kernel,
                output_dir=args.output_dir, concurrency=args.concurrency, timeout=args.timeout,
                cell_timeout=args.cell_timeout, retries=args.retries, min_success_ratio=args.min_success_ratio,
                backend=backend, cache=args.cache, depends=args.depends, lock_file=args.lock_file,
                progress=False, wait=False, warm=not args.no_warm,
            )  # fmt: skip
        for w in caught:
            err.write(f"warning: {w.message}\n")
    except (InvalidMapError, MapnbError) as e:
        err.write(f"{prog}: error: {e}\n")
        return 2
    live = not args.no_live and bool(getattr(err, "isatty", lambda: False)())
    view = LiveView(run, err, live)
    run.subscribe(view.on_events)
    try:
        while not run.wait(0.25 if live else 0.5):
            view.draw()
    except KeyboardInterrupt:
        run.cancel(wait=True)
        view.draw(final=True)
        err.write(f"interrupted: {run!r}\n")
        return 130
    view.draw(final=True)
    rows = run.rows()  # (no pandas: a cached re-run would spend half its time importing it)
    _report_failures(run, rows, err)
    if args.junit_xml:
        junit(run, rows, args.junit_xml, args.junit_cells)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        github(run, rows, sys.stdout)
    c = run.counts
    ok = c["succeeded"] + c["cached"]
    parts = [f"{c[s]} {s}" for s in ("succeeded", "cached", "failed", "aborted", "cancelled") if c[s]]
    err.write(f"\n{ok} of {len(run)} notebooks succeeded ({', '.join(parts)}) in {run.elapsed:.1f} s; "
              f"executed notebooks in {args.output_dir}/\n")  # fmt: skip
    return 0 if run.state == "succeeded" else 1
