"""What every benchmark shares: the repeat count, the machine, and its results file.

Each benchmark writes ``benchmarks/results/<name>.json``: the machine and date of the run,
the raw numbers (``data``), and the Markdown tables (``tables``, keyed by the name of the
README marker they fill, ``<!-- bench:KEY -->`` ... ``<!-- /bench:KEY -->``).
``benchmarks/readme.py`` copies those tables into the README; nothing else writes them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def repeat(default: int) -> int:
    """``default``, or ``$MAPNB_BENCH_REPEAT`` (a quick check of the pipeline: ``=1``)."""
    value = os.environ.get("MAPNB_BENCH_REPEAT", "")
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"MAPNB_BENCH_REPEAT={value!r}: expected a whole number >= 1")
    return int(value)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine a run measured: CPUs, model, Python, and how busy it was at the start."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average": None if load is None else round(load, 2),
    }


def write(name: str, tables: dict[str, str], data: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``results/<name>.json`` (and each table as ``results/<key>.md``); return the JSON path."""
    folder = out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": MACHINE_AT_START,
        "tables": {key: text.strip() + "\n" for key, text in tables.items()},
        "data": data,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    for key, text in tables.items():
        (folder / f"{key}.md").write_text(text.strip() + "\n")
    return path


# Taken on import, i.e. when the benchmark starts: the load average before it adds its own.
MACHINE_AT_START = machine()
