"""What the live grid costs the kernel and the front end (`make bench` runs it).

Workload W5: 10,000 trivial items that each print 100 lines (a million lines in all), on
the local pool. The widget is the real anywidget model; its comm records every message
the kernel would send (serialised as JSON, as ipykernel does) instead of sending it.

- overhead: wall time and kernel-process CPU of the run with the grid against the same
  run with ``progress=False`` (target: under 10%); both are submitted and waited for (no
  DataFrame), and each run is freed after its measurement, not during the next
- front-end traffic: update messages (opening the widget is counted in bytes only), per second (target: at most ~10), total and
  largest message size
- peer: ``tqdm.notebook`` (an ipywidgets progress bar) over a ``multiprocessing.Pool``
  doing the same work, measured with the same recording comm

Workload W5', the grid at scale: 100,000 trivial items (no prints) with the grid against
``progress=False``: wall time, kernel-process CPU (target: at most 10% over), and update
messages per second (target: at most 10).

Every number is the median of ``--repeat`` runs. Results: ``benchmarks/results/widget.json``
(tables ``widget`` and ``grid100k``).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402

N, LINES, N_BIG = 10_000, 100, 100_000


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


def trivial(x: int) -> int:
    return x + 1


def grid_vs_plain(mt: Any, xs: list, rec: Recorder, repeat: int) -> dict[str, float]:
    """Medians of the run with ``progress=False`` and with the live grid, and the grid's traffic."""
    from mapnb.jupyter.widget import LiveGrid

    traffic: list[tuple[int, int, int, float]] = []
    kept: list[Any] = []  # each run outlives its measurement: freeing it is neither's cost

    # Both the same work but for the grid: submit and wait, no DataFrame (``mt(x=xs)``
    # would build one in the plain run only, which hid part of the grid's cost).
    def plain() -> None:
        run = mt.submit(x=xs)
        run.wait()
        kept.append(run)

    def with_grid() -> None:
        rec.reset()
        t0 = time.perf_counter()
        run = mt.submit(x=xs)
        grid = LiveGrid(run, kind="anywidget")
        grid.wait()
        traffic.append((rec.messages, rec.bytes, rec.largest, time.perf_counter() - t0))
        kept.append((run, grid))

    def settle() -> None:
        for k in kept:
            if isinstance(k, tuple):
                k[1].close()
        kept.clear()
        gc.collect()

    plains, grids = [], []
    for _ in range(repeat):  # interleaved, so that drift on a noisy machine hits both
        plains.append(measure(plain))
        settle()
        grids.append(measure(with_grid))
        settle()
    med = statistics.median
    return {
        "plain_wall": med(w for w, _ in plains),
        "plain_cpu": med(c for _, c in plains),
        "grid_wall": med(w for w, _ in grids),
        "grid_cpu": med(c for _, c in grids),
        "messages": med(m for m, _, _, _ in traffic),
        "bytes": med(b for _, b, _, _ in traffic),
        "largest": max(lg for _, _, lg, _ in traffic),
        "rate": med(m / d for m, _, _, d in traffic),
    }


def tqdm_peer(pool_size: int, xs: list, rec: Recorder, repeat: int) -> dict[str, float]:
    """``tqdm.notebook`` over a ``multiprocessing.Pool`` doing W5's work."""
    from tqdm.notebook import tqdm

    traffic: list[tuple[int, int, float]] = []

    def with_tqdm() -> None:
        rec.reset()
        t0 = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(pool_size, initializer=quiet) as pool:
            for _ in tqdm(pool.imap_unordered(chatty, xs, chunksize=64), total=len(xs)):
                pass
        traffic.append((rec.messages, rec.bytes, time.perf_counter() - t0))

    walls = [measure(with_tqdm)[0] for _ in range(repeat)]
    med = statistics.median
    return {
        "wall": med(walls),
        "messages": med(m for m, _, _ in traffic),
        "bytes": med(b for _, b, _ in traffic),
        "rate": med(m / d for m, _, d in traffic),
    }


def w5_table(g: dict[str, float], t: dict[str, float], repeat: int) -> str:
    return f"""W5: {N:,} items x {LINES} printed lines, median of {repeat}:

| | wall s | kernel CPU s | messages | messages/s | bytes sent | largest message |
|---|---|---|---|---|---|---|
| mapnb, progress=False | {g["plain_wall"]:.2f} | {g["plain_cpu"]:.2f} | 0 | 0 | 0 | - |
| mapnb + live grid | {g["grid_wall"]:.2f} | {g["grid_cpu"]:.2f} | {g["messages"]:.0f} | {g["rate"]:.1f} \
| {g["bytes"] / 1e3:.0f} kB | {g["largest"] / 1e3:.1f} kB |
| tqdm.notebook over mp.Pool (peer) | {t["wall"]:.2f} | - | {t["messages"]:.0f} | {t["rate"]:.1f} \
| {t["bytes"] / 1e3:.0f} kB | - |

Grid overhead: wall {100 * (g["grid_wall"] / g["plain_wall"] - 1):+.1f}%, kernel CPU \
{100 * (g["grid_cpu"] / g["plain_cpu"] - 1):+.1f}% (target < 10% wall); front-end messages: \
{g["rate"]:.1f}/s (target <= ~10/s); tqdm.notebook sends {t["messages"] / max(g["messages"], 1):.1f}x \
as many.
"""


def grid100k_table(g: dict[str, float], n: int, repeat: int) -> str:
    cpu = 100 * (g["grid_cpu"] / g["plain_cpu"] - 1)
    return f"""W5': the grid at {n:,} trivial items (no prints), median of {repeat}:

| | wall s | kernel CPU s | messages | messages/s | bytes sent | largest message |
|---|---|---|---|---|---|---|
| mapnb, progress=False | {g["plain_wall"]:.2f} | {g["plain_cpu"]:.2f} | 0 | 0 | 0 | - |
| mapnb + live grid | {g["grid_wall"]:.2f} | {g["grid_cpu"]:.2f} | {g["messages"]:.0f} | {g["rate"]:.1f} \
| {g["bytes"] / 1e3:.0f} kB | {g["largest"] / 1e3:.1f} kB |

Grid overhead: kernel CPU {cpu:+.1f}% (target <= 10%), wall \
{100 * (g["grid_wall"] / g["plain_wall"] - 1):+.1f}%; front-end messages {g["rate"]:.1f}/s (target <= 10/s).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=_common.repeat(5))
    ap.add_argument("--big", type=int, default=N_BIG, help="items of W5' (the grid at scale)")
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    args = ap.parse_args()

    import mapnb

    rec = Recorder()
    rec.install()
    xs = list(range(N))
    mt = mapnb.map_task(chatty, progress=False)
    mt(x=xs[:500])  # a warm pool, as in a notebook session
    print(f"- W5 x{args.repeat}", flush=True)
    w5 = grid_vs_plain(mt, xs, rec, args.repeat)
    print(f"- W5 tqdm peer x{args.repeat}", flush=True)
    peer = tqdm_peer(mt.backend.default_concurrency(), xs, rec, args.repeat)
    # W5' runs take ~0.15 s each, and the grid's cost is a few ms of one: three times the
    # repeats, so that one run disturbed by the machine does not move the median.
    big_repeat = 3 * args.repeat
    print(f"- W5' {args.big:,} items x{big_repeat}", flush=True)
    mt_big = mapnb.map_task(trivial, progress=False)
    mt_big(x=xs[:500])
    big = grid_vs_plain(mt_big, list(range(args.big)), rec, big_repeat)
    tables = {
        "widget": w5_table(w5, peer, args.repeat),
        "grid100k": grid100k_table(big, args.big, big_repeat),
    }
    print("\n".join(tables.values()))
    data = {"repeat": args.repeat, "big_repeat": big_repeat, "w5": w5, "tqdm": peer, "w5_big": big}
    _common.write("widget", tables, data, args.out)


if __name__ == "__main__":
    main()
