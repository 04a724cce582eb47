"""Every code example in the README runs as written.

Each ``python`` block runs on its own in a fresh interpreter, from an empty directory, as
a reader pasting it into a script would. Blocks that are notebook cells (their first line
is an IPython magic, ``%...``) run in order as one notebook, in a real Jupyter kernel.
``bash`` blocks are the set-up commands, which ``make test`` itself runs.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[int, str, str]]:
    """(line, language, code) of every fenced block in the README."""
    text = (ROOT / "README.md").read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1), m.group(2)) for m in FENCE.finditer(text)]


PYTHON = [(line, code) for line, lang, code in blocks() if lang == "python" and not code.startswith("%")]
CELLS = [code for _, lang, code in blocks() if lang == "python" and code.startswith("%")]


def env(tmp_path: pathlib.Path) -> dict[str, str]:
    return {
        **os.environ,
        "MAPNB_HOME": str(tmp_path / "home"),
        "MAPNB_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }


def test_the_readme_has_examples_of_both_kinds():
    assert len(PYTHON) >= 7 and len(CELLS) >= 2
    bash = [code for _, lang, code in blocks() if lang == "bash"]
    assert bash == ["make demo   # creates .venv, installs mapnb, runs examples/demo.py on the local process pool\n"
                    "make test   # creates .venv, installs mapnb[test], lints, runs the tests and the tutorial notebooks\n"]  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("line, code", PYTHON, ids=[f"line{line}" for line, _ in PYTHON])
def test_a_python_example_runs_as_written(line, code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, f"README example at line {line} failed:\n{done.stderr[-3000:]}"


@pytest.mark.timeout(300)
def test_the_notebook_examples_run_in_a_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    for k, v in env(tmp_path).items():
        if k.startswith("MAPNB_"):
            monkeypatch.setenv(k, v)  # the kernel inherits them
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
