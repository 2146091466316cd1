"""Facts about the machine a figure is measured on, and who else is using its CPU.

A throughput figure means little without its hardware and software beside it
(:func:`environment`), and a CPU figure taken while other processes ran
measures the neighbours: :class:`OtherLoad` and :func:`cpu_busy_fraction`
read ``/proc/stat`` (Linux; ``None`` elsewhere) to tell.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from functools import lru_cache
from typing import Any

import torch

from .settings import MeasureSettings

__all__ = ["OtherLoad", "cpu_busy_fraction", "cpu_isa", "device_name", "environment"]


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    """CPU model from /proc/cpuinfo, with family/model numbers when the name is generic."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # first processor block is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown cpu"
    if "cpu family" in info and "model" in info:
        name = f"{name} (family {info['cpu family']} model {info['model']})"
    return name


def _cpu_count() -> int:
    """Cores this process may run on (its affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def device_name(device: torch.device | str) -> str:
    """Human-readable hardware name: GPU model, or CPU model with its usable core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()}, {_cpu_count()} cpus"


def cpu_isa(device: torch.device | str = "cpu") -> str:
    """The vector ISA a CPU's kernels run with: torch's own capability, and oneDNN's cap when
    ``ONEDNN_MAX_CPU_ISA`` sets one (a 3x3 conv runs about 1.3x slower held to AVX2 than with AVX-512 on the
    same CPU, while torch still reports AVX-512). Empty for a GPU."""
    if torch.device(device).type != "cpu":
        return ""
    own = torch.backends.cpu.get_cpu_capability()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return f"{own}, oneDNN max {cap.upper()}" if cap else own


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # a CUDA build without a usable cuDNN library
        return None


def environment(device: torch.device | str, settings: MeasureSettings | None = None) -> dict[str, Any]:
    """What a figure was measured on: hardware, software versions, threads, load, settings."""
    device = torch.device(device)
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": _cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa": cpu_isa(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
        env["gpu_memory_bytes"] = int(props.total_memory)
    if settings is not None:
        env["settings"] = settings.to_dict()
    return env


def _read_proc_stat() -> tuple[int, int] | None:
    """(busy, total) clock ticks of the whole machine since boot, or None without /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            parts = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    return sum(parts[:8]) - idle, sum(parts[:8])


class OtherLoad:
    """Share of the machine's CPU time used by *other* processes over a span.

    Machine-wide busy ticks from /proc/stat minus this process's own CPU time:
    a CPU figure taken while others ran is suspect, and this says so.
    """

    _HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self) -> None:
        self._start = _read_proc_stat()
        self._own = time.process_time()  # all our threads, ns resolution

    def stop(self, min_ticks: int = 1) -> float | None:
        """Others' share since construction; None when unknown or too short to tell.

        /proc/stat counts in clock ticks (10 ms), so a span of fewer than
        ``min_ticks`` machine ticks cannot be judged.
        """
        end = _read_proc_stat()
        if self._start is None or end is None:
            return None
        own_ticks = (time.process_time() - self._own) * self._HZ
        total = end[1] - self._start[1]
        if total < max(1, min_ticks):
            return None
        return min(1.0, max(0.0, (end[0] - self._start[0] - own_ticks) / total))


def cpu_busy_fraction(interval: float = 1.0) -> float | None:
    """Machine-wide CPU busy fraction over ``interval`` seconds (Linux; None elsewhere).

    Unlike the load average it is not inflated by our own previous work, so it
    tells whether other processes would disturb a CPU measurement right now.
    """
    a = _read_proc_stat()
    if a is None:
        return None
    time.sleep(interval)
    b = _read_proc_stat()
    if b is None or b[1] == a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])
