from __future__ import annotations

import pytest
import torch
from torch import nn

from repvgg_nas import RepVGGSpec

torch.set_num_threads(2)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, so fusion is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.fixture
def tiny_spec() -> RepVGGSpec:
    return RepVGGSpec.from_paper((1, 1, 2, 2, 1), 0.25, 0.25, num_classes=10, g=2, groupwise="even")
