"""The whole pruning job: prune, measure in lockstep, fine-tune; figures for every stage as data.

Data is optional. Without it a net is still pruned (by a ratio, or to a
speed-up measured on random input) but not recalibrated, fine-tuned or
evaluated, and :attr:`PruneResult.note` says so. With ``new_head`` the
classifier is replaced for the data's classes (transfer to a new task) and
must then be fine-tuned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..counting import complexity
from ..data import DataBundle
from ..errors import ConfigError
from ..measure import MeasureMany, MeasureSettings, Measurement, ThroughputCache, measure_specs
from ..model import RepVGG, build_model, is_deploy
from ..spec import RepVGGSpec
from ..train import StepCallback, TrainConfig, evaluate
from .channels import prune_channels
from .deploy import as_deploy
from .finetuning import finetune
from .settings import NEEDS_GRADIENTS, PruneJob
from .speedup import measure_pair, prune_to_speedup

__all__ = ["StageFigures", "PruneResult", "run_prune", "replace_head"]


@dataclass(frozen=True)
class StageFigures:
    """What one stage of a pruning job (``original``, ``pruned``, ``fine-tuned``) measured.

    ``speedup`` and ``macs_reduction`` are relative to the original net.
    Throughput of the pruned and fine-tuned stages is the same measurement
    (speed does not depend on weights). ``accuracy`` is None when it was not
    measured: no data, or a new head not yet fine-tuned.
    """

    stage: str
    spec: RepVGGSpec
    accuracy: float | None
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
    step was kept); ``note`` then says so in words, as it says what was
    skipped for want of data. ``measurement`` is the pruned net's full
    measurement (its spread and whether other load contended it).
    """

    model: RepVGG
    stages: list[StageFigures]
    met: bool
    note: str
    measurement: Measurement | None = None

    @property
    def original(self) -> StageFigures:
        return self.stages[0]

    @property
    def final(self) -> StageFigures:
        """The figures of the returned model (fine-tuned when it was)."""
        return self.stages[-1]


@torch.no_grad()
def replace_head(model: RepVGG, num_classes: int) -> RepVGG:
    """A copy of ``model`` with a new, zero-initialized classifier for ``num_classes`` classes.

    For transfer to a new task: every conv keeps its weights, the spec's
    ``num_classes`` changes. Zeros (as Big Transfer initializes its heads)
    make the new head predict uniformly until fine-tuned, and add nothing to
    the magnitude of the last stage's channels that pruning ranks.
    """
    spec = model.spec.with_num_classes(num_classes)
    p = next(model.parameters())
    new = build_model(spec, deploy=is_deploy(model)).to(p.device)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    new.load_state_dict(state, strict=False)
    new.head.weight.zero_()
    new.head.bias.zero_()
    return new.eval()


def _check_data_needs(job: PruneJob, data: DataBundle | None, new_head: bool) -> list[str]:
    """Refuse what cannot run without data (or with a new head); return what will be skipped."""
    if data is None:
        for needed, what in ((new_head, "a new head (new_head)"), (job.distill, "distillation"),
                             (job.settings.importance in NEEDS_GRADIENTS,
                              f"the {job.settings.importance} criterion (loss gradients)")):
            if needed:
                raise ConfigError(f"{what} needs training data; give a dataset or drop it")
        skipped = ["accuracy"]
        if job.settings.recalibrate:
            skipped.insert(0, "recalibration")
        if job.finetune_epochs > 0:
            skipped.insert(-1, "fine-tuning")
        return skipped
    if new_head:
        if job.finetune_epochs < 1:
            raise ConfigError("a new head must be fine-tuned: finetune_epochs must be >= 1")
        if job.distill:
            raise ConfigError("distillation needs the teacher's classes; it cannot be combined with a new head")
        if job.settings.importance in NEEDS_GRADIENTS:
            raise ConfigError(f"the {job.settings.importance} criterion needs a trained head; "
                              f"with a new head use l1, l2 or lamp")
    return []


def run_prune(
    model: nn.Module,
    job: PruneJob,
    data: DataBundle | None,
    measure: MeasureSettings,
    train_base: TrainConfig | None = None,
    device: Any = "cpu",
    cache: ThroughputCache | None = None,
    progress: StepCallback | None = None,
    log: Callable[[str], None] = lambda s: None,
    new_head: bool = False,
    measure_lockstep: MeasureMany = measure_specs,
) -> PruneResult:
    """Prune ``model`` per ``job``, fine-tune it, and measure every stage.

    The original and the pruned net are timed in lockstep, so the reported
    speed-up is one ratio from one stretch of time. ``log`` receives progress
    lines; ``progress`` is called after every fine-tuning step.

    ``data=None``: prune without data; recalibration, fine-tuning and
    accuracy are skipped and the result's note says so (the taylor criterion,
    distillation and a new head need data and are refused). ``new_head``:
    replace the classifier by a zero-initialized one for ``data``'s classes
    before pruning (:func:`replace_head`), then fine-tune it with the net.
    ``measure_lockstep`` times nets in lockstep (:func:`repvgg_nas.measure.measure_specs`; tests pass a fake).
    """
    cache = cache if cache is not None else ThroughputCache()
    skipped = _check_data_needs(job, data, new_head)
    if not is_deploy(model):
        log("input is train-form: fusing it into the deploy form first")
    base_model = as_deploy(model).to(device)
    if data is not None:
        data = data.to(device)
        if data.in_channels != base_model.spec.in_channels:
            raise ConfigError(f"the model takes {base_model.spec.in_channels}-channel images but the data "
                              f"({data.name}) has {data.in_channels} channels")
        if new_head:
            base_model = replace_head(base_model, data.num_classes)
            log(f"new zero-initialized {data.num_classes}-class head; it is trained by the fine-tuning")
        elif data.num_classes != base_model.spec.num_classes:
            raise ConfigError(f"the model predicts {base_model.spec.num_classes} classes but the data "
                              f"({data.name}) has {data.num_classes}; replace the head (new_head) to transfer it")
    spec = base_model.spec
    scored = data is not None and not new_head  # a zero head's accuracy says nothing

    def accuracy(net: RepVGG) -> float | None:
        return evaluate(net, data, device) if scored and data is not None else None

    acc0 = accuracy(base_model)
    resolution = data.resolution if data is not None else measure.resolution
    met, notes = True, []
    if job.ratio is not None:
        pruned = prune_channels(base_model, job.ratio, job.settings, data, resolution)
        m0, m1 = measure_pair(spec, pruned.spec, measure, cache, measure_lockstep)
    else:
        res = prune_to_speedup(
            base_model, job.target_speedup, measure, job.settings, data, cache, resolution,
            on_step=lambda s: log(f"  pruned {s.ratio:.0%} of channels: {s.speedup:.2f}x measured, "
                                  f"{s.macs / 1e9:.3f} GMACs"),
            measure_lockstep=measure_lockstep,
        )
        pruned, met, m0, m1 = res.model, res.met, res.baseline, res.measurement
        if not met:
            notes.append(f"target {job.target_speedup:g}x cannot be met (max_layer_ratio "
                         f"{job.settings.max_layer_ratio:g}); kept the fastest step, {res.best.speedup:.2f}x")
    if skipped:
        notes.append(f"no data: skipped {', '.join(skipped)} (speed was measured on random input)")
    pruned = pruned.to(device)
    macs0 = complexity(spec, resolution=measure.resolution).macs

    def figures(stage: str, net: RepVGG, acc: float | None, m: Measurement) -> StageFigures:
        cx = complexity(net.spec, resolution=measure.resolution)
        return StageFigures(
            stage=stage, spec=net.spec, accuracy=acc, images_per_s=m.images_per_s, latency_ms=m.latency_ms,
            params=cx.params, macs=cx.macs, speedup=m.images_per_s / m0.images_per_s,
            macs_reduction=macs0 / cx.macs,
        )

    stages = [figures("original", base_model, acc0, m0)]
    stages.append(figures("pruned", pruned, accuracy(pruned), m1))
    if job.finetune_epochs > 0 and data is not None:
        teacher = base_model if job.distill else None
        pruned = finetune(pruned, data, job.finetune_epochs, job.finetune_mode, train_base, device, progress, teacher)
        stages.append(figures("fine-tuned", pruned, evaluate(pruned, data, device), m1))
    return PruneResult(pruned.eval(), stages, met, "; ".join(notes), m1)
