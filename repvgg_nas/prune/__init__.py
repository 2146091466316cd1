"""Channel pruning of deploy (plain) RepVGG networks with torch-pruning.

A plain conv3x3+ReLU stack has no residual adds tying channels together, so
every layer's width can shrink independently: torch-pruning's dependency
graph adjusts the next conv's input channels (and the classifier's inputs),
and keeps groupwise layers consistent per group. The result is a new spec
with per-layer widths and a model rebuilt from it, so the checkpoint loads
with the core loader alone.

Two things make this work on *fused* RepVGGs (benchmarks/prune_cpu.md): the
default :class:`_StagePruner` removes the same channels from every
identity-linked layer of a stage (the fused identity branches make each
channel a stream through the stage), and :func:`recalibrate` then restores
each kept channel's output statistics, which BN would have done in a net
that still had it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..counting import complexity
from ..data import DataBundle
from ..config import check_bool, check_int
from ..errors import ConfigError
from ..measure import MeasureSettings, Measurement, ThroughputCache, measure_specs
from ..model import PlainBlock, RepVGG, build_model, is_deploy, reparameterize
from ..registry import Registry
from ..spec import RepVGGSpec
from ..train import Distillation, TrainConfig, evaluate, train

__all__ = [
    "IMPORTANCES",
    "PruneSettings",
    "PruneStep",
    "SpeedupResult",
    "FINETUNE_MODES",
    "deploy_spec_of",
    "prune_channels",
    "recalibrate",
    "prune_to_speedup",
    "finetune",
    "insert_bn",
    "fold_bn",
]

IMPORTANCES: Registry[Callable[[], tp.importance.Importance]] = Registry("importance criterion")
IMPORTANCES.register("l1", lambda: tp.importance.GroupMagnitudeImportance(p=1))
IMPORTANCES.register("l2", lambda: tp.importance.GroupMagnitudeImportance(p=2))
IMPORTANCES.register("taylor", lambda: tp.importance.GroupTaylorImportance())
IMPORTANCES.register("lamp", lambda: tp.importance.LAMPImportance(p=2))
IMPORTANCES.register("random", lambda: tp.importance.RandomImportance())

# Criteria that need gradients of the loss before each pruning step.
_NEEDS_GRADIENTS = {"taylor"}


@dataclass(frozen=True)
class PruneSettings:
    """How channels are chosen.

    ``align_stages`` (the default) removes the same channels from every
    identity-linked layer of a stage (see :class:`_StagePruner`); otherwise
    each layer picks its own. ``global_pruning`` ranks channels across
    stages/layers (uneven widths); otherwise every one loses the same share.
    ``max_layer_ratio`` is the most any layer may lose (it keeps at least
    ``1 - max_layer_ratio`` of its channels); ``round_to`` keeps pruned
    widths multiples of it.
    ``step`` is the share removed per iteration when pruning to a speed-up.
    ``recalibrate`` (when training data is given) re-scales every pruned conv
    so its kept channels keep the output statistics they had before pruning,
    measured on ``calibration_images`` training images (see :func:`recalibrate`).
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
        object.__setattr__(self, "importance", _canonical_importance(self.importance))
        for key in ("align_stages", "recalibrate", "global_pruning"):
            check_bool(f"prune.{key}", getattr(self, key))
        check_int("prune.calibration_images", self.calibration_images, 2)
        check_int("prune.round_to", self.round_to, 1, allow_none=True)
        if not 0 < self.max_layer_ratio < 1:
            raise ConfigError(f"prune.max_layer_ratio must be in (0, 1), got {self.max_layer_ratio!r}")
        if not 0 < self.step < 1:
            raise ConfigError(f"prune.step must be in (0, 1), got {self.step!r}")


def _canonical_importance(name: object) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"importance must be a name, got {name!r}")
    try:
        return IMPORTANCES.canonical(name)
    except LookupError as e:
        raise ConfigError(f"{e} (allowed: {', '.join(IMPORTANCES)})") from None


def check_ratio(ratio: object) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or not 0 <= ratio < 1:
        raise ConfigError(f"pruning ratio must be a number in [0, 1), got {ratio!r}")
    return float(ratio)


def deploy_spec_of(model: nn.Module, like: RepVGGSpec) -> RepVGGSpec:
    """The spec of a (possibly pruned) deploy model: per-layer widths read from its convs."""
    blocks = [m for m in model.modules() if isinstance(m, PlainBlock)]
    return like.replace(
        widths=tuple(b.reparam.out_channels for b in blocks),
        groups=tuple(b.reparam.groups for b in blocks),
    )


def _as_deploy(model: nn.Module) -> RepVGG:
    if not isinstance(model, RepVGG):
        raise ConfigError(f"expected a RepVGG model, got {type(model).__name__}")
    if model.spec.use_se:
        raise ConfigError(
            "pruning SE models (RepVGG-D2se) is not supported: the SE hidden width is not "
            "part of the per-layer spec"
        )
    bad = _depthwise_layers(model.spec)
    if bad:
        raise ConfigError(
            f"pruning nets with depthwise layers (groups == channels, layer {bad[0]}) is not "
            "supported: torch-pruning prunes them as depthwise convs, which changes their groups"
        )
    return copy.deepcopy(model) if is_deploy(model) else reparameterize(model)


def _depthwise_layers(spec: RepVGGSpec) -> list[int]:
    """Layers whose in or out channels equal their groups (g > 1)."""
    return [i for i, (cin, cout, g) in enumerate(zip(spec.in_widths, spec.widths, spec.groups))
            if g > 1 and g in (cin, cout)]


def _too_far(ratio: float) -> ConfigError:
    return ConfigError(
        f"pruning {ratio:.0%} per layer shrinks a groupwise layer to its group count, which "
        "torch-pruning would turn into a depthwise conv; use a smaller ratio or max_layer_ratio, "
        "or the default stage-aligned pruning (which never goes that far)"
    )


def _rebuild(pruned: nn.Module, spec: RepVGGSpec) -> RepVGG:
    """A clean RepVGG of the pruned spec holding the pruned weights (no pruning hooks left)."""
    new_spec = deploy_spec_of(pruned, spec)
    p = next(pruned.parameters())
    model = build_model(new_spec, deploy=True).to(p.device)
    model.load_state_dict(pruned.state_dict())
    return model.eval()


def _block_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The block convs of a deploy model by module name (the same names before and after pruning)."""
    return {f"{name}.reparam": m.reparam for name, m in model.named_modules() if isinstance(m, PlainBlock)}


Kept = dict[str, torch.Tensor]  # block conv name -> indices of its original output channels still there


def _full_kept(model: nn.Module) -> Kept:
    return {n: torch.arange(c.out_channels) for n, c in _block_convs(model).items()}


def _drop(kept: Kept, name: str, idxs: Any) -> None:
    keep = torch.ones(len(kept[name]), dtype=torch.bool)
    keep[list(idxs)] = False
    kept[name] = kept[name][keep]


def _example(model: RepVGG, resolution: int) -> torch.Tensor:
    p = next(model.parameters())
    return torch.randn(1, model.spec.in_channels, resolution, resolution, device=p.device)


class _LayerPruner:
    """torch-pruning's ``BasePruner``: every layer chooses its own channels."""

    def __init__(self, model: RepVGG, settings: PruneSettings, ratio: float, steps: int, resolution: int) -> None:
        self.model = model
        self.pruner = tp.pruner.BasePruner(
            model,
            _example(model, resolution),
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
        names = {id(c): n for n, c in _block_convs(self.model).items()}
        for group in self.pruner.step(interactive=True):
            for dep, idxs in group:
                name = names.get(id(dep.target.module))
                if name is not None and self.pruner.DG.is_out_channel_pruning_fn(dep.handler):
                    _drop(kept, name, idxs)
            group.prune()


class _StagePruner:
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
        convs = _block_convs(model)
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
        dg = tp.DependencyGraph().build_dependency(self.model, _example(self.model, self.resolution))
        convs = _block_convs(self.model)
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
                _drop(kept, name, idxs)

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


def _pruner(model: RepVGG, settings: PruneSettings, ratio: float, steps: int, resolution: int) -> _LayerPruner | _StagePruner:
    cls = _StagePruner if settings.align_stages else _LayerPruner
    return cls(model, settings, ratio, steps, resolution)


def calibration_images(data: DataBundle, images: int) -> torch.Tensor:
    """``images`` normalized, unaugmented training images: a seeded random subset
    (stored training sets may be sorted by class, as ImageFolder's are)."""
    pick = torch.randperm(data.train_size, generator=torch.Generator().manual_seed(0))[:images]
    return data.normalize(data.train_x[pick.to(data.device)])


@torch.no_grad()
def recalibrate(pruned: RepVGG, original: RepVGG, kept: Kept, data: DataBundle, images: int = 256) -> RepVGG:
    """Give every kept channel of ``pruned`` the pre-activation statistics it had in ``original``.

    A plain net has no BatchNorm to re-normalize after channels go: every
    removed channel shifts the next layer's inputs, and over 20+ layers the
    shifts compound (a trained A0 pruned by a quarter is at chance). This is
    the deploy-form analogue of re-estimating BN statistics after pruning: in
    one pass over ``images`` unaugmented training images (a seeded random
    subset), layer by layer, the
    per-channel mean and std of each pruned conv's output are matched to the
    original's for the same channels, and the affine correction is folded into
    the conv (``w *= s``, ``b = (b - mean_p) * s + mean_o``), so the model keeps
    its architecture and stays plain. Channels that went dead (std ~ 0) are
    only shifted. Works in place on ``pruned``; returns it.
    """
    device = next(pruned.parameters()).device
    x = calibration_images(data.to(device), images)
    target: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def stats(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        std, mean = torch.std_mean(out.float(), (0, 2, 3))  # no float64 copy of a whole activation
        return mean.double(), std.double()

    def record(name: str) -> Callable[..., None]:
        def hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
            mean, std = stats(out)
            target[name] = (mean[kept[name].to(device)], std[kept[name].to(device)])
        return hook

    def correct(name: str) -> Callable[..., torch.Tensor]:
        def hook(m: nn.Conv2d, inp: Any, out: torch.Tensor) -> torch.Tensor:
            mean_t, std_t = target[name]
            mean_p, std_p = stats(out)
            live = std_p > 1e-6 * std_p.max().clamp_min(1e-30)
            scale = torch.where(live, std_t / std_p.clamp_min(1e-30), torch.ones_like(std_p))
            shift = mean_t - mean_p * scale
            m.weight.mul_(scale.to(m.weight.dtype).view(-1, 1, 1, 1))
            m.bias.copy_((m.bias.double() * scale + shift).to(m.bias.dtype))
            return torch.addcmul(shift.to(out.dtype).view(1, -1, 1, 1), out, scale.to(out.dtype).view(1, -1, 1, 1))
        return hook

    for model, make in ((original, record), (pruned, correct)):
        was_training = model.training
        model.eval()
        hooks = [c.register_forward_hook(make(n)) for n, c in _block_convs(model).items()]
        try:
            model(x)
        finally:
            for h in hooks:
                h.remove()
        model.train(was_training)
    return pruned


def _taylor_gradients(model: nn.Module, data: DataBundle | None, batches: int) -> None:
    if data is None:
        raise ConfigError("the taylor criterion needs training data for its gradients")
    model.zero_grad()
    model.train()
    device = next(model.parameters()).device
    data = data.to(device)
    n = 0
    for x, y in data.val_batches(64):
        nn.functional.cross_entropy(model(x), y).backward()
        n += 1
        if n >= batches:
            break
    model.eval()


def prune_channels(
    model: nn.Module,
    ratio: float,
    settings: PruneSettings | None = None,
    data: DataBundle | None = None,
    resolution: int = 32,
) -> RepVGG:
    """Remove ``ratio`` of the channels (per layer, or globally) from a deploy model.

    A train-form input is fused first. Returns a new model of a new spec; the
    input is left untouched. ``ratio == 0`` returns an identical copy.
    """
    settings = settings or PruneSettings()
    ratio = check_ratio(ratio)
    work = _as_deploy(model)
    if ratio == 0:
        return work.eval()
    original = _reference(work, data, settings)
    kept = _full_kept(work)
    pruner = _pruner(work, settings, ratio, 1, resolution)
    if settings.importance in _NEEDS_GRADIENTS:
        _taylor_gradients(work, data, settings.taylor_batches)
    pruner.step(kept)
    work.zero_grad(set_to_none=True)
    if _depthwise_layers(deploy_spec_of(work, work.spec)):
        raise _too_far(ratio)
    return _finish(_rebuild(work, work.spec), original, kept, data, settings)


def _reference(work: RepVGG, data: DataBundle | None, settings: PruneSettings) -> RepVGG | None:
    """The unpruned net, kept for :func:`recalibrate` when it will run."""
    return copy.deepcopy(work) if settings.recalibrate and data is not None else None


def _finish(pruned: RepVGG, original: RepVGG | None, kept: Kept, data: DataBundle | None, settings: PruneSettings) -> RepVGG:
    if original is not None and data is not None:
        recalibrate(pruned, original.to(next(pruned.parameters()).device), kept, data, settings.calibration_images)
    return pruned.eval()


@dataclass(frozen=True)
class PruneStep:
    ratio: float
    spec: RepVGGSpec
    images_per_s: float
    speedup: float
    macs: int
    params: int


@dataclass
class SpeedupResult:
    """``baseline`` and ``measurement``: the unpruned and the kept net, measured in lockstep.

    ``kept`` names, for every block conv, the original output channels it kept
    (what :func:`recalibrate` needs when it was not run here).
    """

    model: RepVGG
    met: bool
    target: float
    baseline: Measurement
    best: PruneStep
    steps: list[PruneStep]
    measurement: Measurement
    kept: Kept


def prune_to_speedup(
    model: nn.Module,
    target: float,
    measure: MeasureSettings,
    settings: PruneSettings | None = None,
    data: DataBundle | None = None,
    cache: ThroughputCache | None = None,
    resolution: int = 32,
    on_step: Callable[[PruneStep], None] | None = None,
) -> SpeedupResult:
    """Prune in steps of ``settings.step`` until the *measured* speed-up reaches ``target``.

    Throughput is measured with :mod:`repvgg_nas.measure` after every step, on
    fresh nets of the step's spec and of the unpruned spec timed in lockstep
    (speed does not depend on weights; the ratio does not depend on drift). When the
    target cannot be met before ``max_layer_ratio``, the fastest step is kept
    and ``met`` is False. With ``data``, the kept model is recalibrated
    (``settings.recalibrate``).
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 1:
        raise ConfigError(f"target speed-up must be a number > 1, got {target!r}")
    settings = settings or PruneSettings()
    work = _as_deploy(model)
    original = _reference(work, data, settings)
    kept = _full_kept(work)
    spec = work.spec
    cache = cache if cache is not None else ThroughputCache()
    n_steps = max(1, round(settings.max_layer_ratio / settings.step))
    pruner = _pruner(work, settings, settings.max_layer_ratio, n_steps, resolution)
    steps: list[PruneStep] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_kept: Kept = kept
    best: PruneStep | None = None
    best_pair: dict[str, Measurement] = {}
    for i in range(n_steps):
        if settings.importance in _NEEDS_GRADIENTS:
            _taylor_gradients(work, data, settings.taylor_batches)
        pruner.step(kept)
        work.zero_grad(set_to_none=True)
        if _depthwise_layers(deploy_spec_of(work, spec)):  # per-layer only: stop before torch-pruning breaks
            if best is None:
                raise _too_far(settings.step)
            break
        step_spec = deploy_spec_of(work, spec)
        # the unpruned and the pruned net in lockstep: the ratio is immune to the machine's drift
        pair = measure_specs({"original": spec, "pruned": step_spec}, measure, cache)
        cx = complexity(step_spec, resolution=measure.resolution)
        step = PruneStep(
            ratio=settings.max_layer_ratio * (i + 1) / n_steps,
            spec=step_spec,
            images_per_s=pair["pruned"].images_per_s,
            speedup=pair["pruned"].images_per_s / pair["original"].images_per_s,
            macs=cx.macs,
            params=cx.params,
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if best is None or step.speedup > best.speedup:
            best = step
            best_state = {k: v.detach().clone() for k, v in work.state_dict().items()}
            best_kept = dict(kept)
            best_pair = pair
        if step.speedup >= target:
            break
    assert best is not None and best_state is not None
    met = best.speedup >= target
    if not met or steps[-1] is not best or deploy_spec_of(work, spec) != best.spec:
        work = build_model(best.spec, deploy=True).to(next(work.parameters()).device)
        work.load_state_dict(best_state)
    final = _finish(_rebuild(work, spec), original, best_kept, data, settings)
    return SpeedupResult(final, met, float(target), best_pair["original"], best, steps, best_pair["pruned"], best_kept)


# ---- fine-tuning ------------------------------------------------------------------
class _ConvBN(nn.Sequential):
    """A deploy conv with a BatchNorm re-inserted behind it for fine-tuning."""


@torch.no_grad()
def insert_bn(model: RepVGG, data: DataBundle, batches: int = 8) -> RepVGG:
    """Put a BN behind every block conv, initialised so the function does not change.

    BN running stats come from a calibration pass over training images, and
    its affine parameters undo them (``gamma = std``, ``beta = mean``): in eval
    mode the net is unchanged, in train mode it starts close to it. Training
    with BN is better conditioned than training the bare plain stack.
    """
    device = next(model.parameters()).device
    data = data.to(device)
    convs = [b for b in model.modules() if isinstance(b, PlainBlock)]
    stats: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(convs))}
    hooks = [
        b.reparam.register_forward_hook(lambda m, inp, out, i=i: stats[i].append(out.detach()))
        for i, b in enumerate(convs)
    ]
    model.eval()
    seen = 0
    for x, _ in data.val_batches(128):
        model(x)
        seen += 1
        if seen >= batches:
            break
    for h in hooks:
        h.remove()
    for i, block in enumerate(convs):
        out = torch.cat(stats[i])
        mean = out.mean((0, 2, 3))
        var = out.var((0, 2, 3), unbiased=False)
        bn = nn.BatchNorm2d(block.reparam.out_channels).to(device)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.copy_(mean)
        block.reparam = _ConvBN(block.reparam, bn)
    return model.eval()  # new BN modules start in train mode


@torch.no_grad()
def fold_bn(model: RepVGG) -> RepVGG:
    """Fold every re-inserted BN back into its conv (the inverse of :func:`insert_bn`)."""
    for block in model.modules():
        if isinstance(block, PlainBlock) and isinstance(block.reparam, _ConvBN):
            conv, bn = block.reparam[0], block.reparam[1]
            t = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
            w = conv.weight.double() * t.reshape(-1, 1, 1, 1)
            b = bn.bias.double() + (conv.bias.double() - bn.running_mean.double()) * t
            conv.weight.copy_(w.to(conv.weight.dtype))
            conv.bias.copy_(b.to(conv.bias.dtype))
            block.reparam = conv
    return model.eval()


def _finetune_plain(
    model: RepVGG, data: DataBundle, cfg: TrainConfig, device: Any, progress: bool, distill: Distillation | None
) -> RepVGG:
    train(model, data, cfg, device, progress=progress, desc="fine-tune", distill=distill)
    return model.eval()


def _finetune_bn(
    model: RepVGG, data: DataBundle, cfg: TrainConfig, device: Any, progress: bool, distill: Distillation | None
) -> RepVGG:
    model = insert_bn(model.to(device), data)
    train(model, data, cfg, device, progress=progress, desc="fine-tune (BN)", distill=distill)
    return fold_bn(model)


FINETUNE_MODES: Registry[Callable[..., RepVGG]] = Registry("fine-tune mode")
FINETUNE_MODES.register("bn", _finetune_bn)
FINETUNE_MODES.register("plain", _finetune_plain)

# Fine-tuning starts from recalibrated trained weights: half the proxy peak LR, cosine,
# no warm-up (4 epochs at 0.05 recover A0 at 1.5x to within 0.1 point: benchmarks/prune_cpu.md).
FINETUNE_DEFAULTS = {"lr": 0.05, "warmup_epochs": 0.0, "schedule": "cosine"}


def finetune(
    model: RepVGG,
    data: DataBundle,
    epochs: int,
    mode: str = "plain",
    base: TrainConfig | None = None,
    device: Any = "cpu",
    progress: bool = True,
    teacher: nn.Module | None = None,
    **overrides: Any,
) -> RepVGG:
    """Briefly retrain a pruned deploy model in place; returns it (still plain) in eval mode.

    With ``teacher`` (normally the unpruned parent) the loss adds its soft
    targets (:class:`~repvgg_nas.train.Distillation`).
    """
    if epochs <= 0:
        return model.eval()
    try:
        fn = FINETUNE_MODES.get(mode)
    except LookupError as e:
        raise ConfigError(f"{e} (allowed: {', '.join(FINETUNE_MODES)})") from None
    cfg = (base or TrainConfig()).replace(epochs=epochs, **{**FINETUNE_DEFAULTS, **overrides})
    distill = Distillation(teacher) if teacher is not None else None
    return fn(model, data, cfg, device, progress, distill)


# ---- the whole job: prune, measure, fine-tune, report ---------------------------------
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
        if self.ratio is not None:
            object.__setattr__(self, "ratio", check_ratio(self.ratio))
        if self.target_speedup is not None and (
            isinstance(self.target_speedup, bool) or not isinstance(self.target_speedup, (int, float))
            or not self.target_speedup > 1
        ):
            raise ConfigError(f"target_speedup must be a number > 1, got {self.target_speedup!r}")
        check_int("prune.finetune_epochs", self.finetune_epochs, 0)
        check_bool("prune.distill", self.distill)
        if self.finetune_mode not in FINETUNE_MODES:
            raise ConfigError(f"finetune_mode {self.finetune_mode!r} is not allowed; choose from {FINETUNE_MODES.list()}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "prune") -> PruneJob:
        settings_keys = ("importance", "global_pruning", "round_to", "max_layer_ratio", "step",
                         "align_stages", "recalibrate", "calibration_images")
        known = {"ratio", "target_speedup", *settings_keys, "finetune_epochs", "finetune_mode", "distill"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {where} keys {unknown}; allowed: {sorted(known)}")
        s = {k: data[k] for k in settings_keys if k in data}
        job = {k: data[k] for k in ("ratio", "target_speedup", "finetune_epochs", "finetune_mode", "distill") if k in data}
        return cls(settings=PruneSettings(**s), **job)

    def to_dict(self) -> dict[str, Any]:
        """The job as a ``[prune]`` table: :meth:`from_dict` of it gives the same job."""
        d: dict[str, Any] = {k: v for k, v in dataclasses.asdict(self.settings).items()
                             if k != "taylor_batches" and v is not None}
        d.update(finetune_epochs=self.finetune_epochs, finetune_mode=self.finetune_mode, distill=self.distill)
        for k in ("ratio", "target_speedup"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass
class PruneOutcome:
    model: RepVGG
    rows: list[dict[str, Any]]  # before / pruned / fine-tuned figures
    met: bool
    note: str


def _figures(stage: str, spec: RepVGGSpec, acc: float | None, m: Measurement, resolution: int) -> dict[str, Any]:
    cx = complexity(spec, resolution=resolution)
    return {
        "stage": stage,
        "accuracy": None if acc is None else round(acc, 4),
        "img/s": round(m.images_per_s, 1),
        "latency_ms": round(m.latency_ms, 2),
        "params_M": float(f"{cx.params / 1e6:.6g}"),
        "GMACs": float(f"{cx.macs / 1e9:.6g}"),
        "widths": "-".join(map(str, spec.widths)),
    }


def run_prune(
    model: nn.Module,
    job: PruneJob,
    data: DataBundle,
    measure: MeasureSettings,
    train_base: TrainConfig | None = None,
    device: Any = "cpu",
    cache: ThroughputCache | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> PruneOutcome:
    """Prune ``model`` per ``job``, fine-tune it, and measure every stage.

    The original and the pruned net are timed in lockstep, so the reported
    speed-up is one ratio from one stretch of time.
    """
    cache = cache if cache is not None else ThroughputCache()
    if not is_deploy(model):
        log("input is train-form: fusing it into the deploy form first")
    base_model = _as_deploy(model).to(device)
    spec = base_model.spec
    data = data.to(device)
    acc0 = evaluate(base_model, data, device)
    met, note = True, ""
    if job.ratio is not None:
        pruned = prune_channels(base_model, job.ratio, job.settings, data, data.resolution)
        pair = measure_specs({"original": spec, "pruned": pruned.spec}, measure, cache)
        m0, m1 = pair["original"], pair["pruned"]
    else:
        res = prune_to_speedup(
            base_model, job.target_speedup, measure, job.settings, data, cache, data.resolution,
            on_step=lambda s: log(f"  pruned {s.ratio:.0%} of channels: {s.speedup:.2f}x measured, "
                                  f"{s.macs / 1e9:.3f} GMACs"),
        )
        pruned, met, m0, m1 = res.model, res.met, res.baseline, res.measurement
        if not met:
            note = (f"target {job.target_speedup:g}x cannot be met (max_layer_ratio "
                    f"{job.settings.max_layer_ratio:g}); kept the fastest step, {res.best.speedup:.2f}x")
    pruned = pruned.to(device)
    rows = [_figures("original", spec, acc0, m0, measure.resolution)]
    rows.append(_figures("pruned", pruned.spec, evaluate(pruned, data, device), m1, measure.resolution))
    if job.finetune_epochs > 0:
        teacher = base_model if job.distill else None
        pruned = finetune(pruned, data, job.finetune_epochs, job.finetune_mode, train_base, device, progress, teacher)
        rows.append(_figures("fine-tuned", pruned.spec, evaluate(pruned, data, device), m1, measure.resolution))
    for r in rows:
        r["speedup"] = round(r["img/s"] / rows[0]["img/s"], 3)
        r["MACs_reduction"] = round(rows[0]["GMACs"] / r["GMACs"], 3)
    return PruneOutcome(pruned.eval(), rows, met, note)
