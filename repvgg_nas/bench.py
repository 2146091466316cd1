"""``python -m repvgg_nas.bench``: train-form vs deploy-form vs ResNet throughput.

RepVGG's claim is that the fused plain net is faster than both its own
multi-branch training form and ResNets of similar accuracy, and that FLOPs do
not predict this. This module measures all of them in one process under one
:class:`~repvgg_nas.measure.MeasureSettings`, so the ratios are comparable:

- :func:`run_benchmark` returns one dict per (model, form) with img/s,
  latency, params, MACs and the ratios deploy/train and vs every baseline;
  the nets of a round are timed in lockstep so the machine's drift cancels
  out of the ratios;
- :func:`repeatability` measures one model N times in one process and
  reports the coefficient of variation across the N figures;
- every row carries the achieved TFLOP/s (2 FLOPs per MAC at the measured
  img/s) and, on a GPU whose dense fp16 tensor peak is known
  (:data:`DENSE_FP16_PEAK_TFLOPS`, or ``--peak-tflops``), its share of it;
- :func:`main` is the thin CLI around them (table on stdout, progress on
  stderr, CSV to ``reports/bench/bench.csv`` unless ``--out`` says otherwise).

Baselines are torchvision ResNets built with ``weights=None`` (speed does not
depend on weights, and nothing is downloaded).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import zoo
from .cli import format_table, run_cli
from .counting import complexity, count_macs, count_params
from .errors import ConfigError
from .measure import MeasureSettings, Measurement, cpu_busy_fraction, measure_model, measure_models
from .model import build_model
from .registry import Registry

__all__ = [
    "BASELINES",
    "DEFAULT_OUT",
    "DENSE_FP16_PEAK_TFLOPS",
    "dense_fp16_peak",
    "baseline_model",
    "baseline_complexity",
    "parse_names",
    "run_benchmark",
    "repeatability",
    "table_rows",
    "write_csv",
    "wait_for_idle",
    "main",
]

DEFAULT_OUT = Path("reports/bench/bench.csv")

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

Progress = Callable[[str], None]


def _resnet(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision  # imported lazily: only the bench needs it

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


BASELINES: Registry[Callable[[int], nn.Module]] = Registry("baseline")
for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    BASELINES.register(_name, _resnet(_name))


def parse_names(text: str | Iterable[str] | None) -> list[str]:
    """``"A0, B0"`` -> ``["A0", "B0"]``; ``none`` or empty gives no names."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in items if n.strip()]
    return [] if [n.lower() for n in names] == ["none"] else names


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
) -> list[dict[str, Any]]:
    """Measure train form, deploy form and baselines; one dict per (model, form).

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
    jobs = _jobs(models, baselines, settings.resolution, num_classes)
    nets = {job.label: job.build() for job in jobs}
    results: list[list[Measurement]] = [[] for _ in jobs]
    busy: list[float] = []
    for r in range(rounds):
        if wait_idle_s > 0:
            b = wait_for_idle(idle_threshold, wait_idle_s, progress)
            if b is not None:
                busy.append(b)
        if progress:
            progress(f"[round {r + 1}/{rounds}] measuring {len(jobs)} nets in lockstep: "
                     f"{', '.join(nets)} ...")
        # Nets are ours: no copies; conversion to the memory format is idempotent.
        ms = measure_models(nets, settings, copy_models=False)
        for i, job in enumerate(jobs):
            m = ms[job.label]
            results[i].append(m)
            if progress:
                note = f", {m.dropped_repeats} repeats dropped" if m.dropped_repeats else ""
                if m.contended:
                    note += " (CONTENDED: too few clean repeats)"
                progress(
                    f"[round {r + 1}/{rounds}] {job.label}: {m.images_per_s:.1f} img/s, "
                    f"{m.latency_ms:.1f} ms/batch, cv {m.cv:.1%} over {m.repeats} repeats{note}"
                )
        other = next(iter(ms.values())).env.get("other_cpu_load")
        if progress and other is not None and settings.device == "cpu":
            progress(f"[round {r + 1}/{rounds}] other processes used {other:.0%} of the cpu meanwhile")
    rows = [_row(job, ms_, busy, settings) for job, ms_ in zip(jobs, results)]
    _add_ratios(rows, [BASELINES.canonical(b) for b in baselines])
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
    }


def _add_ratios(rows: list[dict[str, Any]], baselines: Sequence[str]) -> None:
    """``deploy_vs_train`` on deploy rows; ``vs_<baseline>`` (img/s ratio) on every row."""
    by_key = {(r["model"], r["form"]): r for r in rows}
    for r in rows:
        train = by_key.get((r["model"], "train"))
        r["deploy_vs_train"] = r["img_s"] / train["img_s"] if r["form"] == "deploy" and train else None
        for b in baselines:
            base = by_key.get((b, "baseline"))
            r[f"vs_{b}"] = r["img_s"] / base["img_s"] if base else None


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The printed subset of :func:`run_benchmark` rows, rounded for reading."""

    def rnd(v: Any, n: int) -> Any:
        return round(v, n) if isinstance(v, float) else v

    out = []
    for r in rows:
        t = {
            "model": r["model"],
            "form": r["form"],
            "img/s": rnd(r["img_s"], 1),
            "ms/batch": rnd(r["latency_ms"], 2),
            "params M": rnd(r["params_m"], 2),
            "GMACs": rnd(r["gmacs"], 2),
            "TFLOP/s": rnd(r["tflops"], 3),
            "cv %": rnd(100 * r["cv"], 1),
            "deploy/train": rnd(r["deploy_vs_train"], 2),
        }
        for k in r:
            if k.startswith("vs_"):
                t[k.replace("_", " ", 1)] = rnd(r[k], 2)
        if r.get("pct_fp16_peak") is not None:
            t["% fp16 peak"] = rnd(100 * r["pct_fp16_peak"], 1)
        out.append(t)
    return out


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
    """Write ``rows`` as CSV atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---- CLI -------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (exit 2 via run_cli)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    d = MeasureSettings()
    p = _Parser(
        prog="python -m repvgg_nas.bench",
        description=(
            "Measure throughput of RepVGG train form, deploy form and ResNet baselines "
            "under one set of settings and print the ratios."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="A0", help="comma-separated zoo names (A0 or RepVGG-A0)")
    p.add_argument("--baselines", default="resnet18,resnet34,resnet50",
                   help=f"comma-separated baselines from {', '.join(BASELINES)}; 'none' for none")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--resolution", type=int, default=d.resolution, help="input height = width")
    p.add_argument("--dtype", default=d.dtype, help="fp32, tf32, fp16, bf16 (only fp32 on cpu)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="wrap models in torch.compile")
    p.add_argument("--compile-mode", default=d.compile_mode, help="torch.compile mode")
    p.add_argument("--cuda-graphs", action="store_true", help="time CUDA graph replays (cuda only)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's current count, recorded)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed forward passes")
    p.add_argument("--repeats", type=int, default=d.min_repeats, help="minimum timed repeats")
    p.add_argument("--max-repeats", type=int, default=d.max_repeats)
    p.add_argument("--target-cv", type=float, default=d.target_cv,
                   help="stop repeating once the robust CV is below this")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="time budget of one measurement's timed loop")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every model this many times, interleaved; report medians")
    p.add_argument("--repeatability", type=int, default=0, metavar="N",
                   help="also measure each model's deploy form N times and report the CV")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense fp16 peak, for the '%% fp16 peak' column (default: known "
                   "for H100/H200/A100 from the device name)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each measurement wait up to this long for other processes to leave the CPU")
    p.add_argument("--idle-threshold", type=float, default=0.15,
                   help="machine CPU busy fraction counted as idle for --wait-idle")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="CSV path (repeatability goes to <stem>_repeatability.csv)")
    p.add_argument("--no-csv", action="store_true", help="print only, write no CSV")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = MeasureSettings(
        device=args.device, batch_size=args.batch_size, resolution=args.resolution,
        dtype=args.dtype, channels_last=args.channels_last, compile=args.compile,
        compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs, threads=args.threads,
        warmup=args.warmup, min_repeats=args.repeats,
        max_repeats=max(args.max_repeats, args.repeats), target_cv=args.target_cv,
        max_seconds=args.max_seconds,
    ).resolved()
    if args.num_classes < 1:
        raise ConfigError(f"--num-classes = {args.num_classes} is invalid; allowed: an integer >= 1")
    models, baselines = parse_names(args.models), parse_names(args.baselines)
    for name in models:
        zoo.get_entry(name)  # fail on a typo before anything is measured
    for name in baselines:
        BASELINES.canonical(name)

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    rows = run_benchmark(
        models, baselines, settings, num_classes=args.num_classes, rounds=args.rounds,
        wait_idle_s=args.wait_idle, idle_threshold=args.idle_threshold, progress=progress,
        peak_tflops=args.peak_tflops,
    )
    env = f"{rows[0]['device_name']} | torch {rows[0]['torch']} | threads {rows[0]['threads']}"
    print(f"# {env} | {settings.dtype} batch {settings.batch_size} {settings.resolution}x"
          f"{settings.resolution} channels_last={settings.channels_last} compile={settings.compile}")
    print(format_table(table_rows(rows)))

    rep_rows = []
    if args.repeatability:
        for name in models:
            rep = repeatability(name, settings, args.repeatability, num_classes=args.num_classes,
                                wait_idle_s=args.wait_idle, idle_threshold=args.idle_threshold,
                                progress=progress)
            rep_rows.append(rep)
            runs = ", ".join(f"{v:.1f}" for v in rep["img_s"])
            print(f"repeatability {rep['model']} {rep['form']}: {rep['n']} runs [{runs}] img/s, "
                  f"mean {rep['mean_img_s']:.1f}, CV {rep['cv']:.2%}")
    if not args.no_csv:
        path = write_csv(rows, args.out)
        print(f"wrote {path}", file=sys.stderr)
        if rep_rows:
            flat = [
                {**{k: v for k, v in r.items() if k not in ("img_s", "within_cv", "settings")},
                 **{f"run{i + 1}_img_s": v for i, v in enumerate(r["img_s"])}}
                for r in rep_rows
            ]
            rpath = write_csv(flat, args.out.with_name(f"{args.out.stem}_repeatability.csv"))
            print(f"wrote {rpath}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
