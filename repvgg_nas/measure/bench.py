"""Train form vs deploy form vs ResNet throughput: the library of the bench CLI.

RepVGG's claim is that the fused plain net is faster than both its own
multi-branch training form and ResNets of similar accuracy, and that FLOPs do
not predict this. These functions measure all of them in one process under one
:class:`~repvgg_nas.measure.MeasureSettings`, so the ratios are comparable:

- :func:`run_benchmark` returns one dict per (model, form) with img/s,
  latency, params, MACs and the ratios deploy/train and vs every baseline;
  the nets of a round are timed in lockstep so the machine's drift cancels
  out of the ratios;
- :func:`repeatability` measures one model N times in one process and
  reports the coefficient of variation across the N figures;
- every row carries the achieved TFLOP/s (2 FLOPs per MAC at the measured
  img/s) and, on a GPU whose dense fp16 tensor peak is known
  (:data:`DENSE_FP16_PEAK_TFLOPS`, or ``peak_tflops``), its share of it;
- :func:`write_csv` writes the rows atomically.

Progress goes through a ``progress`` callback; the CLI
(``python -m repvgg_nas.bench``) decides what to show. Baselines are
torchvision ResNets built with ``weights=None`` (speed does not depend on
weights, and nothing is downloaded).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import zoo
from ..counting import complexity, count_macs, count_params
from ..errors import ConfigError
from ..files import atomic_write
from ..model import build_model
from ..registry import Registry
from .host import cpu_busy_fraction
from .runtimes import RUNTIMES
from .settings import MeasureSettings
from .timing import Measurement, measure_model, measure_models

__all__ = [
    "BASELINES",
    "DENSE_FP16_PEAK_TFLOPS",
    "dense_fp16_peak",
    "baseline_model",
    "baseline_complexity",
    "run_benchmark",
    "repeatability",
    "write_csv",
    "wait_for_idle",
]

Progress = Callable[[str], None]

# Dense (no sparsity) fp16 tensor-core peaks from NVIDIA's datasheets, matched as
# substrings of torch.cuda.get_device_name(), most specific first.
DENSE_FP16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("A100", 312.0),
)


def dense_fp16_peak(device_name: str | None) -> float | None:
    """The dense fp16 tensor peak (TFLOP/s) of a known GPU, else ``None``."""
    for key, tflops in DENSE_FP16_PEAK_TFLOPS:
        if device_name and key in device_name:
            return tflops
    return None


def _resnet(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision  # imported lazily: only the bench needs it

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


BASELINES: Registry[Callable[[int], nn.Module]] = Registry("baseline")
for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    BASELINES.register(_name, _resnet(_name))


def baseline_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A randomly initialized torchvision baseline (never downloads weights)."""
    return BASELINES.get(name)(num_classes)


def baseline_complexity(name: str, resolution: int, num_classes: int = 1000) -> tuple[int, int]:
    """(params, MACs) of a baseline for one image, counted on the meta device."""
    with torch.device("meta"):
        model = baseline_model(name, num_classes).eval()
        x = torch.empty(1, 3, resolution, resolution)
    return count_params(model), count_macs(model, x)


def wait_for_idle(
    threshold: float, timeout_s: float, progress: Progress | None = None, interval: float = 2.0
) -> float | None:
    """Wait until other processes leave the CPU (busy fraction <= ``threshold``).

    Returns the last busy fraction seen (None where /proc/stat is missing).
    Gives up after ``timeout_s`` and measures anyway; the figure is recorded.
    """
    start = time.monotonic()
    busy = cpu_busy_fraction(interval)
    last_note = -math.inf
    while busy is not None and busy > threshold and time.monotonic() - start < timeout_s:
        if progress and time.monotonic() - last_note >= 30:  # a line every 30 s at most
            last_note = time.monotonic()
            progress(f"  other processes keep the cpu {busy:.0%} busy (> {threshold:.0%}); waiting ...")
        busy = cpu_busy_fraction(interval)
    if progress and last_note > -math.inf:
        progress(f"  waited {time.monotonic() - start:.0f} s; cpu now {busy:.0%} busy")
    return busy


class _Job:
    """One (model, form) to measure: its static complexity and how to build the net."""

    def __init__(self, model: str, form: str, params: int, macs: int,
                 build: Callable[[], nn.Module]) -> None:
        self.model, self.form, self.params, self.macs, self.build = model, form, params, macs, build

    @property
    def label(self) -> str:
        return f"{self.model} {self.form}"


def _jobs(models: Sequence[str], baselines: Sequence[str], resolution: int, num_classes: int) -> list[_Job]:
    """Resolve every name before measuring anything, so a typo fails in a second."""
    jobs: list[_Job] = []
    for name in models:
        entry = zoo.get_entry(name)
        spec = entry.spec(num_classes=num_classes)
        for form, deploy in (("train", False), ("deploy", True)):
            c = complexity(spec, resolution, deploy=deploy)

            def build(spec=spec, deploy=deploy) -> nn.Module:
                # A fresh net: a deploy net's speed does not depend on its weights.
                return build_model(spec, deploy=deploy)

            jobs.append(_Job(entry.name, form, c.params, c.macs, build))
    for name in baselines:
        canonical = BASELINES.canonical(name)
        params, macs = baseline_complexity(canonical, resolution, num_classes)

        def build_baseline(canonical=canonical) -> nn.Module:
            return baseline_model(canonical, num_classes)

        jobs.append(_Job(canonical, "baseline", params, macs, build_baseline))
    return jobs


def _cv(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    return statistics.pstdev(values) / statistics.fmean(values)


def run_benchmark(
    models: Sequence[str] = ("A0",),
    baselines: Sequence[str] = ("resnet18", "resnet34", "resnet50"),
    settings: MeasureSettings | None = None,
    *,
    num_classes: int = 1000,
    rounds: int = 1,
    wait_idle_s: float = 0.0,
    idle_threshold: float = 0.15,
    progress: Progress | None = None,
    peak_tflops: float | None = None,
    runtimes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Measure train form, deploy form and baselines; one dict per (model, form, runtime).

    ``runtimes`` (default: ``settings.runtime`` alone) runs every net in each
    of several runtimes (:data:`~.runtimes.RUNTIMES`), all in the same
    lockstep run; each row's ``vs_<runtime>`` is its img/s over the same net's
    in the first runtime, and the within-runtime ratios (``deploy_vs_train``,
    ``vs_<baseline>``) compare nets of one runtime.

    ``peak_tflops`` is the device's dense fp16 peak for the ``pct_fp16_peak``
    column; by default it is looked up from the device name (:func:`dense_fp16_peak`)
    for fp16/bf16 runs on a GPU.

    All nets of a round are measured in lockstep (:func:`measure_models`: one
    repeat of each in turn), so drift of the machine's speed hits every net
    alike instead of skewing one ratio. With ``rounds > 1`` the median over
    rounds is reported; rounds in which a net got too few repeats free of
    other processes (``contended``) are left out of its median when at least
    one of its rounds was clean.
    """
    if not models and not baselines:
        raise ConfigError("nothing to measure: give at least one model or baseline")
    if rounds < 1:
        raise ConfigError(f"rounds = {rounds} is invalid; allowed: an integer >= 1")
    if peak_tflops is not None and not (
        isinstance(peak_tflops, (int, float)) and math.isfinite(peak_tflops) and peak_tflops > 0
    ):
        raise ConfigError(f"peak TFLOP/s = {peak_tflops!r} is invalid; allowed: a finite number > 0")
    settings = (settings or MeasureSettings()).resolved()
    names = _runtime_list(runtimes, settings)
    jobs = _jobs(models, baselines, settings.resolution, num_classes)
    # One net per (job, runtime): a runtime converts or exports its net in place.
    runs = [(job, rt) for rt in names for job in jobs]
    labels = [job.label if len(names) == 1 else f"{job.label} [{rt}]" for job, rt in runs]
    nets = {label: job.build() for label, (job, _) in zip(labels, runs)}
    run_rt = {label: rt for label, (_, rt) in zip(labels, runs)}
    results: list[list[Measurement]] = [[] for _ in runs]
    busy: list[float] = []
    for r in range(rounds):
        if wait_idle_s > 0:
            b = wait_for_idle(idle_threshold, wait_idle_s, progress)
            if b is not None:
                busy.append(b)
        if progress:
            progress(f"[round {r + 1}/{rounds}] measuring {len(nets)} nets in lockstep: "
                     f"{', '.join(nets)} ...")
        # Nets are ours: no copies; conversion to the memory format is idempotent.
        ms = measure_models(nets, settings, copy_models=False, runtimes=run_rt)
        for i, label in enumerate(labels):
            m = ms[label]
            results[i].append(m)
            if progress:
                note = f", {m.dropped_repeats} repeats dropped" if m.dropped_repeats else ""
                if m.contended:
                    note += " (CONTENDED: too few clean repeats)"
                progress(
                    f"[round {r + 1}/{rounds}] {label}: {m.images_per_s:.1f} img/s, "
                    f"{m.latency_ms:.1f} ms/batch, cv {m.cv:.1%} over {m.repeats} repeats{note}"
                )
        other = next(iter(ms.values())).env.get("other_cpu_load")
        if progress and other is not None and settings.device == "cpu":
            progress(f"[round {r + 1}/{rounds}] other processes used {other:.0%} of the cpu meanwhile")
    rows = [_row(job, ms_, busy, _replace(settings, runtime=rt)) for (job, rt), ms_ in zip(runs, results)]
    _add_ratios(rows, [BASELINES.canonical(b) for b in baselines], names)
    # The looked-up peak is the half-precision tensor peak: only half-precision rows are
    # compared with it. A peak given explicitly applies to every row.
    half = settings.dtype in ("fp16", "bf16")
    for r in rows:
        peak = peak_tflops
        if peak is None and half and r["device"] != "cpu":
            peak = dense_fp16_peak(r["device_name"])
        r["fp16_peak_tflops"] = peak
        r["pct_fp16_peak"] = r["tflops"] / peak if peak else None
    return rows


def _row(job: _Job, all_ms: list[Measurement], busy: list[float], settings: MeasureSettings) -> dict[str, Any]:
    # Rounds that saw too few clean repeats only count when no round was clean.
    ms = [m for m in all_ms if not m.contended] or all_ms
    ips = [m.images_per_s for m in ms]
    env = ms[-1].env
    loads = [m.env.get("other_cpu_load") for m in ms if m.env.get("other_cpu_load") is not None]
    return {
        "model": job.model,
        "form": job.form,
        "img_s": statistics.median(ips),
        "img_s_iqr": statistics.median(m.images_per_s_iqr for m in ms),
        "best_img_s": max(m.best_images_per_s for m in ms),
        "latency_ms": statistics.median(m.latency_ms for m in ms),
        "cv": statistics.median(m.cv for m in ms),
        "robust_cv": statistics.median(m.robust_cv for m in ms),
        "repeats": sum(m.repeats for m in ms),
        "dropped_repeats": sum(m.dropped_repeats for m in ms),
        "contended": all(m.contended for m in ms),
        "rounds": len(all_ms),
        "clean_rounds": sum(not m.contended for m in all_ms),
        "round_img_s": ";".join(f"{m.images_per_s:.2f}" for m in all_ms),
        "round_cv": _cv(ips),
        "params_m": job.params / 1e6,
        "gmacs": job.macs / 1e9,
        "tflops": 2 * job.macs * statistics.median(ips) / 1e12,
        "peak_memory_mb": (
            max(m.peak_memory_bytes for m in ms) / 2**20
            if all(m.peak_memory_bytes is not None for m in ms) else None
        ),
        "other_cpu_load": max(loads) if loads else None,
        "cpu_busy_before": max(busy) if busy else None,
        "device": settings.device,
        "device_name": env["device_name"],
        "dtype": settings.dtype,
        "batch_size": settings.batch_size,
        "resolution": settings.resolution,
        "channels_last": settings.channels_last,
        "compile": settings.compile,
        "cuda_graphs": settings.cuda_graphs,
        "threads": env["threads"],
        "torch": env["torch"],
        "cuda": env["cuda"],
        "cudnn": env["cudnn"],
        "timestamp": env["timestamp"],
        "runtime": settings.runtime,
        "precision": settings.precision,
        "onnxruntime": env.get("onnxruntime"),
    }


def _runtime_list(runtimes: Sequence[str] | None, settings: MeasureSettings) -> list[str]:
    """Canonical runtime names, each checked with ``settings`` before anything is measured."""
    names: list[str] = []
    for name in runtimes or [settings.runtime]:
        canonical = _replace(settings, runtime=name).runtime  # unknown, missing package, bad dtype: one line
        if canonical not in names:
            names.append(canonical)
    if not names:
        raise ConfigError("no runtime to measure in: give at least one of " + ", ".join(RUNTIMES.list()))
    return names


def _add_ratios(rows: list[dict[str, Any]], baselines: Sequence[str], runtimes: Sequence[str] = ()) -> None:
    """``deploy_vs_train`` on deploy rows; ``vs_<baseline>`` (img/s ratio) on every row, within its
    runtime; with several runtimes, ``vs_<first runtime>`` on every row (the same net's ratio)."""
    by_key = {(r["model"], r["form"], r["runtime"]): r for r in rows}
    for r in rows:
        rt = r["runtime"]
        train = by_key.get((r["model"], "train", rt))
        r["deploy_vs_train"] = r["img_s"] / train["img_s"] if r["form"] == "deploy" and train else None
        for b in baselines:
            base = by_key.get((b, "baseline", rt))
            r[f"vs_{b}"] = r["img_s"] / base["img_s"] if base else None
    if len(runtimes) > 1:
        first = runtimes[0]
        for r in rows:
            same = by_key.get((r["model"], r["form"], first))
            r[f"vs_{first}"] = r["img_s"] / same["img_s"] if same else None


def repeatability(
    model: str,
    settings: MeasureSettings | None = None,
    n: int = 5,
    *,
    form: str = "deploy",
    num_classes: int = 1000,
    wait_idle_s: float = 0.0,
    idle_threshold: float = 0.15,
    retries: int = 3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure one net ``n`` times in this process; CV across the ``n`` medians.

    This is the figure that says whether two measurements in a study can be
    compared at all: the search ranks architectures by differences of this size.
    A measurement flagged ``contended`` (other processes held the CPU
    throughout) says nothing about repeatability, so it is retried up to
    ``retries`` times; the count of such retries is reported.
    """
    if n < 2:
        raise ConfigError(f"repeatability needs n >= 2 measurements, got {n}")
    if form not in ("deploy", "train"):
        raise ConfigError(f"form = {form!r} is invalid; allowed: deploy, train")
    settings = (settings or MeasureSettings()).resolved()
    entry = zoo.get_entry(model)
    spec = entry.spec(num_classes=num_classes)
    net = build_model(spec, deploy=form == "deploy")
    runs: list[Measurement] = []
    retried = 0
    for i in range(n):
        for attempt in range(retries + 1):
            if wait_idle_s > 0:
                wait_for_idle(idle_threshold, wait_idle_s, progress)
            m = measure_model(net, settings, in_channels=spec.in_channels)
            if progress:
                flag = ""
                if m.contended:
                    flag = " (CONTENDED, retrying)" if attempt < retries else " (CONTENDED)"
                progress(
                    f"[repeat {i + 1}/{n}] {entry.name} {form}: {m.images_per_s:.1f} img/s "
                    f"(cv {m.cv:.1%}, {m.dropped_repeats} repeats dropped){flag}"
                )
            if not m.contended or attempt == retries:
                break
            retried += 1
        runs.append(m)
    ips = [m.images_per_s for m in runs]
    loads = [m.env.get("other_cpu_load") for m in runs if m.env.get("other_cpu_load") is not None]
    return {
        "model": entry.name,
        "form": form,
        "n": n,
        "img_s": ips,
        "mean_img_s": statistics.fmean(ips),
        "median_img_s": statistics.median(ips),
        "stdev_img_s": statistics.pstdev(ips),
        "cv": _cv(ips),
        "within_cv": [m.cv for m in runs],
        "other_cpu_load": max(loads) if loads else None,
        "contended": any(m.contended for m in runs),
        "contended_retries": retried,
        "device_name": runs[0].env["device_name"],
        "settings": settings.to_dict(),
    }


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` as CSV atomically (:func:`~repvgg_nas.files.atomic_write`).

    The columns are every key of every row, in order of first appearance;
    ``None`` is written as an empty cell.
    """
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})

    return atomic_write(path, write)
