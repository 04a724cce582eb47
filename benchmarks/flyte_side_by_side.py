"""Flyte's own local map against mapnb running the same task objects (`make bench`).

(Not named ``flyte.py``: run as a script, that name would shadow the ``flyte`` package.)

Workloads (the tasks live in ``__main__``, as in a notebook):

- F1: the seed example, 3 items of a task that sleeps 1 s, at concurrency 3 (ideal 1.0 s)
- F2: 40 items of ``sleep(0.5)`` at concurrency 20 (ideal 1.0 s)
- F3: per-item overhead: 2,000 trivial items at concurrency 2, items/s, of a
  ``@flytekit.task`` (and a Flyte 2 ``@env.task``) in mapnb against a plain function in
  mapnb (target: a flytekit task costs under 2x a plain function)

Contenders for F1 and F2:

- flytekit 1.x: ``flytekit.map_task(t, concurrency=c)`` called locally, as in a
  ``@workflow`` run on a laptop; mapnb runs that *same* map object: ``mapnb.map_task(m)``.
- Flyte 2: ``flyte.run`` (after ``flyte.init()``, local mode) of a driver task that
  iterates ``flyte.map(t, range(n), concurrency=c)``; mapnb runs the same ``t`` through
  its drop-in ``mapnb.flyte.map(t, range(n), concurrency=c)``.

Numbers are medians of ``--repeat`` runs (Flyte's own serial local runs of F2 run once:
20 s by construction), each after a warm-up run (worker processes started, flytekit and
flyte imported in them). Ratios are measured in the same run. Results:
``benchmarks/results/flyte.json`` (README markers ``bench:flyte`` for F1/F2 and
``bench:flyte-f3`` for F3). ``--only F3`` runs one workload (about a minute): its results
go to ``results/flyte-f3.json`` and fill only its own README table. ``--f3-items 20000``
splits F3's cost per item from its cost per run (results: ``flyte-f3-20000``, no table).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402
import flyte  # noqa: E402
import flytekit  # noqa: E402

import mapnb  # noqa: E402

N1, SLEEP1, C1 = 3, 1.0, 3
N2, SLEEP2, C2 = 40, 0.5, 20
N3, C3 = 2000, 2

# -- the tasks: flytekit 1.x, Flyte 2, and a plain function ---------------------------------


@flytekit.task
def fk_seed(x: int) -> int:
    time.sleep(SLEEP1)
    return x


@flytekit.task
def fk_sleepy(x: int) -> int:
    time.sleep(SLEEP2)
    return x


@flytekit.task
def fk_trivial(x: int) -> int:
    return x + 1


env = flyte.TaskEnvironment(name="mapnb_bench")


@env.task
def f2_seed(x: int) -> int:
    time.sleep(SLEEP1)
    return x


@env.task
def f2_sleepy(x: int) -> int:
    time.sleep(SLEEP2)
    return x


@env.task
def f2_trivial(x: int) -> int:
    return x + 1


F2_TASKS = {"seed": f2_seed, "sleepy": f2_sleepy}


@env.task
def f2_driver(which: str, n: int, c: int) -> list[int]:
    """Flyte 2's own local map of one of the tasks above."""
    return list(flyte.map(F2_TASKS[which], range(n), concurrency=c))


def trivial(x: int) -> int:
    return x + 1


# -- the contenders: run(n, c) -> outputs ---------------------------------------------------


def mapnb_outputs(mt: mapnb.MapTask, xs: list[int]) -> list:
    run = mt.submit(x=xs)
    run.wait()
    assert run.state == "succeeded", run
    return run.outputs


def flytekit_local(task: Callable) -> Callable[[int, int], list]:
    def run(n: int, c: int) -> list:
        return list(flytekit.map_task(task, concurrency=c)(x=list(range(n))))

    return run


def mapnb_flytekit(task: Callable) -> Callable[[int, int], list]:
    def run(n: int, c: int) -> list:  # the same kind of object flytekit runs above
        return mapnb_outputs(
            mapnb.map_task(flytekit.map_task(task, concurrency=c), progress=False), list(range(n))
        )

    return run


def flyte2_local(which: str) -> Callable[[int, int], list]:
    def run(n: int, c: int) -> list:
        return list(flyte.run(f2_driver, which=which, n=n, c=c).outputs()[0])

    return run


def mapnb_flyte2(task: Callable) -> Callable[[int, int], list]:
    def run(n: int, c: int) -> list:
        return list(mapnb.flyte.map(task, range(n), concurrency=c, progress=False))

    return run


def timed(run: Callable[[int, int], list], n: int, c: int, expect: list) -> float:
    t0 = time.perf_counter()
    out = run(n, c)
    dt = time.perf_counter() - t0
    assert list(out) == expect, f"wrong results: {out[:5]}"
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=_common.repeat(3))
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    ap.add_argument(
        "--only",
        choices=["F1", "F2", "F3"],
        action="append",
        help="run only these workloads (repeatable; default: all)",
    )
    ap.add_argument(
        "--f3-items",
        type=int,
        default=N3,
        help=f"F3's items per run (default {N3:,}; the README's table is of the default)",
    )
    args = ap.parse_args()
    r = args.repeat
    only = set(args.only or ["F1", "F2", "F3"])

    # Flyte's local runs log every map and warn that they run sequentially: keep the output
    # to the table.
    logging.getLogger("flytekit").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*sequentially.*")
    flyte.init()
    logging.getLogger("flyte").setLevel(logging.ERROR)  # after init(), which sets it up
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# Python {platform.python_version()} on {os.cpu_count()} CPUs, flytekit {flytekit.__version__},"
        f" flyte {flyte.__version__}; load average {load:.1f}; median of {r}",
        flush=True,
    )

    workloads = {
        w: spec
        for w, spec in {
            "F1": (N1, C1, "seed", fk_seed, f2_seed),
            "F2": (N2, C2, "sleepy", fk_sleepy, f2_sleepy),
        }.items()
        if w in only
    }
    contenders: dict[str, Callable[[str, Callable, Callable], Callable[[int, int], list]]] = {
        "flytekit map_task (local)": lambda which, fk, f2: flytekit_local(fk),
        "mapnb, the same flytekit map_task": lambda which, fk, f2: mapnb_flytekit(fk),
        "Flyte 2 flyte.map (local, flyte.run)": lambda which, fk, f2: flyte2_local(which),
        "mapnb.flyte.map, the same Flyte 2 task": lambda which, fk, f2: mapnb_flyte2(f2),
    }
    rows: dict[str, dict[str, float]] = {name: {} for name in contenders} if workloads else {}
    for w, (n, c, which, fk, f2) in workloads.items():
        expect = list(range(n))
        for name, make in contenders.items():
            run = make(which, fk, f2)
            serial = not name.startswith("mapnb")
            repeat = 1 if serial and w == "F2" else r
            print(f"- {w} {name} x{repeat}", flush=True)
            if not serial:
                timed(run, n, c, expect)  # warm up: all c workers started, flytekit imported
            rows[name][w] = statistics.median(timed(run, n, c, expect) for _ in range(repeat))

    per_s = f3(r, args.f3_items) if "F3" in only else {}
    head = (
        f"flytekit {flytekit.__version__}, Flyte 2 (`flyte`) {flyte.__version__}; medians of {r} after a"
        " warm-up run"
    )
    tables = {}
    if workloads:
        tables["flyte"] = head + " (Flyte's own runs of F2: once):\n\n" + f12_table(rows)
    if per_s:
        when = "" if not args.only else f"; run alone, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load {load:.1f}"
        key = "flyte-f3" if args.f3_items == N3 else f"flyte-f3-{args.f3_items}"  # (no README marker)
        tables[key] = head + when + ":\n\n" + f3_table(per_s, args.f3_items)
    print("\n" + "\n\n".join(tables.values()))
    data = {
        "repeat": r,
        "flytekit": flytekit.__version__,
        "flyte": flyte.__version__,
        "rows": rows,
        "f3": per_s,
    }
    name = "flyte" if only == {"F1", "F2", "F3"} else "flyte-" + "-".join(sorted(only)).lower()
    if args.f3_items != N3 and "F3" in only:  # not the README's table: results of their own
        name += f"-{args.f3_items}"
    path = _common.write(name, tables, data, args.out)
    print(f"\n(written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})")


def f3(r: int, n: int = N3) -> dict[str, float]:
    """F3: items/s of ``n`` trivial items, a plain function and Flyte's tasks, all in mapnb.

    A run is short (tens of milliseconds), so a busy moment of the machine would fall on one
    contender: the contenders take turns, each repeat timing each once."""
    overhead = {
        "plain function": mapnb.map_task(trivial, concurrency=C3, progress=False),
        "@flytekit.task": mapnb.map_task(fk_trivial, concurrency=C3, progress=False),
        "Flyte 2 @env.task": mapnb.map_task(f2_trivial, concurrency=C3, progress=False),
    }
    xs, expect3 = list(range(n)), [x + 1 for x in range(n)]
    for mt in overhead.values():
        assert mapnb_outputs(mt, xs[:50]) == expect3[:50]  # warm up
    times: dict[str, list[float]] = {name: [] for name in overhead}
    for k in range(r):
        print(f"- F3 round {k + 1} of {r}: {', '.join(overhead)}", flush=True)
        for name, mt in overhead.items():
            t0 = time.perf_counter()
            assert mapnb_outputs(mt, xs) == expect3
            times[name].append(time.perf_counter() - t0)
    return {name: n / statistics.median(ts) for name, ts in times.items()}


def f12_table(rows: dict[str, dict[str, float]]) -> str:
    """F1 and F2 (those that ran): Flyte's own local map against mapnb's, the same tasks."""
    ran = [w for w in ("F1", "F2") if w in next(iter(rows.values()))]
    titles = {
        "F1": f"F1 {N1} x sleep({SLEEP1:g}) at c={C1} (ideal {N1 * SLEEP1 / C1:.1f} s)",
        "F2": f"F2 {N2} x sleep({SLEEP2:g}) at c={C2} (ideal {N2 * SLEEP2 / C2:.1f} s)",
    }
    lines = ["| | " + " | ".join(titles[w] for w in ran) + " |", "|---|" + "---|" * len(ran)]
    pairs = [
        ("flytekit map_task (local)", "mapnb, the same flytekit map_task"),
        ("Flyte 2 flyte.map (local, flyte.run)", "mapnb.flyte.map, the same Flyte 2 task"),
    ]
    for theirs, ours in pairs:
        lines.append(f"| {theirs} | " + " | ".join(f"{rows[theirs][w]:.3f} s" for w in ran) + " |")
        cells = [f"{rows[ours][w]:.3f} s ({rows[theirs][w] / rows[ours][w]:.1f}x as fast)" for w in ran]
        lines.append(f"| {ours} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def f3_table(per_s: dict[str, float], n: int = N3) -> str:
    """F3: items/s, and each task's per-item time against a plain function's."""
    plain = per_s["plain function"]
    lines = [
        f"| F3 {n:,} trivial items in mapnb at c={C3} | items/s | per-item time vs a plain function |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {v:,.0f} | {plain / v:.2f}x |" for name, v in per_s.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
