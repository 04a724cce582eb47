"""benchmarks/readme.py rewrites the README's benchmark tables, and nothing else."""

from __future__ import annotations

import pathlib
import platform
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402

README = """# project

Intro, with a marker that is not in the Benchmark section:
<!-- bench:run -->
old run table outside
<!-- /bench:run -->

## Benchmark

Prose before, kept as written.

<!-- bench:machine -->
old machine line
<!-- /bench:machine -->

<!-- bench:run -->
| old | table |
|---|---|
| 164k | claimed |
<!-- /bench:run -->

Prose between, kept.

<!-- bench:flyte -->
flyte table from an earlier run
<!-- /bench:flyte -->

### A subsection, still the Benchmark section

<!-- bench:steady -->
<!-- /bench:steady -->

## Layout

<!-- bench:steady -->
outside again
<!-- /bench:steady -->
"""


def rewrite(tmp_path: pathlib.Path) -> tuple[str, subprocess.CompletedProcess[str]]:
    readme = tmp_path / "README.md"
    if not readme.exists():
        readme.write_text(README)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "readme.py"),
            "--readme",
            str(readme),
            "--results",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return readme.read_text(), proc


def sample(tmp_path: pathlib.Path) -> None:
    """A results file as run.py writes it, through the same function."""
    tables = {
        "run": "| new | table |\n|---|---|\n| 1 | 2 |",
        "steady": "| W1' | 20,000 |\n|---|---|\n| items/s | 3 |",
    }
    _common.write("run", tables, {"x": 1}, tmp_path / "results")


def test_tables_between_markers_in_the_benchmark_section_change_and_nothing_else(tmp_path):
    sample(tmp_path)
    text, proc = rewrite(tmp_path)
    head, rest = text.split("## Benchmark\n", 1)
    section, tail = rest.split("## Layout\n", 1)
    assert head == README.split("## Benchmark\n", 1)[0]  # the same marker outside: untouched
    assert tail == README.split("## Layout\n", 1)[1]
    assert "<!-- bench:run -->\n| new | table |\n|---|---|\n| 1 | 2 |\n<!-- /bench:run -->" in section
    assert (
        "<!-- bench:steady -->\n| W1' | 20,000 |\n|---|---|\n| items/s | 3 |\n<!-- /bench:steady -->"
        in section
    )
    assert "164k" not in section and "old machine line" not in section
    assert "flyte table from an earlier run" in section  # no results for it: kept, and said so
    assert "flyte" in proc.stderr
    m = _common.machine()
    machine = section.split("<!-- bench:machine -->\n", 1)[1].split("<!-- /bench:machine -->")[0]
    assert f"{m['cpus']} CPUs ({m['cpu_model']})" in machine
    assert f"Python {platform.python_version()}" in machine
    assert " UTC." in machine
    for prose in ("Prose before, kept as written.\n", "Prose between, kept.\n", "### A subsection"):
        assert prose in section
    # What is left once the marked blocks are dropped is exactly what was there before.
    assert _unmarked(text) == _unmarked(README)


def test_rewriting_twice_gives_the_same_readme(tmp_path):
    sample(tmp_path)
    once, _ = rewrite(tmp_path)
    twice, _ = rewrite(tmp_path)
    assert once == twice


def _unmarked(text: str) -> str:
    import re

    return re.sub(r"(<!-- bench:([\w-]+) -->\n).*?(<!-- /bench:\2 -->)", r"\1\3", text, flags=re.S)
