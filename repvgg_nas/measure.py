"""Measured throughput and latency of a network on the device the user has.

The search optimizes measured speed, not FLOPs (RepVGG's point is that FLOPs
mislead), so a measurement must be trustworthy, quick and comparable across
runs:

- :class:`MeasureSettings` holds every knob that changes the figure (device,
  batch size, resolution, dtype, memory format, ``torch.compile``, CUDA
  graphs, CPU threads) plus how long to measure. It is validated when it is
  built, so a bad study config fails before the first trial.
- :func:`measure_model` warms up, then times repeats until their spread is
  small (or a repeat/time budget is spent) and reports the median, the IQR and
  the coefficient of variation, with the environment (device name, torch,
  CUDA and cuDNN versions, threads, settings) recorded beside it.
- :func:`measure_spec` measures a freshly built deploy-form net: throughput of
  a plain conv stack does not depend on its weights, so a trial's trained
  weights are not needed. A :class:`ThroughputCache` keyed by (spec hash,
  device, settings) makes sure a study never measures one architecture twice,
  in memory or persisted to a JSON file for resumed studies.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from dataclasses import replace as _replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import dataclass_from_dict
from .errors import ConfigError
from .model import build_model
from .registry import Registry
from .spec import RepVGGSpec

__all__ = [
    "DTYPES",
    "DtypeInfo",
    "COMPILE_MODES",
    "MeasureSettings",
    "Measurement",
    "ThroughputCache",
    "measure_model",
    "measure_models",
    "measure_spec",
    "measure_specs",
    "resolve_device",
    "device_name",
    "environment",
    "cpu_busy_fraction",
]

CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DtypeInfo:
    """How a dtype name maps onto torch: the tensor dtype and whether TF32 is allowed."""

    name: str
    torch_dtype: torch.dtype
    tf32: bool
    cpu: bool  # measurable on CPU


DTYPES: Registry[DtypeInfo] = Registry("dtype")
# fp32 means true IEEE fp32: TF32 is switched off explicitly (cuDNN allows it by default).
DTYPES.register("fp32", DtypeInfo("fp32", torch.float32, tf32=False, cpu=True))
DTYPES.register("tf32", DtypeInfo("tf32", torch.float32, tf32=True, cpu=False))
DTYPES.register("fp16", DtypeInfo("fp16", torch.float16, tf32=False, cpu=False))
DTYPES.register("bf16", DtypeInfo("bf16", torch.bfloat16, tf32=False, cpu=False))

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class MeasureSettings:
    """Everything that changes a throughput figure, validated up front.

    Attributes:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: images per forward pass.
        resolution: input height = width.
        dtype: ``fp32`` (true IEEE fp32), ``tf32``, ``fp16`` or ``bf16``; only fp32 on CPU.
            Half types convert the model (faster for inference than autocast).
        channels_last: NHWC memory format for model and input. On by default:
            oneDNN (CPU) and cuDNN tensor cores both prefer it for convs.
        compile: wrap the model in ``torch.compile`` (mode ``compile_mode``).
        compile_mode: one of :data:`COMPILE_MODES`.
        cuda_graphs: capture one forward in a CUDA graph and time its replays
            (CUDA only; removes launch overhead for small nets and batches).
        threads: CPU intra-op threads, set explicitly for the measurement and
            restored after; ``None`` keeps torch's current count (recorded).
        warmup: untimed forward passes first (oneDNN/cuDNN pick kernels, caches fill).
        min_repeats, max_repeats: bounds on the number of timed repeats.
        target_cv: stop once the robust coefficient of variation of the
            repeats (IQR / 1.349 / median) is at most this.
        min_repeat_s: each repeat runs enough forwards to last at least this
            long, so microsecond nets are not timed by timer noise.
        max_seconds: stop after ``min_repeats`` once the timed loop has run this long.
        max_other_load: on CPU, a repeat during which other processes used more
            than this share of the machine's CPU (plus the share of cores our
            threads leave free) is dropped: a shared 2-core box otherwise
            reports its neighbours, not the net. 1.0 keeps every repeat.
    """

    device: str = "auto"
    batch_size: int = 16
    resolution: int = 224
    dtype: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False
    threads: int | None = None
    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 30
    target_cv: float = 0.02
    min_repeat_s: float = 0.1
    max_seconds: float = 20.0
    max_other_load: float = 0.25

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"measure.{name} = {value!r} is invalid; allowed: {allowed}")

        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device.strip().lower()):
            raise bad("device", self.device, "auto, cpu, cuda, cuda:N")
        object.__setattr__(self, "device", self.device.strip().lower())
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise bad("dtype", self.dtype, ", ".join(DTYPES.list()))
        object.__setattr__(self, "dtype", DTYPES.canonical(self.dtype))
        if self.compile_mode not in COMPILE_MODES:
            raise bad("compile_mode", self.compile_mode, ", ".join(COMPILE_MODES))
        for name in ("channels_last", "compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, getattr(self, name), "true or false")
        for name in ("batch_size", "resolution", "min_repeats", "max_repeats"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise bad(name, v, "an integer >= 1")
        if not _is_int(self.warmup) or self.warmup < 0:
            raise bad("warmup", self.warmup, "an integer >= 0")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise bad("threads", self.threads, "an integer >= 1, or none for torch's default")
        if self.max_repeats < self.min_repeats:
            raise bad("max_repeats", self.max_repeats, f"an integer >= min_repeats ({self.min_repeats})")
        for name in ("target_cv", "min_repeat_s", "max_seconds"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                raise bad(name, v, "a number >= 0")
        if not _is_number(self.max_other_load) or not 0 < self.max_other_load <= 1:
            raise bad("max_other_load", self.max_other_load, "a number in (0, 1]")
        if self.device == "cpu":
            self._check_for_device("cpu")
        if self.compile and self.cuda_graphs:
            raise ConfigError(
                "measure.cuda_graphs = true cannot be combined with measure.compile = true; "
                "use compile_mode = 'reduce-overhead', which captures CUDA graphs itself"
            )

    def _check_for_device(self, kind: str) -> None:
        """Settings that only make sense on CUDA, checked once the device is known."""
        if kind != "cpu":
            return
        if not DTYPES.get(self.dtype).cpu:
            allowed = ", ".join(n for n in DTYPES if DTYPES.get(n).cpu)
            raise ConfigError(
                f"measure.dtype = {self.dtype!r} needs a CUDA device; on cpu allowed: {allowed}"
            )
        if self.cuda_graphs:
            raise ConfigError("measure.cuda_graphs = true needs a CUDA device; the device is cpu")

    # ---- device ----------------------------------------------------------------
    def resolve_device(self) -> torch.device:
        """The concrete device: ``auto`` becomes ``cuda`` when available, else ``cpu``.

        Raises ConfigError when CUDA is asked for but missing, or when the
        settings do not fit the resolved device (e.g. fp16 under ``auto`` on a CPU host).
        """
        name = self.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"measure.device = {self.device!r} but CUDA is not available on this "
                    f"machine (torch {torch.__version__}); use 'cpu' or 'auto'"
                )
            index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
            if index >= torch.cuda.device_count():
                raise ConfigError(
                    f"measure.device = {self.device!r} but only {torch.cuda.device_count()} "
                    f"CUDA device(s) exist"
                )
            self._check_for_device("cuda")
            return torch.device("cuda", index)
        self._check_for_device("cpu")
        return torch.device("cpu")

    def resolved(self) -> MeasureSettings:
        """A copy with a concrete device and (on CPU) a concrete thread count.

        This is what a measurement records and what the cache is keyed on, so
        ``auto`` on two machines never shares an entry.
        """
        device = self.resolve_device()
        threads = self.threads if self.threads is not None else torch.get_num_threads()
        return _replace(self, device=str(device), threads=threads)

    # ---- serialization ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), used in cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "measure") -> MeasureSettings:
        """Build from a config table; unknown keys are rejected with the allowed list.

        ``where`` names the table in messages (e.g. ``study.toml: measure``).
        """
        try:
            return dataclass_from_dict(cls, data, where)
        except ConfigError as e:
            if where != "measure":
                raise ConfigError(f"{where}: {e}") from None
            raise


def resolve_device(device: str = "auto") -> torch.device:
    """Shorthand for ``MeasureSettings(device=device).resolve_device()``."""
    return MeasureSettings(device=device).resolve_device()


# ---- environment ---------------------------------------------------------------
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
    try:
        with open("/proc/stat", encoding="ascii") as f:
            parts = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    return sum(parts[:8]) - idle, sum(parts[:8])


class _OtherLoad:
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


# ---- the measurement -------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """Result of one measurement: medians over repeats, their spread, and the environment.

    ``latency_ms`` is the time of one forward pass of a whole batch.
    ``cv`` is stdev/mean of the per-repeat times; ``robust_cv`` is
    IQR/1.349/median (what the stopping rule uses; one outlier does not move it).
    ``env["other_cpu_load"]`` is the share of the machine's CPU that other
    processes used during the timed loop (Linux; None elsewhere).
    ``dropped_repeats`` counts CPU repeats left out because others used more
    than ``max_other_load`` of the machine meanwhile; ``contended`` is True when
    fewer than ``min_repeats`` clean repeats were seen in the budget, in which
    case all repeats are used and the figure should not be trusted.
    ``peak_memory_bytes`` is the CUDA allocator peak during the measurement
    (weights, activations, workspaces); None on CPU, where there is no
    per-measurement allocator peak to read.
    """

    images_per_s: float
    images_per_s_iqr: float
    latency_ms: float
    latency_iqr_ms: float
    best_images_per_s: float
    cv: float
    robust_cv: float
    repeats: int
    iters_per_repeat: int
    latencies_ms: tuple[float, ...]
    peak_memory_bytes: int | None
    dropped_repeats: int = 0
    contended: bool = False
    env: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["latencies_ms"] = list(self.latencies_ms)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        d = dict(data)
        d["latencies_ms"] = tuple(d.get("latencies_ms", ()))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _robust_cv(values: list[float]) -> float:
    q1, med, q3 = _quartiles(values)
    return (q3 - q1) / 1.349 / med if med > 0 else math.inf


@contextlib.contextmanager
def _backend_scope(settings: MeasureSettings, device: torch.device) -> Iterator[None]:
    """Set threads / cuDNN / TF32 flags for one measurement and restore them after.

    Restoring matters: the same process goes on to train the next trial.
    """
    prev_threads = torch.get_num_threads()
    restore: list[Callable[[], None]] = [lambda: torch.set_num_threads(prev_threads)]
    try:
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        if device.type == "cuda":
            cudnn = torch.backends.cudnn
            prev_bench = cudnn.benchmark
            restore.append(lambda: setattr(cudnn, "benchmark", prev_bench))
            cudnn.benchmark = True  # pick the fastest conv algorithm for this shape
            restore.append(_set_tf32(DTYPES.get(settings.dtype).tf32))
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _set_tf32(enabled: bool) -> Callable[[], None]:
    """Switch TF32 for matmul and cuDNN conv; return the undo.

    Uses the ``fp32_precision`` API where torch has it (mixing it with the
    legacy ``allow_tf32`` flags makes torch raise), the legacy flags otherwise.
    """
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        prev = (matmul.fp32_precision, conv.fp32_precision)
        value = "tf32" if enabled else "ieee"
        matmul.fp32_precision, conv.fp32_precision = value, value

        def undo_new() -> None:
            matmul.fp32_precision, conv.fp32_precision = prev

        return undo_new
    prev_legacy = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled

    def undo_legacy() -> None:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_legacy

    return undo_legacy


def _cuda_graph_step(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Callable[[], None]:
    """Capture ``fn(x)`` in a CUDA graph; the returned step replays it on the same input."""
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch recommends
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(x)
    # The graph's static output buffers must outlive the replays.
    return _KeepAlive(graph.replay, (graph, out))


class _KeepAlive:
    """A callable that holds references (graph output buffers) for as long as it lives."""

    def __init__(self, fn: Callable[[], Any], refs: Any) -> None:
        self._fn, self._refs = fn, refs

    def __call__(self) -> None:
        self._fn()


def _timer(device: torch.device) -> Callable[[Callable[[], Any], int], float]:
    """Seconds for ``iters`` calls of ``step``: CUDA events on GPU, perf_counter on CPU."""
    if device.type == "cuda":

        def time_cuda(step: Callable[[], Any], iters: int) -> float:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0

        return time_cuda

    def time_cpu(step: Callable[[], Any], iters: int) -> float:
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        return time.perf_counter() - t0

    return time_cpu


def _other_load_limit(settings: MeasureSettings) -> float:
    """Others' machine share above which a CPU repeat is dropped.

    Cores our threads leave free are the neighbours' to use: with 1 thread on
    2 cores, a process filling the other core does not touch the measurement.
    """
    threads = settings.threads or torch.get_num_threads()
    spare = max(0, _cpu_count() - threads) / _cpu_count()
    return min(1.0, settings.max_other_load + spare)


def _infer_in_channels(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    if isinstance(spec, RepVGGSpec):
        return spec.in_channels
    for m in model.modules():  # first conv of any other net
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


class _Timed:
    """One model made ready to time: its step, forwards per repeat and repeats so far."""

    def __init__(self, step: Callable[[], Any], iters: int, peak: int | None) -> None:
        self.step, self.iters, self.peak = step, iters, peak
        self.clean: list[float] = []
        self.dropped: list[float] = []


def _prepare(
    model: nn.Module,
    settings: MeasureSettings,
    device: torch.device,
    channels: int,
    timer: Callable[[Callable[[], Any], int], float],
) -> _Timed:
    """Move/convert ``model``, build the input, compile/capture, warm up, calibrate."""
    dinfo = DTYPES.get(settings.dtype)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    base_mem = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base_mem = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    model = model.eval().to(device=device, dtype=dinfo.torch_dtype, memory_format=fmt)
    x = torch.randn(
        settings.batch_size, channels, settings.resolution, settings.resolution,
        device=device, dtype=dinfo.torch_dtype,
    ).contiguous(memory_format=fmt)
    fn: Callable[[torch.Tensor], Any] = (
        torch.compile(model, mode=settings.compile_mode) if settings.compile else model
    )
    if settings.cuda_graphs:
        step: Callable[[], Any] = _cuda_graph_step(fn, x)
    else:
        step = lambda: fn(x)  # noqa: E731
    # Warm-up: compile, kernel selection (cudnn.benchmark, oneDNN primitives), caches.
    timer(step, max(settings.warmup, 1 if settings.compile else 0))
    # Calibrate forwards per repeat on the faster of two calls (the first may still be cold).
    one = min(timer(step, 1), timer(step, 1))
    iters = max(1, math.ceil(settings.min_repeat_s / max(one, 1e-7)))
    peak = None
    if device.type == "cuda":  # weights + activations + workspaces of this model alone
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device) - base_mem)
    return _Timed(step, iters, peak)


def _summarize(t: _Timed, settings: MeasureSettings, env: dict[str, Any]) -> Measurement:
    contended = len(t.clean) < settings.min_repeats
    per_call = t.clean + t.dropped if contended else t.clean
    q1, med, q3 = _quartiles(per_call)
    bs = settings.batch_size
    mean = statistics.fmean(per_call)
    return Measurement(
        images_per_s=bs / med,
        images_per_s_iqr=bs / q1 - bs / q3,
        latency_ms=med * 1000.0,
        latency_iqr_ms=(q3 - q1) * 1000.0,
        best_images_per_s=bs / min(per_call),
        cv=statistics.pstdev(per_call) / mean if len(per_call) > 1 else 0.0,
        robust_cv=_robust_cv(per_call),
        repeats=len(per_call),
        iters_per_repeat=t.iters,
        latencies_ms=tuple(v * 1000.0 for v in per_call),
        peak_memory_bytes=t.peak,
        dropped_repeats=0 if contended else len(t.dropped),
        contended=contended,
        env=env,
    )


def measure_models(
    models: Mapping[str, nn.Module],
    settings: MeasureSettings | None = None,
    *,
    in_channels: int | None = None,
    copy_models: bool = True,
) -> dict[str, Measurement]:
    """Measure several models in lockstep: one repeat of each in turn, round-robin.

    Comparing nets measured one after the other mixes their speed with the
    machine's drift (clock boost, neighbours on a shared host); in lockstep
    every model sees the same conditions, so their ratios hold even where the
    absolute figures wander. Each model still gets its own warm-up,
    calibration and figures; the loop stops once every model has
    ``min_repeats`` clean repeats and either all robust CVs are at most
    ``target_cv`` or the budget (``max_repeats`` rounds, ``max_seconds`` per
    model) is spent. Models are deep-copied first unless ``copy_models=False``.
    """
    if not models:
        raise ConfigError("measure_models needs at least one model")
    settings = (settings or MeasureSettings()).resolved()
    device = torch.device(settings.device)
    timer = _timer(device)
    screen = device.type == "cpu" and settings.max_other_load < 1.0
    limit = _other_load_limit(settings)
    budget_s = settings.max_seconds * len(models)

    with _backend_scope(settings, device), torch.inference_mode():
        timed: dict[str, _Timed] = {}
        for name, model in models.items():
            channels = in_channels if in_channels is not None else _infer_in_channels(model)
            net = copy.deepcopy(model) if copy_models else model
            timed[name] = _prepare(net, settings, device, channels, timer)

        whole = _OtherLoad()
        t_start = time.perf_counter()
        rounds = 0
        while True:
            for t in timed.values():
                # On CPU a repeat shared with other processes is kept aside.
                span = _OtherLoad() if screen else None
                v = timer(t.step, t.iters) / t.iters
                load = span.stop(min_ticks=10) if span is not None else None
                (t.dropped if load is not None and load > limit else t.clean).append(v)
            rounds += 1
            over = rounds >= settings.max_repeats or time.perf_counter() - t_start >= budget_s
            enough = all(len(t.clean) >= settings.min_repeats for t in timed.values())
            if enough and (over or all(_robust_cv(t.clean) <= settings.target_cv for t in timed.values())):
                break
            if over and rounds >= settings.min_repeats:
                break
        other_load = whole.stop()
        env = {**environment(device, settings), "other_cpu_load": other_load}  # threads as set

    return {name: _summarize(t, settings, dict(env)) for name, t in timed.items()}


def measure_model(
    model: nn.Module,
    settings: MeasureSettings | None = None,
    *,
    in_channels: int | None = None,
    copy_model: bool = True,
) -> Measurement:
    """Throughput and latency of ``model`` (in eval mode) under ``settings``.

    The model is deep-copied first (``copy_model=False`` skips that for a
    throw-away net), so the caller's module keeps its device, dtype and memory
    format. Input is random: a conv net's speed does not depend on the values.
    """
    return measure_models(
        {"model": model}, settings, in_channels=in_channels, copy_models=copy_model
    )["model"]


# ---- cache -----------------------------------------------------------------------
class ThroughputCache:
    """Measurements keyed by (spec hash, form, device name + torch version, settings).

    In memory by default; with ``path`` it loads that JSON file (if present)
    and rewrites it atomically after every new entry, so a resumed study does
    not remeasure. Concurrent writers merge with what is on disk before each
    write; a lost race only costs a remeasurement.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0
        if self.path is not None and self.path.exists():
            self._entries.update(self._load(self.path))

    @staticmethod
    def _load(path: Path) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"throughput cache {path} cannot be read: {e}") from None
        if not isinstance(data, dict) or data.get("format_version") != CACHE_FORMAT_VERSION:
            raise ConfigError(
                f"throughput cache {path} is not a format_version {CACHE_FORMAT_VERSION} cache; "
                f"delete it or pass another path"
            )
        entries = data.get("entries", {})
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def key(spec: RepVGGSpec | str, settings: MeasureSettings, deploy: bool = True) -> str:
        """Cache key; ``settings`` are resolved first so ``auto`` names the real device."""
        s = settings.resolved()
        spec_hash = spec if isinstance(spec, str) else spec.hash
        hw = f"{device_name(s.device)} / torch {torch.__version__}"
        return json.dumps(
            [spec_hash, "deploy" if deploy else "train", hw, s.to_dict()],
            sort_keys=True, separators=(",", ":"),
        )

    def get(self, spec: RepVGGSpec | str, settings: MeasureSettings, deploy: bool = True) -> Measurement | None:
        entry = self._entries.get(self.key(spec, settings, deploy))
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return _replace(Measurement.from_dict(entry), cached=True)

    def put(
        self, spec: RepVGGSpec | str, settings: MeasureSettings, m: Measurement, deploy: bool = True
    ) -> None:
        entry = _replace(m, cached=False).to_dict()
        self._entries[self.key(spec, settings, deploy)] = entry
        if self.path is not None:
            self.save()

    def save(self) -> None:
        """Atomic write (temp file + ``os.replace``), merged with entries others wrote."""
        if self.path is None:
            return
        if self.path.exists():
            try:
                merged = self._load(self.path)
            except ConfigError:
                merged = {}
            merged.update(self._entries)
            self._entries = merged
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format_version": CACHE_FORMAT_VERSION, "entries": self._entries}, f)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


def measure_spec(
    spec: RepVGGSpec,
    settings: MeasureSettings | None = None,
    cache: ThroughputCache | None = None,
    *,
    deploy: bool = True,
) -> Measurement:
    """Measure a freshly built net of ``spec`` (deploy form by default), via ``cache``.

    A deploy net's speed does not depend on its weights, so no trained model
    is needed; a cache hit returns the stored figure with ``cached=True``.
    """
    settings = (settings or MeasureSettings()).resolved()
    if cache is not None:
        hit = cache.get(spec, settings, deploy)
        if hit is not None:
            return hit
    model = build_model(spec, deploy=deploy)
    result = measure_model(model, settings, in_channels=spec.in_channels, copy_model=False)
    if cache is not None:
        cache.put(spec, settings, result, deploy)
    return result


def measure_specs(
    specs: Mapping[str, RepVGGSpec],
    settings: MeasureSettings | None = None,
    cache: ThroughputCache | None = None,
    *,
    deploy: bool = True,
) -> dict[str, Measurement]:
    """Freshly built nets of several specs measured in lockstep (:func:`measure_models`).

    For *ratios* between nets (a pruned net's speed-up): both figures come
    from the same stretch of time, so a slow spell of the machine cannot land
    on one of them only. The cache is not read (a stored figure comes from
    another time) but is updated with the new figures.
    """
    settings = (settings or MeasureSettings()).resolved()
    in_channels = {s.in_channels for s in specs.values()}
    if len(in_channels) != 1:
        raise ConfigError(f"measure_specs needs specs with one input channel count, got {sorted(in_channels)}")
    nets = {name: build_model(spec, deploy=deploy) for name, spec in specs.items()}
    out = measure_models(nets, settings, in_channels=in_channels.pop(), copy_models=False)
    if cache is not None:
        for name, spec in specs.items():
            cache.put(spec, settings, out[name], deploy)
    return out
