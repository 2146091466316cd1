"""Train-form and deploy-form RepVGG networks, both pure functions of a spec.

Train form: every block is ``ReLU(BN(conv3x3 x) + BN(conv1x1 x) + BN(x))``
(``spec.block = "repvgg"``) or the quantization-friendly
``ReLU(BN(BN(conv3x3 x) + conv1x1 x + b + x))`` (``"qarepvgg"``), the
identity branch only where in == out channels and stride 1.
Deploy form: every block is one ``conv3x3 + bias`` followed by ReLU.
:func:`reparameterize` turns the first into the second exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import RepVGGNasError
from .spec import RepVGGSpec

__all__ = [
    "ConvBN",
    "SqueezeExcite",
    "RepVGGBlock",
    "QARepVGGBlock",
    "TRAIN_BLOCKS",
    "PlainBlock",
    "RepVGG",
    "build_model",
    "reparameterize",
    "is_deploy",
    "fusion_error",
    "fold_bn",
    "check_fusion",
    "FUSION_TOLERANCE",
    "FusionMismatchError",
]

# Fused and train-form nets must agree to float32 rounding (relative to the output scale).
FUSION_TOLERANCE = 1e-4


class FusionMismatchError(RepVGGNasError):
    """The fused model does not reproduce the train-form model."""


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (one branch of a train-form block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class SqueezeExcite(nn.Module):
    """The SE block of RepVGG-D2se: global pool, 1x1 down, ReLU, 1x1 up, sigmoid gate."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1, bias=True)
        self.up = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.up(torch.relu(self.down(s))))
        return x * s


def _se(spec: RepVGGSpec, cout: int) -> nn.Module:
    return SqueezeExcite(cout, max(1, cout // spec.se_reduction)) if spec.use_se else nn.Identity()


def fold_bn(
    kernel: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold BN into the conv before it: ``W*gamma/std``, ``beta + (b - mean)*gamma/std``.

    ``bias`` is the conv's own bias (zero when absent). Done in float64 so the
    fused net matches the unfused one to float32 rounding; callers cast back.
    """
    std = (bn.running_var.double() + bn.eps).sqrt()
    t = bn.weight.double() / std
    b = bias.double() if bias is not None else torch.zeros_like(t)
    return kernel.double() * t.reshape(-1, 1, 1, 1), bn.bias.double() + (b - bn.running_mean.double()) * t


class _Block(nn.Module):
    """What every block form shares: its shape, the optional SE and the ReLU.

    Train forms (:class:`RepVGGBlock`, :class:`QARepVGGBlock`) and the deploy
    form (:class:`PlainBlock`) compute ``ReLU(SE(linear(x)))``; only the linear
    part differs, so fusion only has to replace it: each form builds it in
    :meth:`_build` (registered before ``se`` and ``act``, keeping state_dict order).
    """

    def __init__(
        self, cin: int, cout: int, stride: int, groups: int, se: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.stride, self.groups = stride, groups
        self._build(cin, cout, stride, groups)
        self.se = se if se is not None else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def _build(self, cin: int, cout: int, stride: int, groups: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def has_identity(self) -> bool:
        return self.in_channels == self.out_channels and self.stride == 1

    def _identity_kernel(self, like: torch.Tensor) -> torch.Tensor:
        """The identity map as a 3x3 kernel: a 1 at the centre of channel ``i % (in/groups)``."""
        per_group = self.in_channels // self.groups
        eye = torch.zeros_like(like)
        idx = torch.arange(self.in_channels)
        eye[idx, idx % per_group, 1, 1] = 1.0
        return eye


class _TrainBlock(_Block):
    """A multi-branch train-form block that fuses into one :class:`PlainBlock`."""

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def identity_init(self, shift: float) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_deploy(self) -> PlainBlock:
        """A new :class:`PlainBlock` computing the same function in eval mode."""
        w = next(self.parameters())
        block = PlainBlock(
            self.in_channels, self.out_channels, self.stride, self.groups, copy.deepcopy(self.se)
        ).to(device=w.device, dtype=w.dtype)
        kernel, bias = self.fused_kernel_bias()
        with torch.no_grad():
            block.reparam.weight.copy_(kernel.to(w.dtype))
            block.reparam.bias.copy_(bias.to(w.dtype))
        return block


class RepVGGBlock(_TrainBlock):
    """Train-form block with 3x3, 1x1 and (where shapes allow) identity branches."""

    def _build(self, cin: int, cout: int, stride: int, groups: int) -> None:
        self.conv3x3 = ConvBN(cin, cout, 3, stride, groups)
        self.conv1x1 = ConvBN(cin, cout, 1, stride, groups)
        self.identity = nn.BatchNorm2d(cin) if self.has_identity else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x) + self.conv1x1(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(self.se(y))

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equivalent to this block's branches (eval mode)."""
        k3, b3 = fold_bn(self.conv3x3.conv.weight.double(), self.conv3x3.bn)
        k1, b1 = fold_bn(self.conv1x1.conv.weight.double(), self.conv1x1.bn)
        kernel = k3 + nn.functional.pad(k1, [1, 1, 1, 1])
        bias = b3 + b1
        if self.identity is not None:
            ki, bi = fold_bn(self._identity_kernel(kernel), self.identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def identity_init(self, shift: float) -> bool:
        """Start as ``ReLU(BN(x) + shift)``: the conv branches' BN scales zeroed."""
        if self.identity is None:
            return False
        self.conv3x3.bn.weight.zero_()
        self.conv1x1.bn.weight.zero_()
        self.identity.bias.fill_(shift)
        return True


class QARepVGGBlock(_TrainBlock):
    """The quantization-friendly block (QARepVGG, Chu et al., AAAI 2024).

    ``ReLU(SE(BN(BN3(conv3x3 x) + conv1x1 x + b + x)))``: BN only on the 3x3
    branch, a biased 1x1 branch, a BN-free identity and one BN after the sum.
    Per-branch BNs (RepVGG) let the fused kernel's per-channel scale spread
    widely, which per-tensor INT8 cannot represent; here the branch sum is
    normalized once. SE sits after the post-sum BN, so the block still fuses
    exactly into one conv3x3 + bias.
    """

    def _build(self, cin: int, cout: int, stride: int, groups: int) -> None:
        self.conv3x3 = ConvBN(cin, cout, 3, stride, groups)
        self.conv1x1 = nn.Conv2d(cin, cout, 1, stride, 0, groups=groups, bias=True)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x) + self.conv1x1(x)
        if self.has_identity:
            y = y + x
        return self.act(self.se(self.bn(y)))

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Branches summed into one 3x3 kernel + bias, then the post-sum BN folded in."""
        kernel, bias = fold_bn(self.conv3x3.conv.weight.double(), self.conv3x3.bn)
        kernel = kernel + nn.functional.pad(self.conv1x1.weight.double(), [1, 1, 1, 1])
        bias = bias + self.conv1x1.bias.double()
        if self.has_identity:
            kernel = kernel + self._identity_kernel(kernel)
        return fold_bn(kernel, self.bn, bias)

    @torch.no_grad()
    def identity_init(self, shift: float) -> bool:
        """Start as ``ReLU(BN(x) + shift)``: the 3x3 BN scale and the 1x1 branch zeroed."""
        if not self.has_identity:
            return False
        self.conv3x3.bn.weight.zero_()
        self.conv1x1.weight.zero_()
        self.conv1x1.bias.zero_()
        self.bn.bias.fill_(shift)
        return True


class PlainBlock(_Block):
    """Deploy-form block: one 3x3 conv with bias, optional SE, ReLU."""

    def _build(self, cin: int, cout: int, stride: int, groups: int) -> None:
        self.reparam = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.se(self.reparam(x)))


# The train-form block of each ``RepVGGSpec.block`` value.
TRAIN_BLOCKS: dict[str, type[_TrainBlock]] = {"repvgg": RepVGGBlock, "qarepvgg": QARepVGGBlock}


class RepVGG(nn.Module):
    """A RepVGG network built from a :class:`RepVGGSpec`.

    Layout: ``stages[s][b]`` blocks, global average pool, ``head`` linear.
    ``deploy=True`` builds the plain form directly (e.g. to load fused weights).
    """

    def __init__(self, spec: RepVGGSpec, deploy: bool = False) -> None:
        super().__init__()
        self.spec = spec
        block_cls = PlainBlock if deploy else TRAIN_BLOCKS[spec.block]
        layers = zip(spec.in_widths, spec.widths, spec.layer_strides, spec.groups)
        blocks = [block_cls(ci, co, s, g, _se(spec, co)) for ci, co, s, g in layers]
        stages, i = [], 0
        for d in spec.depths:
            stages.append(nn.Sequential(*blocks[i : i + d]))
            i += d
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(spec.feature_dim, spec.num_classes)

    @property
    def deploy(self) -> bool:
        return is_deploy(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.forward_features(x)), 1))


def build_model(spec: RepVGGSpec, deploy: bool = False) -> RepVGG:
    """Build the train-form (default) or deploy-form network of ``spec``."""
    return RepVGG(spec, deploy=deploy)


def is_deploy(model: nn.Module) -> bool:
    """True when ``model`` holds no train-form block."""
    return not any(isinstance(m, _TrainBlock) for m in model.modules())


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every train-form block (:data:`TRAIN_BLOCKS`) in ``model`` into a :class:`PlainBlock`.

    Returns a new model (the input is untouched) unless ``inplace``. Uses the
    BN running statistics, i.e. the result equals ``model`` in eval mode. The
    returned model is in eval mode.
    """
    target = model if inplace else copy.deepcopy(model)

    def walk(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, _TrainBlock):
                setattr(module, name, child.to_deploy())
            else:
                walk(child)

    if isinstance(target, _TrainBlock):
        return target.to_deploy().eval()
    walk(target)
    return target.eval()


@torch.no_grad()
def fusion_error(
    reference: nn.Module, fused: nn.Module, resolution: int = 32, batch: int = 2, seed: int = 0
) -> float:
    """``max|ref(x) - fused(x)| / max|ref(x)|`` on a seeded random batch, both in eval mode.

    The equivalence check of the data flow: a fused net must be the same function.
    """
    spec = getattr(reference, "spec", None)
    channels = spec.in_channels if spec is not None else 3
    p = next(reference.parameters())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, resolution, resolution, generator=g).to(p.device, p.dtype)
    was_training = reference.training
    reference.eval()
    fused.eval()
    try:
        a, b = reference(x).double(), fused(x).double()
    finally:
        reference.train(was_training)
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def check_fusion(
    reference: nn.Module, fused: nn.Module, resolution: int = 32, tolerance: float = FUSION_TOLERANCE
) -> float:
    """:func:`fusion_error`, raising :class:`FusionMismatchError` above ``tolerance``; returns the error."""
    err = fusion_error(reference, fused, resolution=resolution)
    if not err <= tolerance:  # NaN fails too
        raise FusionMismatchError(
            f"fused net differs from the train-form net (relative error {err:.2e} > {tolerance:g}); "
            f"non-finite or extreme BN statistics are the usual cause"
        )
    return err
