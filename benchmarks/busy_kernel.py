"""What keeping the grid interactive during a blocking run costs the kernel (`make bench`).

A real kernel runs a blocking ``%%map_task`` of 4 items that sleep 5 s, 2 at a time
(10 s), with the grid shown. The kernel process's own CPU time (not its workers') is
measured over the run, in three set-ups:

- ``grid``: the grid as users get it (ipykernel >= 7: its comms routed to a subshell; on
  ipykernel 6: the wait polls with jupyter-ui-poll every 0.1 s);
- ``grid, not interactive``: ``MAPNB_BUSY=off``: the grid's own updates, without the above;
- ``no grid``: ``MAPNB_WIDGET=off``, the floor;
- ``idle``: the kernel doing nothing for as long, for scale.

Target: the grid's interactivity costs the kernel < 2% of a core. ``--python`` runs the
kernel with another interpreter (e.g. a venv with ipykernel 6). Results:
``benchmarks/results/busy_kernel.json`` (table ``busy_kernel``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CELL = "%%map_task --concurrency 2 x=range(4)\nimport time\ntime.sleep(5)\nx"
IDLE = "import time\ntime.sleep(10)"


def quiet(_msg: dict) -> None:
    """The cell's output is not what is measured."""


def measure(python: str, widget: str, code: str, busy: str = "on") -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "kernels" / "bench"
        spec.mkdir(parents=True)
        argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": "b", "language": "python"})
        )
        km = KernelManager(
            kernel_name="bench", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)])
        )
        km.start_kernel(env={**os.environ, "MAPNB_WIDGET": widget, "MAPNB_BUSY": busy})
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            version = []
            kc.execute_interactive(
                "%load_ext mapnb\nimport mapnb, ipykernel; print(ipykernel.__version__)",
                output_hook=lambda m: version.append(m["content"].get("text", "")),
            )
            proc = psutil.Process(km.provisioner.process.pid)
            kc.execute_interactive("mapnb.map_task(lambda x: x)(x=[1])", output_hook=quiet)  # warm the pool
            t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
            kc.execute_interactive(code, timeout=120, output_hook=quiet)
            cpu = (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
            return 100 * cpu, "".join(version).strip()
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="the kernel's interpreter")
    ap.add_argument("--out", type=Path, default=_common.RESULTS)
    args = ap.parse_args()
    grid, version = measure(args.python, "anywidget", CELL)
    still, _ = measure(args.python, "anywidget", CELL, busy="off")
    off, _ = measure(args.python, "off", CELL)
    idle, _ = measure(args.python, "anywidget", IDLE)
    text = "\n".join(
        [
            f"Kernel CPU during a 10 s blocking `%%map_task` run, % of a core (ipykernel {version}):",
            "",
            "| grid | grid, not interactive | no grid | idle kernel | interactivity (grid - not interactive) |",
            "|---|---|---|---|---|",
            f"| {grid:.2f}% | {still:.2f}% | {off:.2f}% | {idle:.2f}% | {grid - still:+.2f}% (target < 2%) |",
        ]
    )
    print(text)
    data = {"ipykernel": version, "grid": grid, "not_interactive": still, "no_grid": off, "idle": idle}
    _common.write("busy_kernel", {"busy_kernel": text}, data, args.out)


if __name__ == "__main__":
    main()
