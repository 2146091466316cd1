"""Parameter and multiply-accumulate counts of a spec.

MACs come from torch's own ``FlopCounterMode`` (FLOPs / 2, the paper's
convention) run on the ``meta`` device, so counting a B3 at 224x224 costs no
memory and no arithmetic.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from .model import build_model
from .spec import RepVGGSpec

__all__ = ["Complexity", "complexity", "count_macs", "count_params"]


class Complexity(NamedTuple):
    params: int
    macs: int


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@lru_cache(maxsize=1024)
def _complexity(spec: RepVGGSpec, resolution: int, deploy: bool) -> Complexity:
    with torch.device("meta"):
        model = build_model(spec, deploy=deploy).eval()
        x = torch.empty(1, spec.in_channels, resolution, resolution)
    return Complexity(count_params(model), count_macs(model, x))


def count_macs(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of ``model(example)`` (FlopCounterMode FLOPs / 2).

    Works on any module, e.g. a torchvision baseline; build it and the input
    on the ``meta`` device to count without memory or arithmetic.
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example)
    return counter.get_total_flops() // 2


def complexity(spec: RepVGGSpec, resolution: int = 224, deploy: bool = True) -> Complexity:
    """Params and MACs for one image at ``resolution`` (deploy form by default)."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return _complexity(spec, int(resolution), bool(deploy))
