"""What a pruning run is asked to do: the channel criterion and its knobs, and the job.

Validated when constructed, so a study config with a bad ``[prune]`` table
fails when it is loaded. This module does not import torch-pruning: the
study config loader needs :class:`PruneJob`, and loading a study should not
pull the pruning library in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Table
from ..errors import ConfigError
from ..registry import Registry
from .finetuning import FINETUNE_MODES

__all__ = ["IMPORTANCES", "NEEDS_GRADIENTS", "PruneSettings", "PruneJob", "check_ratio"]


def _importance(name: str, **kwargs: Any) -> Callable[[], Any]:
    """A factory of the torch-pruning importance ``name``, imported when first called."""
    def make() -> Any:
        import torch_pruning as tp  # only when a net is pruned, not when settings are validated

        return getattr(tp.importance, name)(**kwargs)
    return make


# name -> factory of a torch_pruning.importance.Importance
IMPORTANCES: Registry[Callable[[], Any]] = Registry("importance criterion")
IMPORTANCES.register("l1", _importance("GroupMagnitudeImportance", p=1))
IMPORTANCES.register("l2", _importance("GroupMagnitudeImportance", p=2))
IMPORTANCES.register("taylor", _importance("GroupTaylorImportance"))
IMPORTANCES.register("lamp", _importance("LAMPImportance", p=2))
IMPORTANCES.register("random", _importance("RandomImportance"))

# Criteria that need gradients of the loss before each pruning step.
NEEDS_GRADIENTS = frozenset({"taylor"})


@dataclass(frozen=True)
class PruneSettings:
    """How channels are chosen.

    ``align_stages`` (the default) removes the same channels from every
    identity-linked layer of a stage (see :class:`~repvgg_nas.prune.stage.StagePruner`);
    otherwise each layer picks its own. ``global_pruning`` ranks channels across
    stages/layers (uneven widths); otherwise every one loses the same share.
    ``max_layer_ratio`` is the most any layer may lose (it keeps at least
    ``1 - max_layer_ratio`` of its channels); ``round_to`` keeps pruned
    widths multiples of it.
    ``step`` is the share removed per iteration when pruning to a speed-up.
    ``recalibrate`` (when training data is given) re-scales every pruned conv
    so its kept channels keep the output statistics they had before pruning,
    measured on ``calibration_images`` training images (see
    :func:`~repvgg_nas.prune.calibration.recalibrate`).
    """

    importance: str = "l2"
    global_pruning: bool = False
    round_to: int | None = None
    max_layer_ratio: float = 0.9
    step: float = 0.05
    taylor_batches: int = 4
    align_stages: bool = True
    recalibrate: bool = True
    calibration_images: int = 256

    def __post_init__(self) -> None:
        t = Table.of(self, "prune")
        try:
            object.__setattr__(self, "importance", IMPORTANCES.canonical(t.get("importance", str)))
        except LookupError as e:
            raise t.error("importance", f"{e} (allowed: {', '.join(IMPORTANCES)})") from None
        for key in ("align_stages", "recalibrate", "global_pruning"):
            t.get(key, bool)
        t.get("calibration_images", int, min=2)
        t.get("taylor_batches", int, min=1)
        t.get("round_to", int, None, min=1)
        for key in ("max_layer_ratio", "step"):
            object.__setattr__(self, key, t.get(key, float, min=0, max=1, min_open=True, max_open=True))


def check_ratio(ratio: object) -> float:
    """A share of channels to remove, in [0, 1)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or not 0 <= ratio < 1:
        raise ConfigError(f"pruning ratio must be a number in [0, 1), got {ratio!r}")
    return float(ratio)


# Settings a [prune] table may set (taylor_batches is for code only) and the job's own keys.
_SETTINGS_KEYS = tuple(f.name for f in dataclasses.fields(PruneSettings) if f.name != "taylor_batches")


@dataclass(frozen=True)
class PruneJob:
    """One pruning request: exactly one of ``ratio`` / ``target_speedup``."""

    ratio: float | None = None
    target_speedup: float | None = None
    settings: PruneSettings = field(default_factory=PruneSettings)
    finetune_epochs: int = 4
    # "plain" beat "bn" in every setting of benchmarks/prune_cpu.md.
    finetune_mode: str = "plain"
    # Distilling from the unpruned parent did not beat label-only fine-tuning once
    # pruning is stage-aligned and recalibrated (benchmarks/prune_cpu.md); it costs a
    # teacher forward per step, so it is opt-in.
    distill: bool = False

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.target_speedup is None):
            raise ConfigError("give exactly one of ratio or target_speedup")
        t = Table.of(self, "prune")
        if self.ratio is not None:
            object.__setattr__(self, "ratio", check_ratio(self.ratio))
        speedup = t.get("target_speedup", float, None, min=1, min_open=True)
        object.__setattr__(self, "target_speedup", speedup)
        t.get("finetune_epochs", int, min=0)
        t.get("distill", bool)
        t.get("finetune_mode", str, choices=FINETUNE_MODES.list())

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "prune") -> PruneJob:
        """A job from a flat ``[prune]`` table: the job's keys and the settings' keys side by side."""
        job_keys = tuple(f.name for f in dataclasses.fields(cls) if f.name != "settings")
        t = Table(data, where)
        settings, job = t.take(_SETTINGS_KEYS), t.take(job_keys)
        t.finish(sorted({*job_keys, *_SETTINGS_KEYS}))
        return cls(settings=PruneSettings(**settings), **job)

    def to_dict(self) -> dict[str, Any]:
        """The job as a ``[prune]`` table: :meth:`from_dict` of it gives the same job."""
        d: dict[str, Any] = {k: v for k, v in dataclasses.asdict(self.settings).items()
                             if k != "taylor_batches" and v is not None}
        d.update(finetune_epochs=self.finetune_epochs, finetune_mode=self.finetune_mode, distill=self.distill)
        for k in ("ratio", "target_speedup"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d
