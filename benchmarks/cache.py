"""Re-running a cached map (`make bench` runs it).

W6: 2,000 items of ``sleep(0.005)`` at concurrency 8 with ``cache=True``: the first run
computes and stores every output; the second finds them all in the cache and runs no
subtask. Target: the second run takes under 5% of the first's time. Medians of
``--repeat`` (each with a fresh cache directory). Results: ``benchmarks/results/cache.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402

N, SLEEP, C = 2000, 0.005, 8


def work(x: int) -> dict:
    time.sleep(SLEEP)
    return {"x": x, "square": x * x}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=_common.repeat(3))
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    args = ap.parse_args()

    import mapnb

    firsts, seconds = [], []
    for _ in range(args.repeat):
        os.environ["MAPNB_CACHE_DIR"] = tempfile.mkdtemp(prefix="mapnb-bench-cache-")
        mt = mapnb.map_task(work, cache=True, concurrency=C, progress=False)
        t0 = time.perf_counter()
        mt(x=range(N))
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        df = mt(x=range(N))
        seconds.append(time.perf_counter() - t0)
        assert df["cached"].all()
    first, second = statistics.median(firsts), statistics.median(seconds)
    text = (
        f"W6: re-running a cached map of {N:,} items (median of {args.repeat}):\n\n"
        "| | seconds |\n|---|---|\n"
        f"| first run (computes, stores) | {first:.3f} |\n"
        f"| second run (all cached) | {second:.3f} ({100 * second / first:.1f}% of the first; target < 5%) |\n"
    )
    print(text)
    _common.write(
        "cache", {"cache": text}, {"repeat": args.repeat, "first": first, "second": second}, args.out
    )


if __name__ == "__main__":
    main()
