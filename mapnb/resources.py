"""Per-subtask resources, as flytekit's ``Resources``: what an item requests and its limits.

``requests`` say what one item needs; the backend runs no more items at once than fit:

- local: ``cpu`` slots of the usable CPUs, ``mem`` of the machine's memory, ``gpu`` of its
  GPUs (each running item gets its own ``CUDA_VISIBLE_DEVICES``);
- dask: Dask worker resources named ``CPU``, ``MEMORY`` (bytes) and ``GPU``, which the
  workers must declare (``dask worker --resources "CPU=8,MEMORY=32e9,GPU=1"``).

``limits.mem`` is enforced per item on the local backend: an item whose worker (with its
child processes) grows past it fails with a clear error, and only that item.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
from numbers import Integral, Real
from typing import Any

from .errors import InvalidMapError

_UNITS = {
    "": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKMGT]i?)?\s*$")
_MILLI = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*m\s*$")  # Kubernetes millicores: "500m" is half a CPU


def parse_cpu(value: Any) -> float:
    """CPUs from ``2``, ``0.5``, ``"0.5"`` or Kubernetes millicores ``"500m"``; -1.0 when invalid."""
    if isinstance(value, bool):
        return -1.0
    if isinstance(value, str) and (m := _MILLI.match(value)):
        return float(m.group(1)) / 1000
    try:
        return float(value)
    except (TypeError, ValueError):
        return -1.0


def _number(value: Any) -> int | float | None:
    """A real number (numpy's too) as an int, exactly, or a float; None for anything else."""
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    return None


def parse_memory(value: Any, what: str = "mem") -> int:
    """Bytes from ``4Gi``, ``512Mi``, ``1.5G``, ``2e9`` or an int, else a clear error."""
    if isinstance(value, bool):
        raise InvalidMapError(
            f"{what} must be a size such as '4Gi', '512Mi' or a number of bytes; got {value!r}"
        )
    number = _number(value)
    if number is not None and number > 0:
        return int(number)
    m = _QUANTITY.match(value) if isinstance(value, str) else None
    if not m or float(m.group(1)) <= 0:
        raise InvalidMapError(
            f"{what} must be a size such as '4Gi', '512Mi' or a number of bytes; got {value!r}"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def format_memory(n: float) -> str:
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.1f} {unit}B"
    return f"{int(n)} B"


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one item needs (as ``requests``) or may use at most (as ``limits``).

    Parameters
    ----------
    cpu : int, float or str, optional
        CPUs, e.g. ``2``, ``"0.5"`` or, as in Kubernetes, ``"500m"``.
    mem : str or int, optional
        Memory, e.g. ``"4Gi"``, ``"512Mi"``, ``"2G"`` or bytes.
    gpu : int or str, optional
        GPUs, e.g. ``1`` or ``"1"`` (as flytekit writes it).
    ephemeral_storage : str or int, optional
        Scratch disk, as flytekit's ``Resources`` has it: checked, then used only by a Flyte
        cluster (the local and Dask backends do not limit disk).
    """

    cpu: float | str | None = None
    mem: str | int | None = None
    gpu: int | None = None
    ephemeral_storage: str | int | None = None

    def __post_init__(self) -> None:
        if self.cpu is not None:
            cpu = parse_cpu(self.cpu)
            if not cpu > 0 or math.isinf(cpu):
                raise InvalidMapError(
                    f"cpu must be a number of CPUs > 0, such as 2, '0.5' or '500m'; got {self.cpu!r}"
                )
        if isinstance(self.gpu, str) and self.gpu.strip().isdigit():
            object.__setattr__(self, "gpu", int(self.gpu))  # flytekit and Kubernetes write gpu="1"
        if self.mem is not None:
            parse_memory(self.mem)
        if self.ephemeral_storage is not None:
            parse_memory(self.ephemeral_storage, "ephemeral_storage")
        if self.gpu is not None and (
            isinstance(self.gpu, bool) or not isinstance(self.gpu, int) or self.gpu < 0
        ):
            raise InvalidMapError(f"gpu must be a whole number of GPUs >= 0; got {self.gpu!r}")

    @property
    def cpus(self) -> float | None:
        return None if self.cpu is None else parse_cpu(self.cpu)

    @property
    def mem_bytes(self) -> int | None:
        return None if self.mem is None else parse_memory(self.mem)

    def __bool__(self) -> bool:
        return self.cpu is not None or self.mem is not None or bool(self.gpu)


def from_flytekit(value: Any) -> Resources | None:
    """flytekit's ``Resources`` as mapnb's (None when it sets nothing), read by attribute
    so that flytekit is not imported."""
    fields = {k: getattr(value, k, None) for k in ("cpu", "mem", "gpu", "ephemeral_storage")}
    for k, v in fields.items():
        if isinstance(v, (tuple, list)):  # flytekit's (request, limit) pairs: not one value
            raise InvalidMapError(
                f"{k}={v!r}: pass requests and limits separately, e.g. requests=Resources({k}=...)"
            )
    if all(v is None for v in fields.values()):
        return None
    return Resources(**fields)


def check(value: Any, what: str) -> Resources | None:
    if value is None or isinstance(value, Resources):
        return value
    cls = type(value)
    if cls.__name__ == "Resources" and cls.__module__.split(".")[0] == "flytekit":
        return from_flytekit(value)
    raise InvalidMapError(
        f"{what} must be mapnb.Resources(cpu=..., mem=..., gpu=...) or flytekit.Resources; got {value!r}"
    )


def total_memory() -> int | None:
    """This machine's memory in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def local_gpus() -> list[str]:
    """The GPUs items may use: ``CUDA_VISIBLE_DEVICES`` if set, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    global _smi_gpus
    if _smi_gpus is None:  # asked once per process: the hardware does not change
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        _smi_gpus = [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return list(_smi_gpus)


_smi_gpus: list[str] | None = None


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc; [] when it is gone)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def descendants(pid: int) -> list[int]:
    """Every descendant of a process, parents before their children (Linux /proc)."""
    out: list[int] = []
    todo, seen = children(pid), {pid}
    while todo:
        p = todo.pop(0)
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        todo += children(p)
    return out


def rss_of_tree(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes (Linux /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total
