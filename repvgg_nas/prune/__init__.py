"""Channel pruning of deploy (plain) RepVGG networks with torch-pruning.

A plain conv3x3+ReLU stack has no residual adds tying channels together, so
every layer's width can shrink independently: torch-pruning's dependency
graph adjusts the next conv's input channels (and the classifier's inputs),
and keeps groupwise layers consistent per group. The result is a new spec
with per-layer widths and a model rebuilt from it, so the checkpoint loads
with the core loader alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..counting import complexity
from ..data import DataBundle
from ..errors import ConfigError
from ..measure import MeasureSettings, Measurement, ThroughputCache, measure_spec
from ..model import PlainBlock, RepVGG, build_model, is_deploy, reparameterize
from ..registry import Registry
from ..spec import RepVGGSpec
from ..train import TrainConfig, evaluate, train

__all__ = [
    "IMPORTANCES",
    "PruneSettings",
    "PruneStep",
    "SpeedupResult",
    "FINETUNE_MODES",
    "deploy_spec_of",
    "prune_channels",
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

    ``global_pruning`` ranks channels across layers (uneven widths);
    otherwise every layer loses the same share. ``max_layer_ratio`` keeps at
    least that share of each layer; ``round_to`` keeps widths multiples of it.
    ``step`` is the share removed per iteration when pruning to a speed-up.
    """

    importance: str = "l2"
    global_pruning: bool = False
    round_to: int | None = None
    max_layer_ratio: float = 0.9
    step: float = 0.05
    taylor_batches: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "importance", _canonical_importance(self.importance))
        if self.round_to is not None and (isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1):
            raise ConfigError(f"prune.round_to must be an integer >= 1, got {self.round_to!r}")
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
    return copy.deepcopy(model) if is_deploy(model) else reparameterize(model)


def _rebuild(pruned: nn.Module, spec: RepVGGSpec) -> RepVGG:
    """A clean RepVGG of the pruned spec holding the pruned weights (no pruning hooks left)."""
    new_spec = deploy_spec_of(pruned, spec)
    p = next(pruned.parameters())
    model = build_model(new_spec, deploy=True).to(p.device)
    model.load_state_dict(pruned.state_dict())
    return model.eval()


def _pruner(model: RepVGG, settings: PruneSettings, ratio: float, steps: int, resolution: int) -> tp.pruner.BasePruner:
    p = next(model.parameters())
    example = torch.randn(1, model.spec.in_channels, resolution, resolution, device=p.device)
    return tp.pruner.BasePruner(
        model,
        example,
        importance=IMPORTANCES.get(settings.importance)(),
        global_pruning=settings.global_pruning,
        pruning_ratio=ratio,
        max_pruning_ratio=settings.max_layer_ratio,
        iterative_steps=steps,
        ignored_layers=[model.head],
        round_to=settings.round_to,
    )


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
    pruner = _pruner(work, settings, ratio, 1, resolution)
    if settings.importance in _NEEDS_GRADIENTS:
        _taylor_gradients(work, data, settings.taylor_batches)
    pruner.step()
    work.zero_grad(set_to_none=True)
    return _rebuild(work, work.spec)


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
    model: RepVGG
    met: bool
    target: float
    baseline: Measurement
    best: PruneStep
    steps: list[PruneStep] = field(default_factory=list)


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

    Throughput is measured with :mod:`repvgg_nas.measure` after every step (on a
    fresh net of the step's spec: speed does not depend on weights). When the
    target cannot be met before ``max_layer_ratio``, the fastest step is kept
    and ``met`` is False.
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 1:
        raise ConfigError(f"target speed-up must be a number > 1, got {target!r}")
    settings = settings or PruneSettings()
    work = _as_deploy(model)
    spec = work.spec
    cache = cache if cache is not None else ThroughputCache()
    baseline = measure_spec(spec, measure, cache)
    n_steps = max(1, round(settings.max_layer_ratio / settings.step))
    pruner = _pruner(work, settings, settings.max_layer_ratio, n_steps, resolution)
    steps: list[PruneStep] = []
    best_state: dict[str, torch.Tensor] | None = None
    best: PruneStep | None = None
    for i in range(n_steps):
        if settings.importance in _NEEDS_GRADIENTS:
            _taylor_gradients(work, data, settings.taylor_batches)
        pruner.step()
        work.zero_grad(set_to_none=True)
        step_spec = deploy_spec_of(work, spec)
        m = measure_spec(step_spec, measure, cache)
        cx = complexity(step_spec, resolution=measure.resolution)
        step = PruneStep(
            ratio=settings.max_layer_ratio * (i + 1) / n_steps,
            spec=step_spec,
            images_per_s=m.images_per_s,
            speedup=m.images_per_s / baseline.images_per_s,
            macs=cx.macs,
            params=cx.params,
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if best is None or step.speedup > best.speedup:
            best = step
            best_state = {k: v.detach().clone() for k, v in work.state_dict().items()}
        if step.speedup >= target:
            break
    assert best is not None and best_state is not None
    met = best.speedup >= target
    if not met or steps[-1] is not best:
        work = build_model(best.spec, deploy=True).to(next(work.parameters()).device)
        work.load_state_dict(best_state)
    final = _rebuild(work, spec)
    return SpeedupResult(final, met, float(target), baseline, best, steps)


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


def _finetune_plain(model: RepVGG, data: DataBundle, cfg: TrainConfig, device: Any, progress: bool) -> RepVGG:
    train(model, data, cfg, device, progress=progress, desc="fine-tune")
    return model.eval()


def _finetune_bn(model: RepVGG, data: DataBundle, cfg: TrainConfig, device: Any, progress: bool) -> RepVGG:
    model = insert_bn(model.to(device), data)
    train(model, data, cfg, device, progress=progress, desc="fine-tune (BN)")
    return fold_bn(model)


FINETUNE_MODES: Registry[Callable[..., RepVGG]] = Registry("fine-tune mode")
FINETUNE_MODES.register("bn", _finetune_bn)
FINETUNE_MODES.register("plain", _finetune_plain)

# Fine-tuning starts from trained weights: a smaller peak LR, no long warm-up.
FINETUNE_DEFAULTS = {"lr": 0.02, "warmup_epochs": 0.0, "schedule": "cosine"}


def finetune(
    model: RepVGG,
    data: DataBundle,
    epochs: int,
    mode: str = "plain",
    base: TrainConfig | None = None,
    device: Any = "cpu",
    progress: bool = True,
    **overrides: Any,
) -> RepVGG:
    """Briefly retrain a pruned deploy model in place; returns it (still plain) in eval mode."""
    if epochs <= 0:
        return model.eval()
    try:
        fn = FINETUNE_MODES.get(mode)
    except LookupError as e:
        raise ConfigError(f"{e} (allowed: {', '.join(FINETUNE_MODES)})") from None
    cfg = (base or TrainConfig()).replace(epochs=epochs, **{**FINETUNE_DEFAULTS, **overrides})
    return fn(model, data, cfg, device, progress)


def accuracy(model: nn.Module, data: DataBundle, device: Any = "cpu") -> float:
    return evaluate(model, data, device)


# ---- the whole job: prune, measure, fine-tune, report ---------------------------------
@dataclass(frozen=True)
class PruneJob:
    """One pruning request: exactly one of ``ratio`` / ``target_speedup``."""

    ratio: float | None = None
    target_speedup: float | None = None
    settings: PruneSettings = field(default_factory=PruneSettings)
    finetune_epochs: int = 2
    # "plain" beat "bn" in every setting of benchmarks/prune_cpu.md.
    finetune_mode: str = "plain"

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
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise ConfigError(f"finetune_epochs must be an integer >= 0, got {self.finetune_epochs!r}")
        if self.finetune_mode not in FINETUNE_MODES:
            raise ConfigError(f"finetune_mode {self.finetune_mode!r} is not allowed; choose from {FINETUNE_MODES.list()}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "prune") -> PruneJob:
        known = {"ratio", "target_speedup", "importance", "global_pruning", "round_to",
                 "max_layer_ratio", "step", "finetune_epochs", "finetune_mode"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {where} keys {unknown}; allowed: {sorted(known)}")
        s = {k: data[k] for k in ("importance", "global_pruning", "round_to", "max_layer_ratio", "step") if k in data}
        return cls(
            ratio=data.get("ratio"),
            target_speedup=data.get("target_speedup"),
            settings=PruneSettings(**s),
            finetune_epochs=data.get("finetune_epochs", 2),
            finetune_mode=data.get("finetune_mode", "plain"),
        )

    def to_dict(self) -> dict[str, Any]:
        d = {"importance": self.settings.importance, "global_pruning": self.settings.global_pruning,
             "finetune_epochs": self.finetune_epochs, "finetune_mode": self.finetune_mode}
        for k in ("ratio", "target_speedup"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.settings.round_to is not None:
            d["round_to"] = self.settings.round_to
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
    """Prune ``model`` per ``job``, fine-tune it, and measure every stage."""
    cache = cache if cache is not None else ThroughputCache()
    if not is_deploy(model):
        log("input is train-form: fusing it into the deploy form first")
    base_model = _as_deploy(model).to(device)
    spec = base_model.spec
    data = data.to(device)
    acc0 = evaluate(base_model, data, device)
    m0 = measure_spec(spec, measure, cache)
    rows = [_figures("original", spec, acc0, m0, measure.resolution)]
    met, note = True, ""
    if job.ratio is not None:
        pruned = prune_channels(base_model, job.ratio, job.settings, data, data.resolution)
    else:
        res = prune_to_speedup(
            base_model, job.target_speedup, measure, job.settings, data, cache, data.resolution,
            on_step=lambda s: log(f"  pruned {s.ratio:.0%} of channels: {s.speedup:.2f}x measured, "
                                  f"{s.macs / 1e9:.3f} GMACs"),
        )
        pruned, met = res.model, res.met
        if not met:
            note = (f"target {job.target_speedup:g}x cannot be met (max_layer_ratio "
                    f"{job.settings.max_layer_ratio:g}); kept the fastest step, {res.best.speedup:.2f}x")
    pruned = pruned.to(device)
    m1 = measure_spec(pruned.spec, measure, cache)
    rows.append(_figures("pruned", pruned.spec, evaluate(pruned, data, device), m1, measure.resolution))
    if job.finetune_epochs > 0:
        pruned = finetune(pruned, data, job.finetune_epochs, job.finetune_mode, train_base, device, progress)
        rows.append(_figures("fine-tuned", pruned.spec, evaluate(pruned, data, device), m1, measure.resolution))
    for r in rows:
        r["speedup"] = round(r["img/s"] / rows[0]["img/s"], 3)
        r["MACs_reduction"] = round(rows[0]["GMACs"] / r["GMACs"], 3)
    return PruneOutcome(pruned.eval(), rows, met, note)
