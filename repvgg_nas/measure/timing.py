"""The timing loop: how one or several nets are timed on one device.

:func:`measure_model` warms up, then times repeats until their spread is small
(or a repeat/time budget is spent) and reports the median, the IQR and the
coefficient of variation in a :class:`Measurement`, with the environment
(device name, torch, CUDA and cuDNN versions, threads, settings) recorded
beside it. :func:`measure_models` times several nets in lockstep, so their
ratios hold even where the machine's speed drifts. What is timed is one
forward in ``settings.runtime`` (:mod:`.runtimes`): the torch module itself,
or an onnxruntime session of its export; the loop and its policy are the same. Backend flags (threads,
cuDNN benchmark, TF32) are set for the measurement only and restored after;
CUDA graphs, when asked for, replay one captured forward.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from dataclasses import replace as _replace
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..export import input_channels
from ..spec import RepVGGSpec
from .host import _cpu_count, OtherLoad, environment
from .onnxrun import onnx_step
from .runtimes import RUNTIMES, runtime_versions
from .settings import DTYPES, MeasureSettings

__all__ = ["Measurement", "measure_model", "measure_models"]


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


def _timer(device: torch.device, runtime: str = "torch") -> Callable[[Callable[[], Any], int], float]:
    """Seconds for ``iters`` calls of ``step``: CUDA events for torch on GPU, else perf_counter.

    An onnxruntime step returns host arrays, so it has finished when it returns.
    """
    if device.type == "cuda" and not RUNTIMES.get(runtime).onnx:

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
    return input_channels(model)  # first conv (or linear, for a head alone) of any other net


class _Timed:
    """One model made ready to time: its step, forwards per repeat and repeats so far."""

    def __init__(self, step: Callable[[], Any], iters: int, peak: int | None) -> None:
        self.step, self.iters, self.peak = step, iters, peak
        self.timer: Callable[[Callable[[], Any], int], float] | None = None
        self.settings: MeasureSettings | None = None
        self.clean: list[float] = []
        self.dropped: list[float] = []


def _prepare(
    model: nn.Module,
    settings: MeasureSettings,
    device: torch.device,
    channels: int,
    timer: Callable[[Callable[[], Any], int], float],
) -> _Timed:
    """Move/convert ``model``, build the input, compile/capture, warm up, calibrate.

    In an onnxruntime runtime the step is a session run of the exported net
    (:func:`~.onnxrun.onnx_step`); warm-up and calibration are the same.
    """
    if RUNTIMES.get(settings.runtime).onnx:
        step = onnx_step(model, settings, channels)
        timer(step, max(settings.warmup, 1))  # the first run builds onnxruntime's kernels
        one = min(timer(step, 1), timer(step, 1))
        return _Timed(step, max(1, math.ceil(settings.min_repeat_s / max(one, 1e-7))), None)
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
    runtimes: Mapping[str, str] | None = None,
) -> dict[str, Measurement]:
    """Measure several models in lockstep: one repeat of each in turn, round-robin.

    ``runtimes`` runs some models in another runtime than ``settings.runtime``
    (by model name), e.g. one net in torch, onnxruntime and onnxruntime-int8
    in one lockstep run.

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
    own = {
        name: _replace(settings, runtime=(runtimes or {}).get(name, settings.runtime)) for name in models
    }
    screen = device.type == "cpu" and settings.max_other_load < 1.0
    limit = _other_load_limit(settings)
    budget_s = settings.max_seconds * len(models)

    # Copies are made outside inference mode: an exporter (onnxruntime runtimes) traces them.
    nets = {name: copy.deepcopy(m) if copy_models else m for name, m in models.items()}
    with _backend_scope(settings, device), torch.inference_mode():
        timed: dict[str, _Timed] = {}
        for name, net in nets.items():
            channels = in_channels if in_channels is not None else _infer_in_channels(net)
            timer = _timer(device, own[name].runtime)
            timed[name] = _prepare(net, own[name], device, channels, timer)
            timed[name].timer, timed[name].settings = timer, own[name]

        whole = OtherLoad()
        t_start = time.perf_counter()
        rounds = 0
        while True:
            for t in timed.values():
                # On CPU a repeat shared with other processes is kept aside.
                span = OtherLoad() if screen else None
                v = t.timer(t.step, t.iters) / t.iters
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

    def env_of(s: MeasureSettings) -> dict[str, Any]:
        return {**env, "settings": s.to_dict(), "runtime": s.runtime, "precision": s.precision,
                **runtime_versions(RUNTIMES.get(s.runtime))}

    return {name: _summarize(t, own[name], env_of(own[name])) for name, t in timed.items()}


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
