"""Pruning until a *measured* speed-up is reached, timing the unpruned and pruned net in lockstep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..counting import complexity
from ..data import DataBundle
from ..errors import ConfigError
from ..measure import MeasureMany, MeasureSettings, Measurement, ThroughputCache, measure_specs
from ..model import RepVGG, build_model
from ..spec import RepVGGSpec
from .channels import finish, make_pruner, reference_net, taylor_gradients
from .deploy import Kept, as_deploy, deploy_spec_of, depthwise_layers, full_kept, rebuild, too_far
from .settings import NEEDS_GRADIENTS, PruneSettings

__all__ = ["Pair", "measure_pair", "PruneStep", "SpeedupResult", "prune_to_speedup"]


class Pair(NamedTuple):
    """The unpruned and the pruned net, measured together."""

    original: Measurement
    pruned: Measurement

    @property
    def speedup(self) -> float:
        return self.pruned.images_per_s / self.original.images_per_s


def measure_pair(
    original: RepVGGSpec, pruned: RepVGGSpec, measure: MeasureSettings, cache: ThroughputCache | None,
    measure_lockstep: MeasureMany = measure_specs,
) -> Pair:
    """Time fresh nets of both specs in lockstep: the ratio is immune to the machine's drift.
    ``measure_lockstep`` (default :func:`repvgg_nas.measure.measure_specs`) is passed in so tests can fake it."""
    pair = measure_lockstep({"original": original, "pruned": pruned}, measure, cache)
    return Pair(pair["original"], pair["pruned"])


@dataclass(frozen=True)
class PruneStep:
    """One step of the speed-up loop: the cumulative ratio, its spec and its measured figures."""

    ratio: float
    spec: RepVGGSpec
    images_per_s: float
    speedup: float
    macs: int
    params: int


@dataclass
class SpeedupResult:
    """``baseline`` and ``measurement``: the unpruned and the kept net, measured in lockstep.

    ``kept`` names, for every block conv, the original output channels it kept
    (what :func:`recalibrate` needs when it was not run here).
    """

    model: RepVGG
    met: bool
    target: float
    baseline: Measurement
    best: PruneStep
    steps: list[PruneStep]
    measurement: Measurement
    kept: Kept


def prune_to_speedup(
    model: nn.Module,
    target: float,
    measure: MeasureSettings,
    settings: PruneSettings | None = None,
    data: DataBundle | None = None,
    cache: ThroughputCache | None = None,
    resolution: int = 32,
    on_step: Callable[[PruneStep], None] | None = None,
    measure_lockstep: MeasureMany = measure_specs,
) -> SpeedupResult:
    """Prune in steps of ``settings.step`` until the *measured* speed-up reaches ``target``.

    Throughput is measured with :mod:`repvgg_nas.measure` after every step, on
    fresh nets of the step's spec and of the unpruned spec timed in lockstep
    (speed does not depend on weights; the ratio does not depend on drift). When the
    target cannot be met before ``max_layer_ratio``, the fastest step is kept
    and ``met`` is False. With ``data``, the kept model is recalibrated
    (``settings.recalibrate``). ``measure_lockstep``: see :func:`measure_pair`.
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 1:
        raise ConfigError(f"target speed-up must be a number > 1, got {target!r}")
    settings = settings or PruneSettings()
    work = as_deploy(model)
    original = reference_net(work, data, settings)
    kept = full_kept(work)
    spec = work.spec
    cache = cache if cache is not None else ThroughputCache()
    n_steps = max(1, round(settings.max_layer_ratio / settings.step))
    pruner = make_pruner(work, settings, settings.max_layer_ratio, n_steps, resolution)
    steps: list[PruneStep] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_kept: Kept = kept
    best: PruneStep | None = None
    best_pair: Pair | None = None
    for i in range(n_steps):
        if settings.importance in NEEDS_GRADIENTS:
            taylor_gradients(work, data, settings.taylor_batches)
        pruner.step(kept)
        work.zero_grad(set_to_none=True)
        if depthwise_layers(deploy_spec_of(work, spec)):  # per-layer only: stop before torch-pruning breaks
            if best is None:
                raise too_far(settings.step)
            break
        step_spec = deploy_spec_of(work, spec)
        pair = measure_pair(spec, step_spec, measure, cache, measure_lockstep)
        cx = complexity(step_spec, resolution=measure.resolution)
        step = PruneStep(
            ratio=settings.max_layer_ratio * (i + 1) / n_steps,
            spec=step_spec,
            images_per_s=pair.pruned.images_per_s,
            speedup=pair.speedup,
            macs=cx.macs,
            params=cx.params,
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if best is None or step.speedup > best.speedup:
            best = step
            best_state = {k: v.detach().clone() for k, v in work.state_dict().items()}
            best_kept = dict(kept)
            best_pair = pair
        if step.speedup >= target:
            break
    assert best is not None and best_state is not None and best_pair is not None
    met = best.speedup >= target
    if not met or steps[-1] is not best or deploy_spec_of(work, spec) != best.spec:
        work = build_model(best.spec, deploy=True).to(next(work.parameters()).device)
        work.load_state_dict(best_state)
    final = finish(rebuild(work, spec), original, best_kept, data, settings)
    return SpeedupResult(final, met, float(target), best_pair.original, best, steps, best_pair.pruned, best_kept)
