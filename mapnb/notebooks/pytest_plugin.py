"""``pytest --mapnb-notebooks [PATHS]``: notebooks collected as tests, run through mapnb.

Every collected notebook becomes one test; all of them start together in one
:func:`mapnb.notebooks.run` (``--mapnb-concurrency`` at once, warm kernels), and each test
waits for its own notebook. So a project can replace ``pytest --nbmake -n auto`` with no
xdist. A failure shows the failing cell's source and its traceback.

This module is loaded by every pytest run of an environment where mapnb is installed
(the ``pytest11`` entry point), so it does nothing unless ``--mapnb-notebooks`` is given,
and imports nothing heavy until then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mapnb-notebooks", "run notebooks in parallel with mapnb")
    group.addoption("--mapnb-notebooks", action="store_true", default=False,
                    help="collect *.ipynb files as tests and run them in parallel through mapnb")  # fmt: skip
    group.addoption(
        "--mapnb-concurrency", type=int, default=None, help="notebooks at once (default: the CPUs)"
    )
    group.addoption("--mapnb-timeout", type=float, default=None, help="seconds per notebook")
    group.addoption("--mapnb-cell-timeout", type=float, default=None, help="seconds per cell")
    group.addoption("--mapnb-retries", type=int, default=0, help="retries of kernel failures only")
    group.addoption("--mapnb-kernel", default=None, help="run every notebook in this kernel")
    group.addoption("--mapnb-output-dir", default=None, help="write the executed notebooks here")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".ipynb" and parent.config.getoption("mapnb_notebooks"):
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class NotebookFile(pytest.File):
    def collect(self) -> Any:
        yield NotebookItem.from_parent(self, name=self.path.name)


class NotebookFailed(Exception):
    """A notebook failed; its message is the report."""


class _Runner:
    """One mapnb run of every notebook the session will run, started by the first test."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.run: Any = None
        self.index: dict[Path, int] = {}

    def start(self, session: pytest.Session) -> None:
        from . import run as run_notebooks

        paths = [it.path for it in session.items if isinstance(it, NotebookItem)]
        self.index = {p: i for i, p in enumerate(paths)}
        opt = self.config.getoption
        self.run = run_notebooks(
            paths, concurrency=opt("mapnb_concurrency"), timeout=opt("mapnb_timeout"),
            cell_timeout=opt("mapnb_cell_timeout"), retries=opt("mapnb_retries"), kernel=opt("mapnb_kernel"),
            output_dir=opt("mapnb_output_dir"), progress=False, wait=False,
        )  # fmt: skip

    def result(self, path: Path) -> tuple[str, dict[str, Any], float]:
        i = self.index[path]
        while not self.run.statuses[i].final:
            self.run.wait(0.1)
        row = self.run.rows()[i]
        return row["status"], self.run.details(i), row["duration_s"]

    def stop(self) -> None:
        if self.run is not None and not self.run.done():
            self.run.cancel(wait=True)


_KEY = pytest.StashKey[_Runner]()


class NotebookItem(pytest.Item):
    def runtest(self) -> None:
        runner = self.config.stash.get(_KEY, None)
        if runner is None:
            runner = self.config.stash[_KEY] = _Runner(self.config)
        if runner.run is None:
            runner.start(self.session)
        status, details, duration = runner.result(self.path)
        self.user_properties.append(("mapnb_duration_s", duration))
        if status in ("succeeded", "cached"):
            return
        lines = [f"{self.path.name}: {details.get('error') or status}"]
        if details.get("cell_source"):
            line = details.get("line")
            lines += [""] + [
                f"{'>' if n == line else ' '} {n:>3} | {text}"
                for n, text in enumerate(details["cell_source"].splitlines(), 1)
            ]
        if details.get("traceback"):
            lines += ["", details["traceback"].rstrip()]
        raise NotebookFailed("\n".join(lines))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, NotebookFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"notebook: {self.path.name}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    runner = session.config.stash.get(_KEY, None)
    if runner is not None:
        runner.stop()
