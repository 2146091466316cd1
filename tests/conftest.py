from __future__ import annotations

import pytest
import torch

from repvgg_nas import RepVGGSpec

torch.set_num_threads(2)


@pytest.fixture
def tiny_spec() -> RepVGGSpec:
    return RepVGGSpec.from_paper((1, 1, 2, 2, 1), 0.25, 0.25, num_classes=10, g=2, groupwise="even")
