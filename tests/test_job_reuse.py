"""A local worker keeps the task functions it loaded: the same map run again reuses them.

Each run has a job of its own (its run id, checkpoints, limits); the function travels
apart, keyed by its pickled bytes (mapnb.backends.local.pool.JobBlob). The workers' own
counter of unpickled functions (``serve.loads``) is read by the items themselves.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import mapnb
from mapnb.backends.local import LocalBackend, Pool


def loads_seen(x: int) -> tuple[int, int, str | None]:
    """(this worker's pid, how many functions it has unpickled, the run id it sees)."""
    from mapnb.backends.local import serve

    return os.getpid(), serve.loads, mapnb.current_context().run_id


@pytest.fixture
def backend() -> Iterator[LocalBackend]:
    b = LocalBackend(Pool())
    try:
        yield b
    finally:
        b.shutdown()


def _run(mt: mapnb.MapTask, n: int) -> tuple[Any, list[Any]]:
    run = mt.submit(x=list(range(n)))
    run.wait()
    assert run.state == "succeeded", run.errors() if hasattr(run, "errors") else run
    return run, run.outputs


def test_a_worker_loads_the_function_once_over_two_runs_of_the_same_map(backend: LocalBackend) -> None:
    mt = mapnb.map_task(loads_seen, concurrency=1, backend=backend, progress=False)
    first, out1 = _run(mt, 5)
    second, out2 = _run(mt, 5)
    pids = {pid for pid, _, _ in out1 + out2}
    assert len(pids) == 1  # concurrency 1, one warm worker
    assert {loads for _, loads, _ in out1 + out2} == {1}  # unpickled for the first run only
    # ... while what belongs to a run still comes per run.
    assert {rid for _, _, rid in out1} == {first.id}
    assert {rid for _, _, rid in out2} == {second.id}
    assert first.id != second.id


def _cell(body: str) -> Any:
    """A function defined as a notebook cell defines it (in ``__main__``: it travels by value)."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(body), "<cell>", "exec"), ns)
    return ns["step"]


def test_an_edited_function_of_the_same_name_is_loaded_again(backend: LocalBackend) -> None:
    old = _cell(
        """
        def step(x):
            from mapnb.backends.local import serve
            return x + 1, serve.loads
        """
    )
    new = _cell(
        """
        def step(x):
            from mapnb.backends.local import serve
            return x + 100, serve.loads
        """
    )
    _, out1 = _run(mapnb.map_task(old, concurrency=1, backend=backend, progress=False), 3)
    _, out2 = _run(mapnb.map_task(new, concurrency=1, backend=backend, progress=False), 3)
    _, out3 = _run(mapnb.map_task(old, concurrency=1, backend=backend, progress=False), 3)
    assert [v for v, _ in out1] == [1, 2, 3]
    assert [v for v, _ in out2] == [100, 101, 102]  # the new body, not the kept one
    assert [v for v, _ in out3] == [1, 2, 3]
    assert {n for _, n in out1} == {1}
    assert {n for _, n in out2} == {2}  # loaded anew
    assert {n for _, n in out3} == {2}  # the first is still kept: not loaded a third time


def test_a_changed_captured_value_is_loaded_again(backend: LocalBackend) -> None:
    """The same code with another value of a global it reads: other bytes, loaded anew."""
    ns: dict[str, Any] = {"__name__": "__main__", "SCALE": 2}
    exec("def step(x):\n    return x * SCALE\n", ns)
    mt = mapnb.map_task(ns["step"], concurrency=1, backend=backend, progress=False)
    assert _run(mt, 3)[1] == [0, 2, 4]
    ns["SCALE"] = 10
    assert _run(mt, 3)[1] == [0, 10, 20]


def test_a_worker_keeps_a_few_functions_not_all(backend: LocalBackend) -> None:
    from mapnb.backends.local import serve

    cells = [_cell(f"def step(x):\n    from mapnb.backends.local import serve\n    return {k}, serve.loads\n") for k in range(serve.FUNCTIONS_KEPT + 1)]
    for fn in cells:  # one more than it keeps: the first is dropped
        _run(mapnb.map_task(fn, concurrency=1, backend=backend, progress=False), 1)
    (value, loads), = _run(mapnb.map_task(cells[0], concurrency=1, backend=backend, progress=False), 1)[1]
    assert value == 0
    assert loads == serve.FUNCTIONS_KEPT + 2
    (value, loads), = _run(mapnb.map_task(cells[-1], concurrency=1, backend=backend, progress=False), 1)[1]
    assert (value, loads) == (serve.FUNCTIONS_KEPT, serve.FUNCTIONS_KEPT + 2)  # kept


def test_a_flytekit_task_is_loaded_once_over_two_runs(backend: LocalBackend) -> None:
    flytekit = pytest.importorskip("flytekit")

    @flytekit.task
    def fk_loads(x: int) -> int:
        from mapnb.backends.local import serve

        return serve.loads

    mt = mapnb.map_task(fk_loads, concurrency=1, backend=backend, progress=False)
    assert _run(mt, 3)[1] == [1, 1, 1]
    assert _run(mt, 3)[1] == [1, 1, 1]
