"""The whole pruning job: prune, measure in lockstep, fine-tune; figures for every stage as data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..counting import complexity
from ..data import DataBundle
from ..measure import MeasureSettings, Measurement, ThroughputCache
from ..model import RepVGG, is_deploy
from ..spec import RepVGGSpec
from ..train import StepCallback, TrainConfig, evaluate
from .channels import prune_channels
from .deploy import as_deploy
from .finetuning import finetune
from .settings import PruneJob
from .speedup import measure_pair, prune_to_speedup

__all__ = ["StageFigures", "PruneResult", "run_prune"]


@dataclass(frozen=True)
class StageFigures:
    """What one stage of a pruning job (``original``, ``pruned``, ``fine-tuned``) measured.

    ``speedup`` and ``macs_reduction`` are relative to the original net.
    Throughput of the pruned and fine-tuned stages is the same measurement
    (speed does not depend on weights).
    """

    stage: str
    spec: RepVGGSpec
    accuracy: float
    images_per_s: float
    latency_ms: float
    params: int
    macs: int
    speedup: float
    macs_reduction: float


@dataclass
class PruneResult:
    """The pruned (and fine-tuned) model and the figures of every stage, original first.

    ``met`` is False when a target speed-up could not be reached (the fastest
    step was kept); ``note`` then says so in words.
    """

    model: RepVGG
    stages: list[StageFigures]
    met: bool
    note: str

    @property
    def original(self) -> StageFigures:
        return self.stages[0]

    @property
    def final(self) -> StageFigures:
        """The figures of the returned model (fine-tuned when it was)."""
        return self.stages[-1]


def run_prune(
    model: nn.Module,
    job: PruneJob,
    data: DataBundle,
    measure: MeasureSettings,
    train_base: TrainConfig | None = None,
    device: Any = "cpu",
    cache: ThroughputCache | None = None,
    progress: StepCallback | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> PruneResult:
    """Prune ``model`` per ``job``, fine-tune it, and measure every stage.

    The original and the pruned net are timed in lockstep, so the reported
    speed-up is one ratio from one stretch of time. ``log`` receives progress
    lines; ``progress`` is called after every fine-tuning step.
    """
    cache = cache if cache is not None else ThroughputCache()
    if not is_deploy(model):
        log("input is train-form: fusing it into the deploy form first")
    base_model = as_deploy(model).to(device)
    spec = base_model.spec
    data = data.to(device)
    acc0 = evaluate(base_model, data, device)
    met, note = True, ""
    if job.ratio is not None:
        pruned = prune_channels(base_model, job.ratio, job.settings, data, data.resolution)
        m0, m1 = measure_pair(spec, pruned.spec, measure, cache)
    else:
        res = prune_to_speedup(
            base_model, job.target_speedup, measure, job.settings, data, cache, data.resolution,
            on_step=lambda s: log(f"  pruned {s.ratio:.0%} of channels: {s.speedup:.2f}x measured, "
                                  f"{s.macs / 1e9:.3f} GMACs"),
        )
        pruned, met, m0, m1 = res.model, res.met, res.baseline, res.measurement
        if not met:
            note = (f"target {job.target_speedup:g}x cannot be met (max_layer_ratio "
                    f"{job.settings.max_layer_ratio:g}); kept the fastest step, {res.best.speedup:.2f}x")
    pruned = pruned.to(device)
    macs0 = complexity(spec, resolution=measure.resolution).macs

    def figures(stage: str, net: RepVGG, acc: float, m: Measurement) -> StageFigures:
        cx = complexity(net.spec, resolution=measure.resolution)
        return StageFigures(
            stage=stage, spec=net.spec, accuracy=acc, images_per_s=m.images_per_s, latency_ms=m.latency_ms,
            params=cx.params, macs=cx.macs, speedup=m.images_per_s / m0.images_per_s,
            macs_reduction=macs0 / cx.macs,
        )

    stages = [figures("original", base_model, acc0, m0)]
    stages.append(figures("pruned", pruned, evaluate(pruned, data, device), m1))
    if job.finetune_epochs > 0:
        teacher = base_model if job.distill else None
        pruned = finetune(pruned, data, job.finetune_epochs, job.finetune_mode, train_base, device, progress, teacher)
        stages.append(figures("fine-tuned", pruned, evaluate(pruned, data, device), m1))
    return PruneResult(pruned.eval(), stages, met, note)
