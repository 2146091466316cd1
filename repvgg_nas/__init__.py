"""repvgg-nas: search, fuse, prune and benchmark RepVGG-style plain ConvNets."""

from __future__ import annotations

from .counting import Complexity, complexity, count_params
from .errors import (
    CheckpointError,
    ConfigError,
    RepVGGNasError,
    SpecError,
    UnknownNameError,
    WeightsError,
)
from .model import PlainBlock, RepVGG, RepVGGBlock, build_model, is_deploy, reparameterize
from .registry import Registry
from .spec import GROUPWISE_PATTERNS, RepVGGSpec, groupwise_layers, paper_widths
from . import zoo

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Complexity",
    "ConfigError",
    "GROUPWISE_PATTERNS",
    "PlainBlock",
    "Registry",
    "RepVGG",
    "RepVGGBlock",
    "RepVGGNasError",
    "RepVGGSpec",
    "SpecError",
    "UnknownNameError",
    "WeightsError",
    "build_model",
    "complexity",
    "count_params",
    "groupwise_layers",
    "is_deploy",
    "paper_widths",
    "reparameterize",
    "zoo",
]
