"""Stage-aligned channel pruning: the same channels leave every identity-linked layer of a stage.

The default pruner for fused RepVGGs (benchmarks/prune_cpu.md). It scores
channels with a torch-pruning importance and removes them through
torch-pruning's ``DependencyGraph``, which adjusts the layers that read them.
"""

from __future__ import annotations

import math

import torch
import torch_pruning as tp
from torch import nn

from ..model import RepVGG
from .deploy import Kept, block_convs, drop, example_input
from .settings import IMPORTANCES, PruneSettings

__all__ = ["StagePruner"]


class StagePruner:
    """Prune the same channel indices in every layer of a RepVGG stage.

    In the train form, every stride-1 block with equal in/out widths has an
    identity branch, so channel ``c`` of one layer carries channel ``c`` of
    the layer before: fused, the nets are deep residual streams along the
    conv diagonals. Choosing channels per layer cuts those streams at every
    layer (a trained A0 with a quarter of its channels removed that way is at
    chance); removing one index from the whole run of identity-linked layers
    removes one stream. A *run* is a stage's first conv plus the stride-1,
    equal-width convs after it. Each conv's channels are scored by the chosen
    torch-pruning importance on its dependency group, the scores are
    normalized per layer and summed over the run, and the run's lowest
    channels are removed through torch-pruning's dependency graph (which also
    adjusts the next conv's inputs and the classifier). Groupwise convs in or
    right after a run get the same in-group positions removed in every group,
    so they stay valid. ``global_pruning`` ranks runs' channels against each
    other (scores divided by their run's mean) instead of cutting every run
    by the same ratio.
    """

    def __init__(self, model: RepVGG, settings: PruneSettings, ratio: float, steps: int, resolution: int) -> None:
        self.model, self.settings = model, settings
        self.ratio, self.steps, self.resolution = ratio, steps, resolution
        self.importance = IMPORTANCES.get(settings.importance)()
        self.current = 0
        convs = block_convs(model)
        names = list(convs)
        self.runs: list[list[str]] = []
        for n in names:
            c, run = convs[n], self.runs[-1] if self.runs else None
            last = convs[run[-1]] if run else None
            if last is not None and c.stride == (1, 1) and c.in_channels == c.out_channels == last.out_channels:
                run.append(n)
            else:
                self.runs.append([n])
        self.width0 = [convs[r[0]].out_channels for r in self.runs]
        # channels of a run must go in equal numbers from each group of every groupwise conv
        # writing or reading them: the run's own convs and the first conv after it
        self.period = []
        for i, run in enumerate(self.runs):
            touching = run + ([self.runs[i + 1][0]] if i + 1 < len(self.runs) else [])
            self.period.append(math.lcm(1, *(convs[n].groups for n in touching)))

    def _unit(self, run: int) -> int:
        """Widths of run ``run`` move in multiples of this (its groups and ``round_to``)."""
        return math.lcm(self.period[run], self.settings.round_to or 1)

    def _floor(self, run: int) -> int:
        """The fewest channels run ``run`` may keep.

        At least ``1 - max_layer_ratio`` of its width, and more channels than the
        groups of any groupwise conv touching it: torch-pruning takes a conv with
        as many channels as groups for a depthwise one and would change its groups.
        """
        unit, period = self._unit(run), self.period[run]
        least = unit * math.ceil((1 - self.settings.max_layer_ratio) * self.width0[run] / unit)
        return max(least, unit * math.ceil((2 * period if period > 1 else 1) / unit))

    def _round(self, run: int, keep: float, width: int) -> int:
        """``keep`` rounded to the run's unit, between its floor and its current ``width``."""
        unit = self._unit(run)
        return min(width, max(self._floor(run), unit * round(keep / unit)))

    def _keep(self, run: int, ratio: float, width: int) -> int:
        """Channels run ``run`` keeps at cumulative ``ratio`` of its original width."""
        return self._round(run, (1 - ratio) * self.width0[run], width)

    def _scores(self, dg: tp.DependencyGraph, convs: dict[str, nn.Conv2d]) -> list[torch.Tensor]:
        """Per-run channel scores, folded to one score per in-group position."""
        out = []
        for run, period in zip(self.runs, self.period):
            total = None
            for n in run:
                c = convs[n]
                group = dg.get_pruning_group(c, tp.prune_conv_out_channels, list(range(c.out_channels)))
                imp = self.importance(group)
                imp = imp.double().abs() if imp is not None else torch.ones(c.out_channels, dtype=torch.double)
                imp = imp / imp.sum().clamp_min(1e-30)
                total = imp if total is None else total + imp.to(total.device)
            assert total is not None
            out.append(total.reshape(period, -1).sum(0))
        return out

    def step(self, kept: Kept) -> None:
        if self.current >= self.steps:
            return
        self.current += 1
        ratio = self.ratio * self.current / self.steps
        dg = tp.DependencyGraph().build_dependency(self.model, example_input(self.model, self.resolution))
        convs = block_convs(self.model)
        scores = self._scores(dg, convs)
        widths = [convs[r[0]].out_channels for r in self.runs]
        if self.settings.global_pruning:
            remove = self._global_counts(scores, widths, ratio)
        else:
            remove = [w - self._keep(i, ratio, w) for i, w in enumerate(widths)]
        for run, period, score, width, n in zip(self.runs, self.period, scores, widths, remove):
            if n <= 0:
                continue
            positions = score.argsort()[: n // period]
            seg = width // period
            idxs = sorted(int(p) + j * seg for j in range(period) for p in positions)
            for name in run:
                dg.get_pruning_group(convs[name], tp.prune_conv_out_channels, idxs).prune()
                drop(kept, name, idxs)

    def _global_counts(self, scores: list[torch.Tensor], widths: list[int], ratio: float) -> list[int]:
        """How many channels each run loses when all runs' channels are ranked together.

        ``ratio`` counts layer channels, as per-layer pruning does: one channel of a
        14-layer run is 14 channels of the net.
        """
        depth = [len(r) for r in self.runs]
        total0 = sum(w * d for w, d in zip(self.width0, depth))
        target = round(ratio * total0) - sum((w0 - w) * d for w0, w, d in zip(self.width0, widths, depth))
        entries = sorted(
            (float(v) / float(sc.mean().clamp_min(1e-30)), i)
            for i, sc in enumerate(scores) for v in sc.tolist()
        )
        remove = [0] * len(self.runs)
        floors = [self._floor(i) for i in range(len(self.runs))]
        taken = 0
        for _, i in entries:  # each entry is one in-group position: `period` channels per layer
            if taken >= target:
                break
            if widths[i] - remove[i] - self.period[i] >= floors[i]:
                remove[i] += self.period[i]
                taken += self.period[i] * depth[i]
        # to whole units (round_to), to the nearest rather than down, so the total stays close
        return [w - self._round(i, w - r, w) for i, (w, r) in enumerate(zip(widths, remove))]
