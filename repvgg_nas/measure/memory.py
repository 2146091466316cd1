"""Peak activation memory of a deploy (plain) net: the paper's memory argument as a figure.

A deploy RepVGG is a plain chain: while a block runs, only its input and
its output are alive (the ReLU works in place), and the input is freed once
the next block starts. The peak over the net is therefore the largest
``input + output`` of any layer, times the batch and the bytes per element.
With squeeze-excitation the gated output is a third tensor of the output's
size. The head (global pool + linear) adds the last feature map plus a
vector per image, which never exceeds the last block's figure by much but is
counted all the same. Weights are not activations and are left out.

Computed from the spec alone (the layer walk :class:`~repvgg_nas.model.RepVGG`
builds from: ``in_widths``, ``widths``, ``layer_strides``), so it costs no
memory and no model.
"""

from __future__ import annotations

from typing import NamedTuple

from ..spec import RepVGGSpec
from .settings import MeasureSettings

__all__ = [
    "BYTES_PER_ELEMENT", "DeployLayer", "deploy_layers", "LayerActivations", "deployed_peak_memory_mb",
    "layer_activations", "peak_activation_elements", "peak_memory_mb",
]

MB = 1024 * 1024  # MiB, as torch.cuda's memory figures
# Bytes of one activation element by the arithmetic a runtime computes in (MeasureSettings.precision).
BYTES_PER_ELEMENT = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1}


class DeployLayer(NamedTuple):
    """One step of the deploy net and the shape it runs at (per image).

    A block is ``ReLU(SE(conv3x3(x) + bias))``; the head is global average pool
    + linear, with ``out_channels`` the classes. ``size`` is the input height =
    width; ``se_hidden`` is the SE bottleneck width (0 without SE).
    """

    name: str  # ``layer 3`` or ``head``
    kind: str  # ``block`` or ``head``
    in_channels: int
    out_channels: int
    groups: int
    stride: int
    size: int
    se_hidden: int = 0

    @property
    def out_size(self) -> int:
        return _out_size(self.size, self.stride) if self.kind == "block" else 1


class LayerActivations(NamedTuple):
    """Elements alive per image while one step of the deploy net runs."""

    name: str  # ``layer 3`` or ``head``
    elements: int


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a 3x3 conv with padding 1."""
    return (size + 2 - 3) // stride + 1


def deploy_layers(spec: RepVGGSpec, resolution: int) -> list[DeployLayer]:
    """The deploy net's steps in order: every block at its input size, then the head.

    The one walk of the plain chain from the spec: the memory figures here and
    the per-layer latency table (:mod:`.latency`) both read it.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    out: list[DeployLayer] = []
    size = resolution
    layers = zip(spec.in_widths, spec.widths, spec.groups, spec.layer_strides)
    for i, (cin, cout, groups, stride) in enumerate(layers):
        hidden = max(1, cout // spec.se_reduction) if spec.use_se else 0  # as model._se builds it
        out.append(DeployLayer(f"layer {i}", "block", cin, cout, groups, stride, size, hidden))
        size = _out_size(size, stride)
    out.append(DeployLayer("head", "head", spec.feature_dim, spec.num_classes, 1, 1, size))
    return out


def layer_activations(spec: RepVGGSpec, resolution: int) -> list[LayerActivations]:
    """Per image, the elements alive during every block of the deploy net, then during the head."""
    out: list[LayerActivations] = []
    for layer in deploy_layers(spec, resolution):
        size, cin, cout = layer.size, layer.in_channels, layer.out_channels
        if layer.kind == "head":
            pool = cin * size * size + cin  # the last map and its pooled vector
            out.append(LayerActivations("head", max(pool, cin + cout)))
            continue
        after = layer.out_size
        outputs = 2 if layer.se_hidden else 1  # SE's gate multiplies into a new tensor
        out.append(LayerActivations(layer.name, cin * size * size + outputs * cout * after * after))
    return out


def peak_activation_elements(spec: RepVGGSpec, resolution: int) -> int:
    """The most activation elements alive at once per image in the deploy net."""
    return max(a.elements for a in layer_activations(spec, resolution))


def peak_memory_mb(
    spec: RepVGGSpec, resolution: int = 224, batch_size: int = 1, bytes_per_element: int = 4
) -> float:
    """Peak activation memory of the deploy net in MiB at ``batch_size`` x ``resolution``.

    ``bytes_per_element``: 4 for fp32, 2 for fp16/bf16, 1 for INT8.
    """
    if batch_size <= 0 or bytes_per_element <= 0:
        raise ValueError(f"batch_size and bytes_per_element must be positive, got {batch_size}, {bytes_per_element}")
    return peak_activation_elements(spec, resolution) * batch_size * bytes_per_element / MB


def deployed_peak_memory_mb(spec: RepVGGSpec, settings: MeasureSettings) -> float:
    """Peak activation memory of the deploy net as it is measured: at the settings' batch size, resolution
    and arithmetic (the ``peak_memory_mb`` objective)."""
    return peak_memory_mb(spec, settings.resolution, settings.batch_size, BYTES_PER_ELEMENT[settings.precision])
