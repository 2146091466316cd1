"""Channel pruning of deploy (plain) RepVGG networks with torch-pruning.

A plain conv3x3+ReLU stack has no residual adds tying channels together, so
every layer's width can shrink independently: torch-pruning's dependency
graph adjusts the next conv's input channels (and the classifier's inputs),
and keeps groupwise layers consistent per group. The result is a new spec
with per-layer widths and a model rebuilt from it, so the checkpoint loads
with the core loader alone.

Two things make this work on *fused* RepVGGs (benchmarks/prune_cpu.md): the
default :class:`~.stage.StagePruner` removes the same channels from every
identity-linked layer of a stage (the fused identity branches make each
channel a stream through the stage), and :func:`recalibrate` then restores
each kept channel's output statistics, which BN would have done in a net
that still had it.

Modules: ``settings`` (criteria, settings, the job), ``deploy`` (the net
being pruned), ``layer`` / ``stage`` (the two pruners), ``channels``
(pruning by a ratio), ``calibration``, ``speedup`` (pruning to a measured
speed-up), ``finetuning``, ``job`` (the whole job, figures as data).
torch-pruning is imported only when a net is actually pruned.
"""

from __future__ import annotations

from .calibration import recalibrate
from .channels import prune_channels
from .deploy import Kept, deploy_spec_of
from .finetuning import FINETUNE_DEFAULTS, FINETUNE_MODES, finetune, fold_inserted_bn, insert_bn
from .job import PruneResult, StageFigures, replace_head, run_prune
from .settings import IMPORTANCES, PruneJob, PruneSettings, check_ratio
from .speedup import PruneStep, SpeedupResult, prune_to_speedup

__all__ = [
    "IMPORTANCES",
    "PruneSettings",
    "PruneJob",
    "check_ratio",
    "Kept",
    "deploy_spec_of",
    "prune_channels",
    "recalibrate",
    "PruneStep",
    "SpeedupResult",
    "prune_to_speedup",
    "FINETUNE_MODES",
    "FINETUNE_DEFAULTS",
    "finetune",
    "insert_bn",
    "fold_inserted_bn",
    "StageFigures",
    "PruneResult",
    "run_prune",
    "replace_head",
]
