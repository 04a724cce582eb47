"""What steering a sweep costs: ``python benchmarks/sweep_steer.py`` (not part of ``make bench``).

- control latency: ``run.rerun([i])``, ``run.cancel([i])`` and ``run.extend(...)`` on a run
  that is running on the local pool (the call returns once the engine thread made the change)
- growth at scale: ``run.extend(seed=[...])`` of a 10,000-item, 3-parameter sweep to 20,000
  items (validation, new combinations, state growth), ``run.coords`` and the grid model's
  update after the growth

Prints medians of ``--repeat`` measurements, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mapnb  # noqa: E402
from mapnb.jupyter.grid import GridModel  # noqa: E402


def nap(a: float, b: int, seed: int) -> float:
    time.sleep(0.2)
    return a * b + seed


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def control_latency(repeat: int) -> dict[str, float]:
    mt = mapnb.map_task(nap, concurrency=2, progress=False)
    run = mt.submit_product(a=[0.1 * k for k in range(10)], b=list(range(10)), seed=[0])
    while not run.counts["succeeded"]:
        time.sleep(0.01)
    out: dict[str, list[float]] = {"rerun": [], "cancel": [], "extend": []}
    for k in range(repeat):
        t0 = time.perf_counter()
        run.rerun([0])
        out["rerun"].append(ms(t0))
        t0 = time.perf_counter()
        run.cancel([len(run) - 1 - k])
        out["cancel"].append(ms(t0))
        t0 = time.perf_counter()
        run.extend(seed=[k + 1])
        out["extend"].append(ms(t0))
    run.cancel(wait=True)
    return {k: statistics.median(v) for k, v in out.items()}


def growth(repeat: int) -> dict[str, float]:
    out: dict[str, list[float]] = {"extend 10k -> 20k": [], "coords 20k": [], "grid update 20k": []}
    for _ in range(repeat):
        mt = mapnb.map_task(nap, backend="sequential", progress=False)
        run = mt.submit_product(a=[0.1 * k for k in range(100)], b=list(range(50)), seed=[0, 1])
        run.cancel(wait=True)  # a done run of 10,000 items (the growth restarts it)
        model = GridModel(run)
        model.changes()
        t0 = time.perf_counter()
        run.extend(seed=[2, 3])
        out["extend 10k -> 20k"].append(ms(t0))
        run.cancel(wait=True)
        t0 = time.perf_counter()
        assert len(run.coords or []) == 20_000
        out["coords 20k"].append(ms(t0))
        model._grown = True  # as ItemsAdded sets it
        t0 = time.perf_counter()
        sent = model.changes()
        out["grid update 20k"].append(ms(t0))
        assert sent["n"] == 20_000
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, value in {**control_latency(args.repeat), **growth(args.repeat)}.items():
        print(f"{name:>20}: {value:8.2f} ms")


if __name__ == "__main__":
    main()
