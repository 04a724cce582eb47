"""What the live grid costs the kernel and the front end (`make bench` runs it).

Workload W5: 10,000 trivial items that each print 100 lines (a million lines in all), on
the local pool. The widget is the real anywidget model; its comm records every message
the kernel would send (serialised as JSON, as ipykernel does) instead of sending it.

- overhead: wall time and kernel-process CPU of the run with the grid against the same
  run with ``progress=False`` (target: under 10%)
- front-end traffic: update messages (opening the widget is counted in bytes only), per second (target: at most ~10), total and
  largest message size
- peer: ``tqdm.notebook`` (an ipywidgets progress bar) over a ``multiprocessing.Pool``
  doing the same work, measured with the same recording comm

Every number is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N, LINES = 10_000, 100


def chatty(x: int) -> int:
    for k in range(LINES):
        print(f"item {x} line {k}")
    return x


def quiet() -> None:
    """In a notebook, pool workers' prints go to the server's terminal; here, nowhere."""
    import os

    sys.stdout = open(os.devnull, "w")  # noqa: SIM115


class Recorder:
    """Stands in for the kernel's comms: counts what would go to the front end."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.largest = 0

    def install(self) -> None:
        import comm

        rec = self

        class RecordingComm(comm.DummyComm):
            def publish_msg(
                self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
            ) -> None:
                size = len(json.dumps(data, default=str))
                if msg_type != "comm_msg":  # opening the widget: counted in bytes only
                    rec.bytes += size
                    return
                rec.messages += 1
                rec.bytes += size
                rec.largest = max(rec.largest, size)

        comm.create_comm = lambda *a, **k: RecordingComm(*a, **k)

    def reset(self) -> None:
        self.messages = self.bytes = self.largest = 0


def measure(run: Any) -> tuple[float, float]:
    """Wall and CPU seconds of ``run()`` in this (the kernel's) process."""
    w0, c0 = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "widget.md")
    args = ap.parse_args()

    import mapnb
    from mapnb.jupyter.widget import LiveGrid

    rec = Recorder()
    rec.install()
    xs = list(range(N))
    mt = mapnb.map_task(chatty, progress=False)
    mt(x=xs[:500])  # a warm pool, as in a notebook session

    def plain() -> None:
        mt(x=xs)

    traffic: list[tuple[int, int, int, float]] = []

    def with_grid() -> None:
        rec.reset()
        t0 = time.perf_counter()
        run = mt.submit(x=xs)
        grid = LiveGrid(run, kind="anywidget")
        grid.wait()
        traffic.append((rec.messages, rec.bytes, rec.largest, time.perf_counter() - t0))
        grid.close()

    def with_tqdm() -> None:
        from tqdm.notebook import tqdm

        rec.reset()
        t0 = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(pool_size, initializer=quiet) as pool:
            for _ in tqdm(pool.imap_unordered(chatty, xs, chunksize=64), total=N):
                pass
        traffic.append((rec.messages, rec.bytes, rec.largest, time.perf_counter() - t0))

    pool_size = mt.backend.default_concurrency()
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "grid": []}
    for _ in range(args.repeat):  # interleaved, so that drift on a noisy machine hits both
        results["plain"].append(measure(plain))
        results["grid"].append(measure(with_grid))
    grid_traffic = traffic[:]
    traffic.clear()
    tqdm_time = [measure(with_tqdm) for _ in range(args.repeat)]
    tqdm_traffic = traffic[:]

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    pw, pc = med([w for w, _ in results["plain"]]), med([c for _, c in results["plain"]])
    gw, gc = med([w for w, _ in results["grid"]]), med([c for _, c in results["grid"]])
    gm = med([m for m, _, _, _ in grid_traffic])
    gb = med([b for _, b, _, _ in grid_traffic])
    gl = max(lg for _, _, lg, _ in grid_traffic)
    grate = med([m / d for m, _, _, d in grid_traffic])
    tm = med([m for m, _, _, _ in tqdm_traffic])
    tb = med([b for _, b, _, _ in tqdm_traffic])
    trate = med([m / d for m, _, _, d in tqdm_traffic])
    tw = med([w for w, _ in tqdm_time])
    text = f"""## W5: live grid, {N:,} items x {LINES} printed lines (median of {args.repeat})

| | wall s | kernel CPU s | messages | messages/s | bytes sent | largest message |
|---|---|---|---|---|---|---|
| mapnb, progress=False | {pw:.2f} | {pc:.2f} | 0 | 0 | 0 | - |
| mapnb + live grid | {gw:.2f} | {gc:.2f} | {gm:.0f} | {grate:.1f} | {gb / 1e3:.0f} kB | {gl / 1e3:.1f} kB |
| tqdm.notebook over mp.Pool (peer) | {tw:.2f} | - | {tm:.0f} | {trate:.1f} | {tb / 1e3:.0f} kB | - |

- grid overhead: wall {100 * (gw / pw - 1):+.1f}%, kernel CPU {100 * (gc / pc - 1):+.1f}% (target < 10% wall)
- front-end messages: {grate:.1f}/s (target <= ~10/s); tqdm.notebook sends {tm / max(gm, 1):.1f}x as many,
  and shows one bar: no per-item state, and the million lines are not in the notebook at all
"""
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
