"""Executing notebooks: `mapnb notebooks` against `pytest --nbmake -n 2` and against one
`jupyter execute` after another (`make bench` runs it).

W7: 12 generated small notebooks, each ``import pandas`` then two cells of ``sleep(0.5)``
(the set issue 12 measured), at concurrency 2 for both parallel tools; then the same with
``--cache`` run twice (the second run finds every notebook unchanged). With ``--tutorials``
the repository's tutorials (notebooks/*.ipynb) are timed too, mapnb against nbmake.
Targets: mapnb at most half of nbmake's time; a cached re-run under 10% of the first.
Wall-clock seconds of whole commands (interpreter start-up included), medians of
``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N, C = 12, 2


def make_notebooks(folder: Path) -> list[Path]:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    ks = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    paths = []
    for i in range(N):
        nb = new_notebook(
            cells=[new_code_cell(f"import time\nimport pandas\nn = {i}"), new_code_cell("time.sleep(0.5)"),
                   new_code_cell("time.sleep(0.5)\nn")],
            metadata=ks,
        )  # fmt: skip
        p = folder / f"nb{i:02d}.ipynb"
        nbformat.write(nb, p)
        paths.append(p)
    return paths


def timed(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if out.returncode != 0 and not check:
        print(f"  (exit code {out.returncode}: {(out.stdout + out.stderr).strip().splitlines()[-1:]})")
    elif out.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return took


def mapnb_notebooks(py: str, names: list[str]) -> list[str]:
    """The command that runs ``names`` with mapnb, at concurrency C."""
    return [py, "-m", "mapnb", "notebooks", *names, "--concurrency", str(C), "--no-live"]


def nbmake(py: str, names: list[str]) -> list[str]:
    """The command that runs ``names`` with nbmake over pytest-xdist, at concurrency C."""
    return [py, "-m", "pytest", "--nbmake", "-n", str(C), "-q", "-p", "no:cacheprovider", *names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tutorials", action="store_true", help="also time the tutorials (minutes)")
    ap.add_argument("--no-sequential", action="store_true", help="skip the slow sequential jupyter execute")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "notebooks.md")
    args = ap.parse_args()
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("GITHUB_ACTIONS", None)
    have_nbmake = subprocess.run([py, "-c", "import nbmake, xdist"], capture_output=True).returncode == 0
    results: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds)
        print(f"  {name}: {seconds:.2f} s", flush=True)

    for r in range(args.repeat):
        print(f"round {r + 1}/{args.repeat}", flush=True)
        work = Path(tempfile.mkdtemp(prefix="mapnb-bench-nb-"))
        try:
            paths = make_notebooks(work)
            names = [p.name for p in paths]
            mapnb_cmd = mapnb_notebooks(py, names)
            add("mapnb notebooks --concurrency 2", timed(mapnb_cmd, work, env))
            if have_nbmake:
                add("pytest --nbmake -n 2", timed(nbmake(py, names), work, env))
            if not args.no_sequential and r == 0:  # ~1 min: once is enough
                t0 = time.perf_counter()
                for name in names:
                    timed([py, "-m", "jupyter", "execute", name], work, env)
                add("jupyter execute, one after another", time.perf_counter() - t0)
            cache_env = {**env, "MAPNB_CACHE_DIR": str(work / ".cache")}
            add("mapnb --cache, first run", timed(mapnb_cmd + ["--cache"], work, cache_env))
            add("mapnb --cache, unchanged re-run", timed(mapnb_cmd + ["--cache"], work, cache_env))
            if args.tutorials and r == 0:
                # In place (tutorial 05 reads ../examples/notebooks); mapnb writes to a scratch folder.
                tut = ROOT / "notebooks"
                tnames = sorted(p.name for p in tut.glob("*.ipynb"))
                tcmd = mapnb_notebooks(py, tnames) + ["--output-dir", str(work / "executed-tutorials")]
                add(
                    f"tutorials ({len(tnames)}): mapnb notebooks --concurrency 2",
                    timed(tcmd, tut, env, check=False),
                )
                if have_nbmake:
                    ncmd = nbmake(py, tnames)
                    add(
                        f"tutorials ({len(tnames)}): pytest --nbmake -n 2", timed(ncmd, tut, env, check=False)
                    )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    rows = [f"| {k} | {v:.1f} |" for k, v in med.items()]
    notes = []
    m, nm = med.get("mapnb notebooks --concurrency 2"), med.get("pytest --nbmake -n 2")
    if m and nm:
        notes.append(f"mapnb took {100 * m / nm:.0f}% of nbmake's time (target <= 50%).")
    first, again = med.get("mapnb --cache, first run"), med.get("mapnb --cache, unchanged re-run")
    if first and again:
        notes.append(f"The cached re-run took {100 * again / first:.0f}% of the first run (target < 10%).")
    text = (
        f"## W7: {N} small notebooks (import pandas, 2 x sleep(0.5)), concurrency {C} "
        f"(median of {args.repeat}; {os.cpu_count()} CPUs)\n\n| command | seconds |\n|---|---|\n"
        + "\n".join(rows) + "\n\n" + " ".join(notes) + "\n"
    )  # fmt: skip
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    table = text.split("\n", 2)[2]  # without its heading: the README's section has one
    _common.write("notebooks", {"notebooks": table}, {"seconds": med, "runs": results})


if __name__ == "__main__":
    main()
