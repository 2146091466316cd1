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
    QARepVGGBlock,
    RepVGG,
    RepVGGBlock,
    build_model,
    fusion_error,
    is_deploy,
    reparameterize,
)
from .registry import Registry
from .spec import GROUPWISE_PATTERNS, RepVGGSpec, groupwise_layers, paper_widths
from .data import DATASETS, DataBundle, DataConfig, load_data
from .measure import Measurement, MeasureSettings, ThroughputCache, measure_model, measure_spec
from .prune import IMPORTANCES, PruneJob, PruneSettings, prune_channels, prune_to_speedup
from .report import collect_report_data, hypervolume_2d
from .study import SearchSpace, StudyConfig, load_space, load_study_config
from .storage import make_storage
from .train import DivergenceError, TrainConfig, evaluate, train
from .weights import import_weights, infer_spec, load_any
from . import zoo

__version__ = "0.1.0"

__all__ = [
    "build_model",
    "Checkpoint",
    "CheckpointError",
    "collect_report_data",
    "Complexity",
    "complexity",
    "ConfigError",
    "count_params",
    "DataBundle",
    "DataConfig",
    "DATASETS",
    "DivergenceError",
    "evaluate",
    "export_onnx",
    "export_torchscript",
    "fusion_error",
    "groupwise_layers",
    "GROUPWISE_PATTERNS",
    "hypervolume_2d",
    "import_weights",
    "IMPORTANCES",
    "infer_spec",
    "is_deploy",
    "load_any",
    "load_checkpoint",
    "load_data",
    "load_model",
    "load_space",
    "load_study_config",
    "make_storage",
    "measure_model",
    "measure_spec",
    "Measurement",
    "MeasureSettings",
    "paper_widths",
    "PlainBlock",
    "prune_channels",
    "prune_to_speedup",
    "PruneJob",
    "PruneSettings",
    "Registry",
    "reparameterize",
    "RepVGG",
    "RepVGGBlock",
    "QARepVGGBlock",
    "RepVGGNasError",
    "RepVGGSpec",
    "save_checkpoint",
    "SearchSpace",
    "SpecError",
    "StudyConfig",
    "ThroughputCache",
    "train",
    "TrainConfig",
    "UnknownNameError",
    "WeightsError",
    "zoo",
]
