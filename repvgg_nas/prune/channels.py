"""Pruning a deploy net by a channel ratio, and the pieces every pruning run shares.

A plain conv3x3+ReLU stack has no residual adds tying channels together, so
every layer's width can shrink independently: torch-pruning's dependency
graph adjusts the next conv's input channels (and the classifier's inputs),
and keeps groupwise layers consistent per group. The result is a new spec
with per-layer widths and a model rebuilt from it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from torch import nn

from ..data import DataBundle
from ..errors import ConfigError
from ..model import RepVGG
from .calibration import recalibrate
from .deploy import Kept, as_deploy, deploy_spec_of, depthwise_layers, full_kept, rebuild, too_far
from .settings import NEEDS_GRADIENTS, PruneSettings, check_ratio

if TYPE_CHECKING:
    from .layer import LayerPruner
    from .stage import StagePruner

__all__ = ["make_pruner", "taylor_gradients", "reference_net", "finish", "prune_channels"]


def make_pruner(
    model: RepVGG, settings: PruneSettings, ratio: float, steps: int, resolution: int
) -> LayerPruner | StagePruner:
    """The pruner ``settings`` ask for, reaching cumulative ``ratio`` in ``steps`` steps."""
    # torch-pruning is imported only when a net is pruned: importing the package
    # (and loading a study's [prune] table) does not pull it in.
    if settings.align_stages:
        from .stage import StagePruner

        return StagePruner(model, settings, ratio, steps, resolution)
    from .layer import LayerPruner

    return LayerPruner(model, settings, ratio, steps, resolution)


def taylor_gradients(model: nn.Module, data: DataBundle | None, batches: int) -> None:
    """Leave loss gradients on ``model`` for the criteria in ``NEEDS_GRADIENTS``."""
    if data is None:
        raise ConfigError("the taylor criterion needs training data for its gradients")
    model.zero_grad()
    model.train()
    device = next(model.parameters()).device
    data = data.to(device)
    n = 0
    for x, y in data.val_batches(64):
        nn.functional.cross_entropy(model(x), y).backward()
        n += 1
        if n >= batches:
            break
    model.eval()


def reference_net(work: RepVGG, data: DataBundle | None, settings: PruneSettings) -> RepVGG | None:
    """The unpruned net, kept for :func:`recalibrate` when it will run."""
    return copy.deepcopy(work) if settings.recalibrate and data is not None else None


def finish(pruned: RepVGG, original: RepVGG | None, kept: Kept, data: DataBundle | None, settings: PruneSettings) -> RepVGG:
    """Recalibrate ``pruned`` against ``original`` when there is one; eval mode."""
    if original is not None and data is not None:
        recalibrate(pruned, original.to(next(pruned.parameters()).device), kept, data, settings.calibration_images)
    return pruned.eval()


def prune_channels(
    model: nn.Module,
    ratio: float,
    settings: PruneSettings | None = None,
    data: DataBundle | None = None,
    resolution: int = 32,
) -> RepVGG:
    """Remove ``ratio`` of the channels (per layer, or globally) from a deploy model.

    A train-form input is fused first. Returns a new model of a new spec; the
    input is left untouched. ``ratio == 0`` returns an identical copy.
    """
    settings = settings or PruneSettings()
    ratio = check_ratio(ratio)
    work = as_deploy(model)
    if ratio == 0:
        return work.eval()
    original = reference_net(work, data, settings)
    kept = full_kept(work)
    pruner = make_pruner(work, settings, ratio, 1, resolution)
    if settings.importance in NEEDS_GRADIENTS:
        taylor_gradients(work, data, settings.taylor_batches)
    pruner.step(kept)
    work.zero_grad(set_to_none=True)
    if depthwise_layers(deploy_spec_of(work, work.spec)):
        raise too_far(ratio)
    return finish(rebuild(work, work.spec), original, kept, data, settings)
