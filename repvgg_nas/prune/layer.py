"""Per-layer channel pruning: torch-pruning's ``BasePruner``, every layer choosing its own channels."""

from __future__ import annotations

import torch_pruning as tp

from ..model import RepVGG
from .deploy import Kept, block_convs, drop, example_input
from .settings import IMPORTANCES, PruneSettings

__all__ = ["LayerPruner"]


class LayerPruner:
    """torch-pruning's ``BasePruner``: every layer chooses its own channels."""

    def __init__(self, model: RepVGG, settings: PruneSettings, ratio: float, steps: int, resolution: int) -> None:
        self.model = model
        self.pruner = tp.pruner.BasePruner(
            model,
            example_input(model, resolution),
            importance=IMPORTANCES.get(settings.importance)(),
            global_pruning=settings.global_pruning,
            pruning_ratio=ratio,
            max_pruning_ratio=settings.max_layer_ratio,
            iterative_steps=steps,
            ignored_layers=[model.head],
            round_to=settings.round_to,
        )

    def step(self, kept: Kept) -> None:
        """One pruner step that also records which original output channels every block conv keeps."""
        names = {id(c): n for n, c in block_convs(self.model).items()}
        for group in self.pruner.step(interactive=True):
            for dep, idxs in group:
                name = names.get(id(dep.target.module))
                if name is not None and self.pruner.DG.is_out_channel_pruning_fn(dep.handler):
                    drop(kept, name, idxs)
            group.prune()
