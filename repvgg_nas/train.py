"""Brief proxy training and top-1 evaluation of one network.

A search trains dozens of candidates for a few epochs each, so the loop is
built to be cheap and repeatable rather than state of the art:

- SGD with (Nesterov) momentum, a per-step cosine or one-cycle schedule with
  linear warmup, label smoothing, and no weight decay on BatchNorm
  parameters and biases (everything with ``ndim <= 1``);
- data are a :class:`~repvgg_nas.data.DataBundle` held on the training device,
  shuffled and augmented there by a seeded ``torch.Generator``, so the same
  seed, spec and config give the same result on CPU;
- on CUDA, ``amp="auto"`` and ``channels_last="auto"`` switch on float16
  autocast with a GradScaler and NHWC memory format; on CPU both stay off;
- a non-finite loss stops training with :class:`DivergenceError`, whose
  message (``non-finite loss at epoch E step S``) the search records as the
  trial's failure reason;
- progress goes to an optional callback, one :class:`TrainStep` per step;
  the caller decides what to show (the CLIs draw a bar with
  :class:`repvgg_nas.cli.StepBar`).

Build candidates with :func:`init_model`, not bare ``build_model``: its
:func:`identity_init` plus the default gradient clipping are what let a deep
net such as RepVGG-A0 outscore small nets within a 6-epoch budget (71.7 %
vs 39.3 % for A0 without them; tiny net 55.2 %; see
``benchmarks/proxy_data.md``).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from .config import Table
from .data import DataBundle
from .devices import resolve_device
from .errors import ConfigError
from .model import build_model
from .registry import Registry
from .spec import RepVGGSpec

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainStep",
    "StepCallback",
    "Distillation",
    "DivergenceError",
    "SCHEDULES",
    "lr_factors",
    "train",
    "evaluate",
    "init_model",
    "identity_init",
    "param_groups",
]


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss.

    Deliberately not a :class:`~repvgg_nas.errors.RepVGGNasError`: it is a
    property of one candidate (a trial failure to record), not a user error.
    """

    def __init__(
        self, reason: str, epoch: int, step: int, history: tuple[dict[str, float], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch
        self.step = step
        self.history = history


# ---------------------------------------------------------------------------
# schedules: torch schedulers stepped once per batch, given total and warmup steps
# ---------------------------------------------------------------------------

# One-cycle (Smith): from peak/25 up to the peak, then down to peak/25/1e4.
_ONECYCLE_START = 1 / 25
_ONECYCLE_END = 1 / 25 / 1e4


def _cosine(opt: torch.optim.Optimizer, total: int, warmup: int) -> LRScheduler:
    """Linear warmup from peak/warmup to the peak over ``warmup`` steps, then cosine decay to 0."""
    decay = CosineAnnealingLR(opt, T_max=max(1, total - warmup), eta_min=0.0)
    if warmup == 0:
        return decay
    ramp = LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=max(1, warmup - 1))
    return SequentialLR(opt, [ramp, decay], milestones=[warmup])


def _onecycle(opt: torch.optim.Optimizer, total: int, warmup: int) -> LRScheduler:
    """One-cycle: a linear ramp from peak/25 to the peak, cosine down to peak/25/1e4.

    Torch's ``OneCycleLR`` anneals its warmup with the same curve as its
    decay (cosine or linear); this schedule ramps linearly and decays along a
    cosine, so it is ``LinearLR`` then ``CosineAnnealingLR``. ``warmup`` steps
    form the ramp (at least one). Every param group has the same peak.
    """
    warmup = max(1, warmup)
    peak = opt.param_groups[0]["lr"]
    ramp = LinearLR(opt, start_factor=_ONECYCLE_START, end_factor=1.0, total_iters=warmup)
    decay = CosineAnnealingLR(opt, T_max=max(1, total - warmup), eta_min=peak * _ONECYCLE_END)
    return SequentialLR(opt, [ramp, decay], milestones=[warmup])


# A schedule builds the scheduler of an optimizer whose lr is the peak.
Schedule = Callable[[torch.optim.Optimizer, int, int], LRScheduler]
SCHEDULES: Registry[Schedule] = Registry("lr schedule")
SCHEDULES.register("cosine", _cosine)
SCHEDULES.register("onecycle", _onecycle)


def lr_factors(schedule: str, total: int, warmup: int) -> list[float]:
    """The factor of the peak learning rate at each of ``total`` steps under ``schedule``."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = SCHEDULES.get(schedule)(opt, total, warmup)
    out = []
    for _ in range(total):
        out.append(scheduler.get_last_lr()[0])
        _step_schedule(scheduler)
    return out


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

_TRISTATE = ("auto", "on", "off")


@dataclass(frozen=True)
class TrainConfig:
    """Proxy-training budget and hyper-parameters.

    The defaults are the search's proxy budget: 6 epochs of the default
    synthetic data (468 steps of 64), about 45 s for RepVGG-A0 on an idle
    2-core CPU (see ``benchmarks/proxy_data.md``).

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step (the last partial batch is dropped).
        lr: peak learning rate (for this batch size; not rescaled).
        momentum: SGD momentum; ``nesterov`` switches to Nesterov momentum.
        weight_decay: L2 on conv/linear weights only (never BN or biases).
        label_smoothing: passed to ``nn.CrossEntropyLoss``.
        schedule: ``cosine`` or ``onecycle`` (:data:`SCHEDULES`), stepped per batch.
        warmup_epochs: length of the linear warmup (may be fractional).
        seed: drives the shuffle and augmentation (give :func:`init_model` the
            same seed for a fully reproducible trial).
        amp: ``auto`` (float16 autocast + GradScaler on CUDA only), ``on``, ``off``.
        channels_last: ``auto`` (on CUDA only), ``on``, ``off``.
        max_grad_norm: clip the global gradient norm to this (``None`` or 0: no
            clipping). Clipping tames the first steps of deep plain nets, whose
            BN-induced gradient explosion at init otherwise costs them epochs.
    """

    epochs: int = 6
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"
    warmup_epochs: float = 1.0
    seed: int = 0
    amp: str = "auto"
    channels_last: str = "auto"
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        t = Table.of(self, "train")
        for name, lo in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            t.get(name, int, min=lo)
        values = {
            "lr": t.get("lr", float, min=0, min_open=True),
            "momentum": t.get("momentum", float, min=0, max=1, max_open=True),
            "weight_decay": t.get("weight_decay", float, min=0),
            "label_smoothing": t.get("label_smoothing", float, min=0, max=1, max_open=True),
            "warmup_epochs": t.get("warmup_epochs", float, min=0),
        }
        if self.max_grad_norm is not None:
            clip = t.get("max_grad_norm", float, None, min=0)
            values["max_grad_norm"] = clip or None  # TOML has no null: 0 switches clipping off
        if t.get("nesterov", bool) and values["momentum"] == 0:
            raise t.error("nesterov", "needs momentum > 0")
        if values["warmup_epochs"] > self.epochs:
            raise t.error("warmup_epochs", f"({values['warmup_epochs']}) exceeds train.epochs ({self.epochs})")
        schedule = t.get("schedule", str)
        if schedule not in SCHEDULES:
            raise t.reject("schedule", schedule, f"one of {SCHEDULES.list()}")
        values["schedule"] = SCHEDULES.canonical(schedule)
        for key in ("amp", "channels_last"):
            v = t.get(key, (str, bool))
            if isinstance(v, bool):  # TOML true/false read as on/off
                v = "on" if v else "off"
            if v.lower() not in _TRISTATE:
                raise t.reject(key, v, f"one of {list(_TRISTATE)} (or true/false)")
            values[key] = v.lower()
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainConfig:
        """Build from a config mapping (a study's ``[train]`` table), rejecting unknown keys."""
        if data is None:
            return cls()
        return Table(data, "train").build(cls)

    def resolved(self, device: torch.device | str) -> TrainConfig:
        """The settings as they train on ``device``: ``amp``/``channels_last`` ``auto`` made ``on`` or ``off``
        (a result trained with them is the same whichever spelling asked for it)."""
        device = torch.device(device)
        return self.replace(amp="on" if _enabled(self.amp, device) else "off",
                            channels_last="on" if _enabled(self.channels_last, device) else "off")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict that :meth:`from_dict` reads back (no clipping is written as 0: TOML has no null)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["max_grad_norm"] is None:
            d["max_grad_norm"] = 0.0
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


@dataclass
class TrainState:
    """Where a training run stands after a whole epoch: enough to continue it exactly.

    Together with the model's weights (and BN statistics) this is the run:
    :func:`train` with ``resume=state`` continues the same schedule over
    ``cfg.epochs`` with the same optimizer momentum and the same shuffle and
    augmentation stream, so stopping after epoch ``k`` and continuing gives
    the same net as one uninterrupted run. A multi-fidelity search keeps one
    per candidate between rungs (and on disk, to survive a killed worker).
    """

    epoch: int  # epochs done
    step: int  # optimizer steps done
    optimizer: dict[str, Any]
    generator: torch.Tensor  # the shuffle/augmentation generator's state
    scaler: dict[str, Any]
    history: list[dict[str, float]]
    seconds: float  # training time so far, summed over the pieces of the run
    images: int  # training images seen so far

    KEYS = ("epoch", "step", "optimizer", "generator", "scaler", "history", "seconds", "images")

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain containers only (``torch.load(weights_only=True)`` reads it back)."""
        return {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainState:
        missing = [k for k in cls.KEYS if k not in d]
        if missing:
            raise ValueError(f"training state lacks {', '.join(missing)}")
        return cls(**{k: d[k] for k in cls.KEYS})


class TrainResult(NamedTuple):
    """What one proxy training run did (counted from its very start when it was resumed).

    ``final_loss`` is the mean training loss of the last epoch; ``history``
    holds one dict per epoch (``epoch``, ``loss``, ``train_acc``, ``lr``,
    ``seconds``); ``images_per_second`` counts training images over
    ``seconds`` (the whole loop, augmentation included). ``state`` continues
    the run (:func:`train` ``resume=``) when it stopped before ``cfg.epochs``.
    """

    final_loss: float
    epochs: int
    steps: int
    seconds: float
    images_per_second: float
    history: tuple[dict[str, float], ...]
    state: TrainState | None = None


class TrainStep(NamedTuple):
    """One finished training step, as given to a ``progress`` callback of :func:`train`.

    ``step_in_epoch`` counts from 1 within ``epoch`` (also from 1), ``step``
    from 1 over the whole run of ``total`` steps. ``loss`` is the step's loss
    where training checked it anyway (every step on CPU, every 25 on GPU:
    reading it forces a device sync), else None.
    """

    desc: str
    epoch: int
    epochs: int
    step_in_epoch: int
    steps_per_epoch: int
    step: int
    total: int
    loss: float | None
    lr: float


StepCallback = Callable[[TrainStep], None]


@dataclass(frozen=True)
class Distillation:
    """Train against a teacher's soft targets as well as the labels.

    The loss is ``(1 - weight) * CE(labels) + weight * T^2 * KL(teacher_T || student_T)``
    with both logits softened by ``temperature`` (Hinton et al., 2015). The
    teacher runs in eval mode without gradients. Used to fine-tune pruned nets
    from their unpruned parent.
    """

    teacher: nn.Module
    weight: float = 0.9
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"distillation weight must be in [0, 1], got {self.weight!r}")
        if not self.temperature > 0:
            raise ConfigError(f"distillation temperature must be > 0, got {self.temperature!r}")

    def loss(self, logits: torch.Tensor, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = self.teacher(x).float()
        t = self.temperature
        kl = nn.functional.kl_div(
            torch.log_softmax(logits / t, 1), torch.log_softmax(soft / t, 1), reduction="batchmean", log_target=True
        )
        return (1 - self.weight) * hard + self.weight * t * t * kl


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _device(device: torch.device | str | None) -> torch.device:
    """A torch.device as given; a name (``None`` meaning ``auto``) through :func:`~repvgg_nas.devices.resolve_device`."""
    if isinstance(device, torch.device):
        return device
    return resolve_device("auto" if device is None else str(device))


def _enabled(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


IDENTITY_SHIFT = 2.0


def identity_init(model: nn.Module, shift: float = IDENTITY_SHIFT) -> int:
    """Make every block that has an identity branch start as (nearly) an identity map.

    The BN scales of its 3x3 and 1x1 branches are zeroed and its identity BN
    gets bias ``shift``, so the block computes ``ReLU(standardized(x) + 2)``:
    an affine copy of its input that the ReLU barely clips (~98 % passes).
    This is the RepVGG analogue of ResNet's ``zero_init_residual``. With the
    default init a deep stage starts as a stack of ``ReLU(BN(x))`` that
    zeroes over 90 % of the activations by its 14th block, and RepVGG-A0
    then spends most of a short proxy budget on a plateau, scoring below far
    smaller nets (measured in ``benchmarks/proxy_data.md``). Only the start
    point changes: the architecture and its fusion are untouched. Returns
    the number of blocks changed.
    """
    from .model import TRAIN_BLOCKS

    kinds = tuple(TRAIN_BLOCKS.values())  # each block knows its own identity start
    return sum(b.identity_init(shift) for b in model.modules() if isinstance(b, kinds))


def init_model(
    spec: RepVGGSpec,
    seed: int = 0,
    device: torch.device | str = "cpu",
    identity: bool = True,
) -> nn.Module:
    """Build the train-form model of ``spec`` for proxy training, weights drawn from ``seed``.

    Uses a forked RNG so the caller's global random state is untouched; with
    the same seed the same spec always starts from the same weights.
    ``identity`` applies :func:`identity_init`; short budgets need it for deep
    nets to be ranked fairly, so use it for every candidate of a search.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    if identity:
        identity_init(model)
    return model.to(device)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two SGD groups: conv/linear weights decay, BN parameters and biases (ndim <= 1) do not.

    Decaying BN scales fights the normalization (it only changes the
    effective learning rate) and decaying biases has no regularizing value.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return [g for g in groups if g["params"]]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def train(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | Mapping[str, Any] | None = None,
    device: torch.device | str | None = "cpu",
    progress: StepCallback | None = None,
    desc: str = "train",
    distill: Distillation | None = None,
    *,
    resume: TrainState | None = None,
    stop_epoch: int | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train`` for ``cfg.epochs`` epochs.

    ``stop_epoch`` ends the run after that many epochs of the ``cfg.epochs``
    schedule (the learning rate follows the whole schedule); ``resume``
    continues a run from the :class:`TrainState` of an earlier result (the
    model must hold that run's weights). Both serve the rungs of a
    multi-fidelity search, which continues promoted candidates.

    ``data`` is moved to ``device`` when it is not there yet (move it once
    yourself when training many models). ``progress`` is called with a
    :class:`TrainStep` (labelled ``desc``) after every step. Raises
    :class:`DivergenceError` at the first non-finite loss. ``distill`` adds a
    teacher's soft targets to the loss (:class:`Distillation`).
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    device = _device(device)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking a TrainStep, or None; got {progress!r}")
    report = progress
    data = data.to(device)
    _check_fits(model, data)
    use_amp = _enabled(cfg.amp, device)
    if use_amp and device.type != "cuda":
        raise ConfigError(f"train.amp = 'on' needs a CUDA device, got {device}")
    channels_last = _enabled(cfg.channels_last, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    model.train()
    if distill is not None:
        distill.teacher.to(device=device, memory_format=memory_format).eval()

    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    opt = torch.optim.SGD(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov
    )
    scheduler = SCHEDULES.get(cfg.schedule)(opt, total, warmup)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    stop = cfg.epochs if stop_epoch is None else stop_epoch
    if not 1 <= stop <= cfg.epochs:
        raise ValueError(f"stop_epoch must be in 1..{cfg.epochs} (train.epochs), got {stop_epoch}")
    start, step, images, seconds_before = 0, 0, 0, 0.0
    history: list[dict[str, float]] = []
    if resume is not None:
        if not resume.epoch < stop:
            raise ValueError(f"the run to resume already did {resume.epoch} epoch(s); asked to stop after {stop}")
        for _ in range(resume.step):  # the schedule is a function of the step: replay it
            _step_schedule(scheduler)
        opt.load_state_dict(resume.optimizer)
        for group, lr in zip(opt.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr  # the replayed schedule's, whatever the saved groups hold
        gen.set_state(resume.generator.cpu() if device.type == "cpu" else resume.generator)
        scaler.load_state_dict(resume.scaler)
        start, step, images, seconds_before = resume.epoch, resume.step, resume.images, resume.seconds
        history = [dict(h) for h in resume.history]
    # Checking finiteness forces a host sync; on GPU do it every few steps, on
    # the losses kept on device, and still report the exact first bad step.
    check_every = 1 if device.type == "cpu" else 25

    _sync(device)
    t0 = time.perf_counter()
    for epoch in range(start, stop):
        t_ep = time.perf_counter()
        losses = torch.zeros(steps_per_epoch, device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        pending = 0
        for i, (x, y) in enumerate(data.train_batches(cfg.batch_size, gen)):
            lr = scheduler.get_last_lr()[0]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
                loss = criterion(logits.float(), y)
                if distill is not None:
                    loss = distill.loss(logits.float(), x, loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.max_grad_norm is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            _step_schedule(scheduler)
            losses[i] = loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            step += 1
            pending += 1
            last = i == steps_per_epoch - 1
            shown = None
            if pending >= check_every or last:
                pending = 0
                _check_finite(losses[: i + 1], epoch, history)
                if report is not None:
                    shown = losses[i].item()  # already synced by the check
            if report is not None:
                report(TrainStep(desc, epoch + 1, cfg.epochs, i + 1, steps_per_epoch, step, total, shown, lr))
        images += seen
        mean_loss = float(losses[:steps_per_epoch].mean())
        history.append(
            {
                "epoch": epoch + 1,
                "loss": mean_loss,
                "train_acc": float(correct) / max(1, seen),
                "lr": lr,
                "seconds": time.perf_counter() - t_ep,
            }
        )
    _sync(device)
    seconds = seconds_before + time.perf_counter() - t0
    state = None
    if stop < cfg.epochs:
        state = TrainState(
            epoch=stop, step=step, optimizer=copy.deepcopy(opt.state_dict()), generator=gen.get_state(),
            scaler=scaler.state_dict(), history=[dict(h) for h in history], seconds=seconds, images=images,
        )
    return TrainResult(
        final_loss=history[-1]["loss"],
        epochs=len(history),
        steps=step,
        seconds=seconds,
        images_per_second=images / seconds if seconds > 0 else float("inf"),
        history=tuple(history),
        state=state,
    )


def _step_schedule(scheduler: LRScheduler) -> None:
    """One scheduler step, also where no optimizer step came first.

    The schedule follows the step count: a replayed resume and a first step
    that the GradScaler skipped (non-finite fp16 gradients) both step the
    scheduler without ``optimizer.step()``, which torch warns about.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        scheduler.step()


def _check_finite(losses: torch.Tensor, epoch: int, history: list[dict[str, float]]) -> None:
    """Raise DivergenceError naming the first non-finite loss (1-based epoch and step in epoch)."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        reason = f"non-finite loss at epoch {epoch + 1} step {i + 1}"
        raise DivergenceError(reason, epoch + 1, i + 1, tuple(history))


def _check_fits(model: nn.Module, data: DataBundle) -> None:
    """A RepVGG built for other classes or channels fails here with the numbers, not in a conv."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, RepVGGSpec):
        return
    if spec.num_classes != data.num_classes:
        raise ConfigError(
            f"the model predicts {spec.num_classes} classes but dataset {data.name!r} has "
            f"{data.num_classes}; build it from spec.with_num_classes({data.num_classes})"
        )
    if spec.in_channels != data.in_channels:
        raise ConfigError(
            f"the model takes {spec.in_channels} input channels but dataset {data.name!r} "
            f"has {data.in_channels}"
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: DataBundle,
    device: torch.device | str | None = "cpu",
    batch_size: int = 500,
    split: str = "val",
    channels_last: str = "auto",
) -> float:
    """Top-1 accuracy of ``model`` on ``data``'s ``val`` (or ``train``) split, in eval mode.

    Works for train-form and deploy-form models alike; the model's
    training flag is restored afterwards. Always float32, so the fused and
    unfused forms are compared on equal terms.
    """
    if split not in ("val", "train"):
        raise ConfigError(f"split must be 'val' or 'train', got {split!r}")
    device = _device(device)
    data = data.to(device)
    use_cl = _enabled(channels_last, device)
    was_training = model.training
    model.to(device=device, memory_format=torch.channels_last if use_cl else torch.contiguous_format)
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    try:
        for x, y in data.batches(split, batch_size):
            if use_cl:
                x = x.contiguous(memory_format=torch.channels_last)
            correct += (model(x).argmax(1) == y).sum()
            total += y.numel()
    finally:
        model.train(was_training)
    return float(correct) / max(1, total)
