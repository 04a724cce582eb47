"""mapnb's Dask backend against raw ``client.map`` + ``client.gather`` on the same cluster
(`make bench` runs it).

- D1: trivial items on a LocalCluster of 2 worker processes x 1 thread, items/s.
  Raw ``client.map`` makes one Dask task per item (~3 ms of scheduler time each); mapnb
  batches them while still reporting every item's status and log. Target: >= 10k items/s.
- D2: 40 items of ``sleep(0.5)`` at concurrency 20 on 2 workers x 10 threads, seconds
  (ideal 1.0). Target: within 10% of ideal.

Task functions live in ``__main__``, as in a notebook. Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N1_MAPNB, N1_RAW, N2, SLEEP2, C2 = 20_000, 2_000, 40, 0.5, 20


def trivial(x: int) -> int:
    return x + 1


def sleepy(x: int) -> int:
    time.sleep(SLEEP2)
    return x


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dask.md")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    import mapnb

    def raw_map(client: Client, fn, xs: list) -> list:
        return client.gather(client.map(fn, xs, pure=False))

    rows = []
    cluster_kw = dict(processes=True, dashboard_address=None, silence_logs=50)
    with LocalCluster(n_workers=2, threads_per_worker=1, **cluster_kw) as cluster, Client(cluster) as client:
        xs_m, xs_r = list(range(N1_MAPNB)), list(range(N1_RAW))
        mt = mapnb.map_task(trivial, backend="dask", progress=False)
        mt(x=xs_m[:200])  # warm: workers have imported mapnb
        raw_map(client, trivial, xs_r[:200])
        m = statistics.median(timed(lambda: mt(x=xs_m)) for _ in range(args.repeat))
        r = statistics.median(timed(lambda: raw_map(client, trivial, xs_r)) for _ in range(args.repeat))
        d1_m, d1_r = N1_MAPNB / m, N1_RAW / r
        rows.append(f"| D1 trivial items/s (2 x 1 thread) | {d1_m:,.0f} | {d1_r:,.0f} | {d1_m / d1_r:.1f}x |")

    with LocalCluster(n_workers=2, threads_per_worker=10, **cluster_kw) as cluster, Client(cluster) as client:
        xs = list(range(N2))
        mt = mapnb.map_task(sleepy, backend="dask", concurrency=C2, progress=False)
        mt(x=xs[:2])
        m = statistics.median(timed(lambda: mt(x=xs)) for _ in range(args.repeat))
        r = statistics.median(timed(lambda: raw_map(client, sleepy, xs)) for _ in range(args.repeat))
        ideal = N2 / C2 * SLEEP2
        rows.append(
            f"| D2 40 x sleep(0.5) at c=20, s (ideal {ideal:.1f}) | {m:.3f} ({100 * (m / ideal - 1):+.1f}%) "
            f"| {r:.3f} ({100 * (r / ideal - 1):+.1f}%) | {r / m:.2f}x |"
        )

    text = "\n".join(
        [
            f"## mapnb on Dask vs raw client.map (median of {args.repeat})",
            "",
            "| workload | mapnb (dask) | client.map + gather | mapnb / raw |",
            "|---|---|---|---|",
            *rows,
            "",
            f"D1: mapnb ran {N1_MAPNB:,} items, raw client.map {N1_RAW:,} (one Dask task each).",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
