"""mapnb's local backend against its peers, measured side by side in one run (`make bench`).

Workloads (task functions live in ``__main__``, as in a notebook):

- W1: 2,000 trivial items, items/s (higher is better)
- W2: 40 items of ``sleep(0.5)`` at concurrency 20, seconds (ideal 1.0)
- W3: 8 CPU-bound items of ~0.4 s at concurrency 2, seconds (ideal: half the serial time)
- W4: time to the first result of a one-item map, seconds: cold (a fresh interpreter,
  imports and pool start included) and warm (a pool already running)

Every number is the median of ``--repeat`` runs; ratios are against
``concurrent.futures.ProcessPoolExecutor`` measured in the same run. mapnb runs with its
defaults: per-item status events and log capture are on. The serial loop and flytekit run
W2 once (they take 20 s by construction).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N1, N2, SLEEP2, C2, N3, C3 = 2000, 40, 0.5, 20, 8, 2


def trivial(x: int) -> int:
    return x + 1


def sleepy(x: int) -> int:
    time.sleep(SLEEP2)
    return x


def spin(x: int) -> int:
    total = 0
    for i in range(x):
        total += i * i % 7
    return total


def calibrate(seconds: float = 0.4) -> int:
    """The loop count of ``spin`` that takes about ``seconds`` here."""
    n = 200_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        dt = time.perf_counter() - t0
        if dt > 0.05:
            return int(n * seconds / dt)
        n *= 4


# -- the contenders: run(fn, inputs, concurrency) -> list of outputs ----------------------


def run_serial(fn: Callable, xs: list, c: int) -> list:
    return [fn(x) for x in xs]


class Pooled:
    """Keeps one warm pool per concurrency, as a notebook session would."""

    def __init__(self, make: Callable[[int], object], call: Callable, close: Callable) -> None:
        self.make, self.call, self.close_one, self.pools = make, call, close, {}

    def __call__(self, fn: Callable, xs: list, c: int) -> list:
        if c not in self.pools:
            self.pools[c] = self.make(c)
        return self.call(self.pools[c], fn, xs)

    def close(self) -> None:
        for p in self.pools.values():
            self.close_one(p)


def make_contenders() -> dict[str, Callable]:
    import joblib

    import mapnb

    def run_mapnb(fn: Callable, xs: list, c: int) -> list:
        run = mapnb.map_task(fn, concurrency=c, progress=False).submit(x=xs)
        run.wait()
        assert run.state == "succeeded", run
        return run.outputs

    out: dict[str, Callable] = {
        "mapnb (local)": run_mapnb,
        "ProcessPoolExecutor": Pooled(
            lambda c: cf.ProcessPoolExecutor(c), lambda p, fn, xs: list(p.map(fn, xs)), lambda p: p.shutdown()
        ),
        "multiprocessing.Pool": Pooled(
            lambda c: multiprocessing.Pool(c), lambda p, fn, xs: p.map(fn, xs), lambda p: p.terminate()
        ),
        "joblib (loky)": Pooled(
            lambda c: joblib.Parallel(n_jobs=c),
            lambda p, fn, xs: p(joblib.delayed(fn)(x) for x in xs),
            lambda p: None,
        ),
        "serial loop": run_serial,
    }
    try:
        import flytekit  # noqa: F401

        out["flytekit map_task (local)"] = run_flytekit
    except ImportError:
        pass
    return out


_FLYTE_TASKS: dict[Callable, object] = {}


def run_flytekit(fn: Callable, xs: list, c: int) -> list:
    import logging

    from flytekit import map_task as flyte_map_task
    from flytekit import task as flyte_task

    logging.getLogger("flytekit").setLevel(logging.ERROR)
    if fn not in _FLYTE_TASKS:
        _FLYTE_TASKS[fn] = flyte_task(fn)
    return list(flyte_map_task(_FLYTE_TASKS[fn], concurrency=c)(x=xs))


# -- measurements -------------------------------------------------------------------------


def timed(run: Callable, fn: Callable, xs: list, c: int, expect: list) -> float:
    t0 = time.perf_counter()
    out = run(fn, xs, c)
    dt = time.perf_counter() - t0
    assert list(out) == expect, f"wrong results from {run}"
    return dt


COLD = {
    "mapnb (local)": """
        import mapnb
        run = mapnb.map_task(trivial, progress=False).submit(x=[1])
        run.wait()
        assert run.outputs == [2]
    """,
    "ProcessPoolExecutor": """
        import concurrent.futures as cf
        with cf.ProcessPoolExecutor(2) as p:
            assert p.submit(trivial, 1).result() == 2
            t1 = time.perf_counter()
    """,
    "multiprocessing.Pool": """
        import multiprocessing
        p = multiprocessing.Pool(2)
        assert p.map(trivial, [1]) == [2]
        t1 = time.perf_counter()
        p.terminate()
    """,
    "joblib (loky)": """
        import joblib
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(trivial)(x) for x in [1]) == [2]
    """,
}


def cold_start(name: str) -> float:
    body = textwrap.dedent(COLD[name]).strip()
    code = "\n".join(
        [
            "import time",
            "t0 = time.perf_counter()",
            f"import sys; sys.path.insert(0, {str(ROOT)!r})",
            "def trivial(x):",
            "    return x + 1",
            "t1 = None",
            body,
            "t1 = t1 or time.perf_counter()",
            "print(t1 - t0)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "items/s":
        return f"{x:,.0f}"
    return f"{x * 1000:.1f} ms" if x < 0.1 else f"{x:.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.md")
    args = ap.parse_args()
    r = args.repeat

    n3 = calibrate()
    print(
        f"# {platform.python_version()} on {os.cpu_count()} CPUs; spin({n3:,}) ~ 0.4 s; median of {r}",
        flush=True,
    )
    contenders = make_contenders()
    x1, x2, x3 = list(range(N1)), list(range(N2)), [n3] * N3
    e1, e2, e3 = [x + 1 for x in x1], x2, [spin(n3)] * N3
    rows: dict[str, dict[str, float | None]] = {}
    for name, run in contenders.items():
        print(f"- {name}", flush=True)
        res: dict[str, float | None] = {}
        slow = name.startswith(("serial", "flytekit"))
        timed(run, trivial, x1[:50], 2, e1[:50])  # warm up: pools started, imports done
        res["W1"] = N1 / statistics.median(timed(run, trivial, x1, 2, e1) for _ in range(r))
        res["W2"] = statistics.median(timed(run, sleepy, x2, C2, e2) for _ in range(1 if slow else r))
        res["W3"] = statistics.median(timed(run, spin, x3, C3, e3) for _ in range(1 if slow else r))
        timed(run, trivial, [1], 2, [2])
        res["W4 warm"] = statistics.median(timed(run, trivial, [1], 2, [2]) for _ in range(r))
        res["W4 cold"] = statistics.median(cold_start(name) for _ in range(r)) if name in COLD else None
        rows[name] = res
        if isinstance(run, Pooled):
            run.close()

    serial_w3 = rows["serial loop"]["W3"]
    units = {"W1": "items/s", "W2": "s", "W3": "s", "W4 cold": "s", "W4 warm": "s"}
    heads = {
        "W1": f"W1 {N1:,} trivial items",
        "W2": f"W2 {N2} x sleep({SLEEP2}) at c={C2} (ideal {N2 * SLEEP2 / C2:.1f} s)",
        "W3": f"W3 {N3} x 0.4 s CPU at c={C3} (ideal {serial_w3 / 2:.2f} s)",
        "W4 cold": "W4 first result, cold",
        "W4 warm": "W4 first result, warm",
    }
    base = rows["ProcessPoolExecutor"]
    lines = [
        "| | " + " | ".join(heads.values()) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for name, res in rows.items():
        cells = []
        for k, unit in units.items():
            v, b = res.get(k), base.get(k)
            if v is None:
                cells.append("-")
                continue
            ratio = (v / b) if unit == "items/s" else (b / v)  # >1: better than ProcessPoolExecutor
            cells.append(f"{fmt(v, unit)} ({ratio:.2f}x)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ideal2, ideal3 = N2 * SLEEP2 / C2, serial_w3 / 2
    m = rows["mapnb (local)"]
    summary = [
        "",
        "Ratios: how many times better than ProcessPoolExecutor in this run (>1 is better).",
        f"mapnb vs ideal: W2 {100 * (m['W2'] / ideal2 - 1):+.1f}%, W3 {100 * (m['W3'] / ideal3 - 1):+.1f}%.",
    ]
    text = "\n".join(lines + summary)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"\n(written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out})")


if __name__ == "__main__":
    main()
