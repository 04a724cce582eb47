"""Rewrite the README's "## Benchmark" tables from the results the benchmarks wrote.

Every benchmark writes ``benchmarks/results/<name>.json`` (see ``_common.write``) with its
tables keyed by marker. In the README's "## Benchmark" section (up to the next ``## ``
heading), the text between ``<!-- bench:KEY -->`` and ``<!-- /bench:KEY -->`` becomes
that table; ``<!-- bench:machine -->`` gets the machine and the dates of the runs. Nothing
outside the markers changes, so the prose around the tables is kept as written. A marker
with no results (a benchmark not run) keeps its old text, and the script says so.
`make bench` runs it last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Benchmark"
MARKER = re.compile(r"(<!-- bench:([\w-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def load(folder: Path) -> list[dict[str, Any]]:
    """Every results record in ``folder``, oldest first."""
    records = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "tables" not in record:
            raise SystemExit(f"{path}: not a benchmark results file (no 'tables')")
        records.append(record)
    return sorted(records, key=lambda r: r["date"])


def machine_text(records: list[dict[str, Any]]) -> str:
    """Which machine, which Python, when, and how busy: from the records themselves."""
    machines = {json.dumps({k: v for k, v in r["machine"].items() if k != "load_average"}) for r in records}
    m = records[0]["machine"]
    first, last = (datetime.datetime.fromisoformat(records[k]["date"]) for k in (0, -1))
    when = first.strftime("%Y-%m-%d %H:%M")
    if last.strftime("%H:%M") != first.strftime("%H:%M") or last.date() != first.date():
        when += " to " + last.strftime("%H:%M" if last.date() == first.date() else "%Y-%m-%d %H:%M")
    load = ", ".join(f"{r['benchmark']} {r['machine']['load_average']}" for r in records)
    lines = [
        f"Measured by `make bench` on {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"{m['system']}, {when} UTC. Load average (1 min) as each benchmark started: {load}.",
    ]
    if len(machines) > 1:
        lines.append("**These results come from more than one machine**: re-run `make bench` on one.")
    return "\n".join(lines) + "\n"


def rewrite(readme: str, records: list[dict[str, Any]]) -> tuple[str, list[str], list[str]]:
    """The README with its benchmark tables replaced; the keys replaced and the keys kept."""
    start = readme.find("\n" + HEADING + "\n")
    if start < 0:
        raise SystemExit(f"README: no {HEADING!r} section")
    end = readme.find("\n## ", start + 1)
    end = len(readme) if end < 0 else end
    tables: dict[str, str] = {}
    for record in records:  # oldest first: a newer run of a benchmark wins
        tables.update(record["tables"])
    if records:
        tables["machine"] = machine_text(records)
    done: list[str] = []
    kept: list[str] = []

    def fill(m: re.Match[str]) -> str:
        key = m.group(2)
        if key not in tables:
            kept.append(key)
            return m.group(0)
        done.append(key)
        return m.group(1) + tables[key].strip() + "\n" + m.group(4)

    section = MARKER.sub(fill, readme[start:end])
    return readme[:start] + section + readme[end:], done, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    records = load(args.results)
    if not records:
        raise SystemExit(f"no results in {args.results}: run the benchmarks first (make bench)")
    text, done, kept = rewrite(args.readme.read_text(), records)
    unused = sorted({k for r in records for k in r["tables"]} - set(done))
    args.readme.write_text(text)
    print(f"{args.readme}: rewrote {', '.join(done) or 'nothing'}")
    if kept:
        print(f"  kept as they were (no results): {', '.join(kept)}", file=sys.stderr)
    if unused:
        print(f"  results with no marker in the README: {', '.join(unused)}", file=sys.stderr)


if __name__ == "__main__":
    main()
