"""The deploy net being pruned: its block convs, which channels they kept, its spec.

Shared by both pruners, recalibration and the speed-up loop. A pruned net
is always rebuilt from its new spec (:func:`rebuild`), so no pruning hooks
or torch-pruning state survive into a checkpoint.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..model import PlainBlock, RepVGG, build_model, is_deploy, reparameterize
from ..spec import RepVGGSpec

__all__ = [
    "Kept", "deploy_spec_of", "as_deploy", "depthwise_layers", "too_far", "rebuild",
    "block_convs", "full_kept", "drop", "example_input",
]

Kept = dict[str, torch.Tensor]  # block conv name -> indices of its original output channels still there


def deploy_spec_of(model: nn.Module, like: RepVGGSpec) -> RepVGGSpec:
    """The spec of a (possibly pruned) deploy model: per-layer widths read from its convs."""
    blocks = [m for m in model.modules() if isinstance(m, PlainBlock)]
    return like.replace(
        widths=tuple(b.reparam.out_channels for b in blocks),
        groups=tuple(b.reparam.groups for b in blocks),
    )


def as_deploy(model: nn.Module) -> RepVGG:
    """A deploy copy of ``model`` that can be pruned (train-form input is fused first)."""
    if not isinstance(model, RepVGG):
        raise ConfigError(f"expected a RepVGG model, got {type(model).__name__}")
    if model.spec.use_se:
        raise ConfigError(
            "pruning SE models (RepVGG-D2se) is not supported: the SE hidden width is not "
            "part of the per-layer spec"
        )
    bad = depthwise_layers(model.spec)
    if bad:
        raise ConfigError(
            f"pruning nets with depthwise layers (groups == channels, layer {bad[0]}) is not "
            "supported: torch-pruning prunes them as depthwise convs, which changes their groups"
        )
    return copy.deepcopy(model) if is_deploy(model) else reparameterize(model)


def depthwise_layers(spec: RepVGGSpec) -> list[int]:
    """Layers whose in or out channels equal their groups (g > 1)."""
    return [i for i, (cin, cout, g) in enumerate(zip(spec.in_widths, spec.widths, spec.groups))
            if g > 1 and g in (cin, cout)]


def too_far(ratio: float) -> ConfigError:
    return ConfigError(
        f"pruning {ratio:.0%} per layer shrinks a groupwise layer to its group count, which "
        "torch-pruning would turn into a depthwise conv; use a smaller ratio or max_layer_ratio, "
        "or the default stage-aligned pruning (which never goes that far)"
    )


def rebuild(pruned: nn.Module, spec: RepVGGSpec) -> RepVGG:
    """A clean RepVGG of the pruned spec holding the pruned weights (no pruning hooks left)."""
    new_spec = deploy_spec_of(pruned, spec)
    p = next(pruned.parameters())
    model = build_model(new_spec, deploy=True).to(p.device)
    model.load_state_dict(pruned.state_dict())
    return model.eval()


def block_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The block convs of a deploy model by module name (the same names before and after pruning)."""
    return {f"{name}.reparam": m.reparam for name, m in model.named_modules() if isinstance(m, PlainBlock)}


def full_kept(model: nn.Module) -> Kept:
    """Every block conv keeps all its channels (before the first pruning step)."""
    return {n: torch.arange(c.out_channels) for n, c in block_convs(model).items()}


def drop(kept: Kept, name: str, idxs: Any) -> None:
    """Record that conv ``name`` lost the channels at (current) positions ``idxs``."""
    keep = torch.ones(len(kept[name]), dtype=torch.bool)
    keep[list(idxs)] = False
    kept[name] = kept[name][keep]


def example_input(model: RepVGG, resolution: int) -> torch.Tensor:
    """One random image, what torch-pruning traces the dependency graph with."""
    p = next(model.parameters())
    return torch.randn(1, model.spec.in_channels, resolution, resolution, device=p.device)
