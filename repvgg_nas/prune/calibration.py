"""Recalibration: give every kept channel of a pruned net the output statistics it had.

A plain net has no BatchNorm left to re-normalize after channels go; this
restores what BN would have, folded into the convs so the net stays plain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..data import DataBundle
from ..model import RepVGG
from .deploy import Kept, block_convs

__all__ = ["recalibrate"]


@torch.no_grad()
def recalibrate(pruned: RepVGG, original: RepVGG, kept: Kept, data: DataBundle, images: int = 256) -> RepVGG:
    """Give every kept channel of ``pruned`` the pre-activation statistics it had in ``original``.

    A plain net has no BatchNorm to re-normalize after channels go: every
    removed channel shifts the next layer's inputs, and over 20+ layers the
    shifts compound (a trained A0 pruned by a quarter is at chance). This is
    the deploy-form analogue of re-estimating BN statistics after pruning: in
    one pass over ``images`` unaugmented training images (a seeded random
    subset), layer by layer, the
    per-channel mean and std of each pruned conv's output are matched to the
    original's for the same channels, and the affine correction is folded into
    the conv (``w *= s``, ``b = (b - mean_p) * s + mean_o``), so the model keeps
    its architecture and stays plain. Channels that went dead (std ~ 0) are
    only shifted. Works in place on ``pruned``; returns it.
    """
    device = next(pruned.parameters()).device
    x = data.to(device).sample_images(images)  # seeded random subset: not one class
    target: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def stats(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        std, mean = torch.std_mean(out.float(), (0, 2, 3))  # no float64 copy of a whole activation
        return mean.double(), std.double()

    def record(name: str) -> Callable[..., None]:
        def hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
            mean, std = stats(out)
            target[name] = (mean[kept[name].to(device)], std[kept[name].to(device)])
        return hook

    def correct(name: str) -> Callable[..., torch.Tensor]:
        def hook(m: nn.Conv2d, inp: Any, out: torch.Tensor) -> torch.Tensor:
            mean_t, std_t = target[name]
            mean_p, std_p = stats(out)
            live = std_p > 1e-6 * std_p.max().clamp_min(1e-30)
            scale = torch.where(live, std_t / std_p.clamp_min(1e-30), torch.ones_like(std_p))
            shift = mean_t - mean_p * scale
            m.weight.mul_(scale.to(m.weight.dtype).view(-1, 1, 1, 1))
            m.bias.copy_((m.bias.double() * scale + shift).to(m.bias.dtype))
            return torch.addcmul(shift.to(out.dtype).view(1, -1, 1, 1), out, scale.to(out.dtype).view(1, -1, 1, 1))
        return hook

    for model, make in ((original, record), (pruned, correct)):
        was_training = model.training
        model.eval()
        hooks = [c.register_forward_hook(make(n)) for n, c in block_convs(model).items()]
        try:
            model(x)
        finally:
            for h in hooks:
                h.remove()
        model.train(was_training)
    return pruned
