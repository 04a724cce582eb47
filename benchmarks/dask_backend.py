"""mapnb's Dask backend against raw ``client.map`` + ``client.gather`` on the same cluster
(`make bench` runs it).

- D1: trivial items on a LocalCluster of 2 worker processes x 1 thread, items/s.
  Raw ``client.map`` makes one Dask task per item (~3 ms of scheduler time each); mapnb
  batches them while still reporting every item's status and log. Target: >= 10k items/s.
- D2: 40 items of ``sleep(0.5)`` at concurrency 20 on 2 workers x 10 threads, seconds
  (ideal 1.0). Target: within 10% of ideal.

Task functions live in ``__main__``, as in a notebook. The benchmark runs ``--runs`` (3)
times in a row, each run a fresh interpreter with fresh clusters (as running the script
again would), and reports every run, not the best: D1's ratio to raw ``client.map`` and
D2's distance from the ideal, each within its own run. In each run every figure is the
median of ``--repeat`` timed maps (1: what a user sees) after a warm-up map. Results:
``benchmarks/results/dask.json`` (table ``dask``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402

N1_MAPNB, N1_RAW, N2, SLEEP2, C2 = 20_000, 2_000, 40, 0.5, 20
IDEAL2 = N2 / C2 * SLEEP2
D1_TARGET, D2_TARGET = 20.0, 10.0  # x raw client.map; % over ideal


def trivial(x: int) -> int:
    return x + 1


def sleepy(x: int) -> int:
    time.sleep(SLEEP2)
    return x


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_run(repeat: int) -> dict[str, float]:
    """D1 and D2 on fresh clusters in this process: seconds of mapnb and of raw client.map."""
    from distributed import Client, LocalCluster

    import mapnb

    def raw_map(client: Client, fn, xs: list) -> list:
        return client.gather(client.map(fn, xs, pure=False))

    out: dict[str, float] = {}
    cluster_kw = dict(processes=True, dashboard_address=None, silence_logs=50)
    with LocalCluster(n_workers=2, threads_per_worker=1, **cluster_kw) as cluster, Client(cluster) as client:
        xs_m, xs_r = list(range(N1_MAPNB)), list(range(N1_RAW))
        mt = mapnb.map_task(trivial, backend="dask", progress=False)
        mt(x=xs_m[:200])  # warm: workers have imported mapnb
        raw_map(client, trivial, xs_r[:200])
        out["d1_mapnb"] = N1_MAPNB / statistics.median(timed(lambda: mt(x=xs_m)) for _ in range(repeat))
        out["d1_raw"] = N1_RAW / statistics.median(
            timed(lambda: raw_map(client, trivial, xs_r)) for _ in range(repeat)
        )

    with LocalCluster(n_workers=2, threads_per_worker=10, **cluster_kw) as cluster, Client(cluster) as client:
        xs = list(range(N2))
        mt = mapnb.map_task(sleepy, backend="dask", concurrency=C2, progress=False)
        mt(x=xs[:2])
        out["d2_mapnb"] = statistics.median(timed(lambda: mt(x=xs)) for _ in range(repeat))
        out["d2_raw"] = statistics.median(timed(lambda: raw_map(client, sleepy, xs)) for _ in range(repeat))
    return out


def table(runs: list[dict[str, float]], repeat: int) -> str:
    """One row per run, every run shown."""
    lines = [
        f"{len(runs)} consecutive runs, each a fresh interpreter and fresh LocalClusters; in each, "
        + ("one timed map after a warm-up" if repeat == 1 else f"the median of {repeat} timed maps")
        + f". D1: mapnb runs {N1_MAPNB:,} trivial items on 2 workers x 1 thread, raw `client.map` "
        f"{N1_RAW:,} (one Dask task each). D2: {N2} x sleep({SLEEP2}) at c={C2} on 2 workers x 10 threads "
        f"(ideal {IDEAL2:.1f} s).",
        "",
        f"| run | D1 mapnb (dask), items/s | D1 client.map + gather, items/s | D1 mapnb / raw "
        f"(target >= {D1_TARGET:.0f}x) | D2 mapnb (dask), s (target within {D2_TARGET:.0f}% of ideal) "
        "| D2 client.map + gather, s |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(runs, 1):
        lines.append(
            f"| {k} | {r['d1_mapnb']:,.0f} | {r['d1_raw']:,.0f} | {r['d1_mapnb'] / r['d1_raw']:.1f}x "
            f"| {r['d2_mapnb']:.3f} ({100 * (r['d2_mapnb'] / IDEAL2 - 1):+.1f}%) "
            f"| {r['d2_raw']:.3f} ({100 * (r['d2_raw'] / IDEAL2 - 1):+.1f}%) |"
        )
    d1 = sum(r["d1_mapnb"] / r["d1_raw"] >= D1_TARGET for r in runs)
    d2 = sum(100 * (r["d2_mapnb"] / IDEAL2 - 1) <= D2_TARGET for r in runs)
    lines += ["", f"Targets met: D1 in {d1} of {len(runs)} runs, D2 in {d2} of {len(runs)} runs."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="consecutive runs, all reported")
    ap.add_argument("--repeat", type=int, default=_common.repeat(1), help="timed maps per figure in a run")
    ap.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    args = ap.parse_args()
    if args.one_run:
        print(json.dumps(one_run(args.repeat)))
        return
    runs = []
    for k in range(args.runs):
        print(f"- run {k + 1} of {args.runs}", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one-run", "--repeat", str(args.repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {runs[-1]}", flush=True)
    text = table(runs, args.repeat)
    print(text)
    _common.write("dask", {"dask": text}, {"repeat": args.repeat, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
