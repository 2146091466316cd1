"""Zero-cost accuracy proxies: a score per spec, computed without training.

Two kinds:

- counts (``params``, ``macs``): analytic from the spec, microseconds per net,
  so a pre-screen can score every net of a space;
- data-based (``synflow``, ``naswot``): one forward (and backward) pass of the
  net at initialization, tens of milliseconds to seconds per net on a CPU:
  for evidence and for re-ranking a small pool, not for 10^4 nets.

Every proxy is "higher predicts more accurate". Chosen by name from
:data:`PROXIES`; ``benchmarks/zero_cost_proxies_cpu.md`` holds the evidence
behind :data:`DEFAULT_PROXY`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..model import build_model
from ..registry import Registry
from ..spec import RepVGGSpec

__all__ = [
    "DEFAULT_PROXY",
    "PROXIES",
    "ProxyInputs",
    "ZeroCostProxy",
    "deploy_macs",
    "deploy_params",
    "naswot",
    "score",
    "synflow",
]


@dataclass(frozen=True)
class ProxyInputs:
    """What a proxy may look at besides the spec.

    Attributes:
        resolution: input side in pixels (the proxy data's, 32-64: cheap).
        images: a normalized mini-batch of the study's proxy data ``(N, C, H, W)``,
            needed by data-based proxies only (``DataBundle.sample_images``).
        seed: seeds the initialization of data-based proxies' nets.
    """

    resolution: int = 32
    images: torch.Tensor | None = None
    seed: int = 0


@dataclass(frozen=True)
class ZeroCostProxy:
    """One registered proxy: ``fn(spec, inputs) -> score``, higher = predicted more accurate. ``ms_per_net``:
    its median cost per net on a 2-core CPU (benchmarks/zero_cost_proxies_cpu.md), what a pre-screen of many
    nets is bounded by."""

    name: str
    fn: Callable[[RepVGGSpec, ProxyInputs], float]
    needs_data: bool
    description: str
    ms_per_net: float

    def __call__(self, spec: RepVGGSpec, inputs: ProxyInputs | None = None) -> float:
        inputs = inputs if inputs is not None else ProxyInputs()
        if self.needs_data and inputs.images is None:
            raise ConfigError(f"zero-cost proxy {self.name!r} needs a batch of proxy data (ProxyInputs.images)")
        return float(self.fn(spec, inputs))


# ---- counts (analytic, deploy form) -------------------------------------------------------------


def _out_size(size: int, stride: int) -> int:
    """Spatial side after a 3x3 conv with padding 1 (as the deploy net's)."""
    return (size + 2 - 3) // stride + 1


def _se_counts(spec: RepVGGSpec, cout: int) -> tuple[int, int]:
    """Params and MACs of one SE block (two 1x1 convs with bias on the pooled vector)."""
    if not spec.use_se:
        return 0, 0
    hidden = max(1, cout // spec.se_reduction)
    return 2 * cout * hidden + hidden + cout, 2 * cout * hidden


def deploy_params(spec: RepVGGSpec) -> int:
    """Parameters of the deploy net (conv3x3 + bias per layer, SE, linear head), from the spec alone.

    Equals ``counting.complexity(spec).params``, about 1000x faster (no model is built).
    """
    n = 0
    for cin, cout, g in zip(spec.in_widths, spec.widths, spec.groups):
        n += cout * (cin // g) * 9 + cout + _se_counts(spec, cout)[0]
    return n + spec.feature_dim * spec.num_classes + spec.num_classes


def deploy_macs(spec: RepVGGSpec, resolution: int = 224) -> int:
    """Multiply-accumulates of the deploy net for one image, counted as ``counting.complexity`` does
    (convs, SE's 1x1 convs and the head; pooling, bias and ReLU are free)."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    size, n = resolution, 0
    for cin, cout, g, stride in zip(spec.in_widths, spec.widths, spec.groups, spec.layer_strides):
        size = _out_size(size, stride)
        n += cout * (cin // g) * 9 * size * size + _se_counts(spec, cout)[1]
    return n + spec.feature_dim * spec.num_classes


def _params(spec: RepVGGSpec, inputs: ProxyInputs) -> float:
    return float(deploy_params(spec))


def _macs(spec: RepVGGSpec, inputs: ProxyInputs) -> float:
    return float(deploy_macs(spec, inputs.resolution))


# ---- data-based (one pass at initialization) --------------------------------------------------


def _seeded_net(spec: RepVGGSpec, deploy: bool, seed: int) -> nn.Module:
    """The net at its default initialization under ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec, deploy=deploy)


def synflow(spec: RepVGGSpec, inputs: ProxyInputs) -> float:
    """log10 of SynFlow (Tanaka et al. 2020): ``sum |theta * dR/dtheta|`` with ``R`` the summed output of
    the net with ``|weights|`` on an all-ones input.

    On the deploy form (plain conv3x3 + bias, no BN), which is what the
    zero-cost-proxy studies do (they compute SynFlow with BN removed, since BN
    in train mode would normalize the all-ones signal away). float64, because
    the product over ~20 layers of |W| overflows float32 on the wide nets. The
    log keeps the figures readable; the ranking is the same.
    """
    net = _seeded_net(spec, deploy=True, seed=inputs.seed).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = torch.ones(1, spec.in_channels, inputs.resolution, inputs.resolution, dtype=torch.float64)
    net.zero_grad()
    net(x).sum().backward()
    total = sum(
        (m.weight * m.weight.grad).abs().sum().item()
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None
    )
    return math.log10(total) if total > 0 else float("-inf")


def naswot(spec: RepVGGSpec, inputs: ProxyInputs) -> float:
    """NASWOT (Mellor et al. 2021): ``log|K|`` of the kernel of binary ReLU codes over one mini-batch.

    ``K[i, j]`` counts the ReLUs where images i and j agree (both active or
    both off). The train-form net at initialization, BN on batch statistics
    (train mode), as in the paper. Nets that tell images apart at init score higher.
    """
    images = inputs.images
    assert images is not None  # ZeroCostProxy checked
    net = _seeded_net(spec, deploy=False, seed=inputs.seed).train()
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(_module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        codes = (out.detach().reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


PROXIES: Registry[ZeroCostProxy] = Registry("zero-cost proxy")
for _p in (
    ZeroCostProxy("params", _params, False, "deploy-net parameters (analytic)", 0.06),
    ZeroCostProxy("macs", _macs, False, "deploy-net multiply-accumulates at the proxy resolution (analytic)", 0.03),
    ZeroCostProxy(
        "synflow", synflow, False, "log10 SynFlow of the deploy net (no BN), |weights|, all-ones input, float64",
        1490.0,
    ),
    ZeroCostProxy("naswot", naswot, True, "NASWOT log|K| of ReLU codes, train-form net at init, one mini-batch",
                  2360.0),
):
    PROXIES.register(_p.name, _p)

# Chosen on benchmarks/zero_cost_proxies_cpu.md: the count that ranks the trained nets best.
DEFAULT_PROXY = "params"


def score(name: str, spec: RepVGGSpec, inputs: ProxyInputs | None = None) -> float:
    """The score of ``spec`` on the proxy registered as ``name`` (an unknown name names close matches)."""
    return PROXIES.get(name)(spec, inputs)
