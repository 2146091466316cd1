from __future__ import annotations

import pytest
import torch

from repvgg_nas import RepVGGSpec

torch.set_num_threads(2)


@pytest.fixture
def tiny_spec() -> RepVGGSpec:
    return RepVGGSpec.from_paper((1, 1, 2, 2, 1), 0.25, 0.25, num_classes=10, g=2, groupwise="even")


@pytest.fixture(scope="module")
def tiny() -> RepVGGSpec:
    """The smallest paper-shaped net: one block per stage, a = b = 0.25, 10 classes."""
    return RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=10)


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path_factory, monkeypatch):
    """Every test gets an empty cache folder of its own: nothing reads or writes the user's ~/.cache."""
    from repvgg_nas.layout import CACHE_DIR_ENV

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path_factory.mktemp("cache")))
