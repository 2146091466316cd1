"""Brief fine-tuning of a pruned deploy net, bare or with BatchNorm re-inserted.

``bn`` mode puts a BN behind every block conv (:func:`insert_bn`), trains,
and folds the BNs back (:func:`fold_inserted_bn`), so the result is plain
again either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..data import DataBundle
from ..errors import ConfigError
from ..model import PlainBlock, RepVGG, fold_bn
from ..registry import Registry
from ..train import Distillation, StepCallback, TrainConfig, train

__all__ = ["FINETUNE_MODES", "FINETUNE_DEFAULTS", "insert_bn", "fold_inserted_bn", "finetune"]


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
def fold_inserted_bn(model: RepVGG) -> RepVGG:
    """Fold every re-inserted BN back into its conv (the inverse of :func:`insert_bn`)."""
    for block in model.modules():
        if isinstance(block, PlainBlock) and isinstance(block.reparam, _ConvBN):
            conv, bn = block.reparam[0], block.reparam[1]
            w, b = fold_bn(conv.weight, bn, conv.bias)
            conv.weight.copy_(w.to(conv.weight.dtype))
            conv.bias.copy_(b.to(conv.bias.dtype))
            block.reparam = conv
    return model.eval()


def _finetune_plain(
    model: RepVGG, data: DataBundle, cfg: TrainConfig, device: Any, progress: StepCallback | None, distill: Distillation | None
) -> RepVGG:
    train(model, data, cfg, device, progress=progress, desc="fine-tune", distill=distill)
    return model.eval()


def _finetune_bn(
    model: RepVGG, data: DataBundle, cfg: TrainConfig, device: Any, progress: StepCallback | None, distill: Distillation | None
) -> RepVGG:
    model = insert_bn(model.to(device), data)
    train(model, data, cfg, device, progress=progress, desc="fine-tune (BN)", distill=distill)
    return fold_inserted_bn(model)


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
    progress: StepCallback | None = None,
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
