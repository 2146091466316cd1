"""repvgg-nas: search, fuse, prune and benchmark RepVGG-style plain ConvNets."""

from __future__ import annotations

from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from .counting import Complexity, complexity, count_params
from .errors import (
    CheckpointError,
    ConfigError,
    RepVGGNasError,
    SpecError,
    UnknownNameError,
    WeightsError,
)
from .export import export_onnx, export_torchscript
from .model import (
    PlainBlock,
    RepVGG,
    RepVGGBlock,
    build_model,
    fusion_error,
    is_deploy,
    reparameterize,
)
from .registry import Registry
from .spec import GROUPWISE_PATTERNS, RepVGGSpec, groupwise_layers, paper_widths
from .report_data import collect_report_data, hypervolume_2d
from .weights import import_weights, infer_spec, load_any
from . import zoo

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
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
    "collect_report_data",
    "complexity",
    "count_params",
    "export_onnx",
    "export_torchscript",
    "fusion_error",
    "groupwise_layers",
    "hypervolume_2d",
    "import_weights",
    "infer_spec",
    "is_deploy",
    "load_any",
    "load_checkpoint",
    "load_model",
    "paper_widths",
    "reparameterize",
    "save_checkpoint",
    "zoo",
]
