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

W1' (mapnb only), steady state: 20,000 / 200,000 / 1,000,000 trivial items end to end, from
the call to the DataFrame built (``mapnb.map_task(trivial, concurrency=2,
progress=False)(x=xs)``), items/s, next to W1's 2,000. Each run is a fresh interpreter
(``--steady-child N``) that warms its pool with 2,000 items, builds the inputs, then
measures the caller's memory from the kernel's own accounts (/proc/self/status): ``rss0``,
the resident set with the pool warm and the inputs built; the peak (VmHWM, reset to the
current RSS just before the call by writing ``5`` to /proc/self/clear_refs); and the
resident set after the call with the DataFrame still held (after ``gc.collect()``). The
outputs' own size is the DataFrame's ``memory_usage(deep=True)`` (it holds the outputs and
their status columns, which is what the caller asked for); the inputs were already in
``rss0``. So, per item: retained growth = (RSS after - rss0 - DataFrame) / N, peak growth
= (peak - rss0 - DataFrame) / N: what mapnb itself costs the caller beyond the inputs and
outputs. RSS also counts memory the allocator keeps after freeing it, which a caller pays
as well (tracemalloc would miss that, and would slow the run it measures). Medians of
``--steady-repeat`` runs; ``--quick`` skips 1,000,000.

The results go to ``benchmarks/results/run.json`` (tables ``run`` and ``steady``), which
``benchmarks/readme.py`` copies into the README.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402

N1, N2, SLEEP2, C2, N3, C3 = 2000, 40, 0.5, 20, 8, 2
STEADY = (20_000, 200_000, 1_000_000)


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


def measure_peers(r: int) -> tuple[dict[str, dict[str, float | None]], int]:
    """W1..W4 for every contender (median of ``r``), and the ``spin`` count used for W3."""
    n3 = calibrate()
    print(f"# W1..W4: spin({n3:,}) ~ 0.4 s; median of {r}", flush=True)
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
    return rows, n3


def w1_only(r: int) -> None:
    """W1 for mapnb, joblib and ProcessPoolExecutor, one repeat of each in turn (so that
    a busy neighbour slows them alike); prints the medians and mapnb's ratios."""
    contenders = make_contenders()
    names = ["mapnb (local)", "joblib (loky)", "ProcessPoolExecutor"]
    x1 = list(range(N1))
    e1 = [x + 1 for x in x1]
    for name in names:
        timed(contenders[name], trivial, x1[:50], 2, e1[:50])
        timed(contenders[name], trivial, x1, 2, e1)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(r):
        for name in names:
            times[name].append(timed(contenders[name], trivial, x1, 2, e1))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name in names:
        print(f"{name}: {N1 / med[name]:,.0f} items/s ({med[name] * 1000:.1f} ms, median of {r})")
    m = med["mapnb (local)"]
    print(f"mapnb: {med['joblib (loky)'] / m:.2f}x joblib (loky), {med['ProcessPoolExecutor'] / m:.2f}x ProcessPoolExecutor")
    for run in contenders.values():
        if isinstance(run, Pooled):
            run.close()


def peers_table(rows: dict[str, dict[str, float | None]], r: int) -> str:
    """The W1..W4 table, ratios against ProcessPoolExecutor, and mapnb against the ideal."""
    serial_w3 = rows["serial loop"]["W3"]
    assert serial_w3 is not None
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
        f"Median of {r}; in brackets, how many times better than `ProcessPoolExecutor` in the same run"
        " (> 1 is better):",
        "",
        "| | " + " | ".join(heads.values()) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for name, res in rows.items():
        cells = []
        for k, unit in units.items():
            v, b = res.get(k), base.get(k)
            if v is None or b is None:
                cells.append("-")
                continue
            ratio = (v / b) if unit == "items/s" else (b / v)  # >1: better than ProcessPoolExecutor
            cells.append(f"{fmt(v, unit)} ({ratio:.2f}x)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    m, ideal2, ideal3 = rows["mapnb (local)"], N2 * SLEEP2 / C2, serial_w3 / 2
    assert m["W1"] and m["W2"] and m["W3"]
    others = {k: rows[k]["W1"] for k in ("joblib (loky)", "ProcessPoolExecutor") if rows[k]["W1"]}
    vs = ", ".join(f"{m['W1'] / v:.2f}x {k}" for k, v in others.items())
    ppe3 = rows["ProcessPoolExecutor"]["W3"] or float("nan")
    lines += [
        "",
        f"mapnb against the ideal in this run: W2 {100 * (m['W2'] / ideal2 - 1):+.1f}%, "
        f"W3 {100 * (m['W3'] / ideal3 - 1):+.1f}% (ProcessPoolExecutor {100 * (ppe3 / ideal3 - 1):+.1f}%). "
        f"W1: mapnb's items/s are {vs}.",
    ]
    return "\n".join(lines)


# -- W1': steady state, each run in a fresh interpreter -----------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def steady_child(n: int) -> None:
    """One W1' run of ``n`` items in this (fresh) process; prints one line of JSON."""
    import gc
    import json

    import mapnb

    mt = mapnb.map_task(trivial, concurrency=2, progress=False)
    mt(x=list(range(N1)))  # a warm pool, as in a notebook session
    xs = list(range(n))
    gc.collect()
    rss0 = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from rss0
    t0 = time.perf_counter()
    df = mt(x=xs)
    dt = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    gc.collect()
    rss1 = _status_kb("VmRSS")
    assert len(df) == n and int(df["output"].iloc[-1]) == n, df.tail()
    frame = int(df.memory_usage(deep=True).sum())
    print(json.dumps({"n": n, "seconds": dt, "rss0": rss0, "peak": peak, "rss1": rss1, "frame": frame}))


def measure_steady(sizes: list[int], r: int) -> dict[int, dict[str, float]]:
    """Median items/s and memory growth per item of ``r`` fresh-process runs per size."""
    import json

    out: dict[int, dict[str, float]] = {}
    for n in sizes:
        print(f"- W1' {n:,} items x{r}", flush=True)
        runs = []
        for _ in range(r):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--steady-child", str(n)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out[n] = {
            "items_per_s": statistics.median(n / x["seconds"] for x in runs),
            "seconds": statistics.median(x["seconds"] for x in runs),
            "retained_bytes_per_item": statistics.median(
                (x["rss1"] - x["rss0"] - x["frame"]) / n for x in runs
            ),
            "peak_bytes_per_item": statistics.median((x["peak"] - x["rss0"] - x["frame"]) / n for x in runs),
            "frame_bytes_per_item": statistics.median(x["frame"] / n for x in runs),
            "peak_rss_mb": statistics.median(x["peak"] / 2**20 for x in runs),
        }
    return out


def steady_table(w1: float, steady: dict[int, dict[str, float]], r: int) -> str:
    """W1's 2,000 items next to W1' at 20k / 200k / 1M."""
    sizes = sorted(steady)
    heads = [f"W1 {N1:,}"] + [f"W1' {n:,}" for n in sizes]
    rows = [
        ("items/s", f"{w1:,.0f}", [f"{steady[n]['items_per_s']:,.0f}" for n in sizes]),
        ("µs per item", f"{1e6 / w1:.1f}", [f"{1e6 / steady[n]['items_per_s']:.1f}" for n in sizes]),
        ("end to end, s", f"{N1 / w1:.3f}", [f"{steady[n]['seconds']:.3f}" for n in sizes]),
        (
            "driver memory growth per item, retained",
            "-",
            [f"{steady[n]['retained_bytes_per_item']:,.0f} B" for n in sizes],
        ),
        (
            "driver memory growth per item, peak",
            "-",
            [f"{steady[n]['peak_bytes_per_item']:,.0f} B" for n in sizes],
        ),
        (
            "the DataFrame's own size per item",
            "-",
            [f"{steady[n]['frame_bytes_per_item']:,.0f} B" for n in sizes],
        ),
        ("driver peak RSS", "-", [f"{steady[n]['peak_rss_mb']:,.0f} MB" for n in sizes]),
    ]
    lines = [
        f"mapnb, trivial items at concurrency 2, status and log capture on. W1' (median of {r}, each a fresh"
        " interpreter with a warm pool) runs from the call to the DataFrame built; W1 is the table above's"
        " (to `run.outputs`). Memory growth is the caller's resident set beyond the inputs (built before)"
        " and the DataFrame returned (subtracted):",
        "",
        "| | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    lines += [f"| {name} | {first} | " + " | ".join(cells) + " |" for name, first, cells in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=_common.repeat(5), help="W1..W4 repeats (median)")
    ap.add_argument("--steady-repeat", type=int, default=_common.repeat(3), help="W1' runs per size (median)")
    ap.add_argument("--quick", action="store_true", help="W1' without the 1,000,000-item run")
    ap.add_argument(
        "--w1-only",
        action="store_true",
        help="a quick check: W1 alone for mapnb, joblib and ProcessPoolExecutor, interleaved; writes no results",
    )
    ap.add_argument("--steady-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    args = ap.parse_args()
    if args.steady_child:
        steady_child(args.steady_child)
        return
    if args.w1_only:
        w1_only(args.repeat)
        return
    m = _common.MACHINE_AT_START
    print(
        f"# Python {m['python']} on {m['cpus']} CPUs ({m['cpu_model']}), load {m['load_average']}", flush=True
    )
    rows, n3 = measure_peers(args.repeat)
    sizes = [n for n in STEADY if not (args.quick and n >= 1_000_000)]
    steady = measure_steady(sizes, args.steady_repeat)
    w1 = rows["mapnb (local)"]["W1"]
    assert w1 is not None
    tables = {"run": peers_table(rows, args.repeat), "steady": steady_table(w1, steady, args.steady_repeat)}
    data = {
        "repeat": args.repeat,
        "steady_repeat": args.steady_repeat,
        "spin_count": n3,
        "peers": rows,
        "steady": {str(n): v for n, v in steady.items()},
    }
    path = _common.write("run", tables, data, args.out)
    print("\n" + "\n\n".join(tables.values()))
    print(f"\n(written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})")


if __name__ == "__main__":
    main()
