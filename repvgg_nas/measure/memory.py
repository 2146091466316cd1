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
    "BYTES_PER_ELEMENT", "LayerActivations", "deployed_peak_memory_mb", "layer_activations", "peak_activation_elements", "peak_memory_mb",
]

MB = 1024 * 1024  # MiB, as torch.cuda's memory figures
# Bytes of one activation element by the arithmetic a runtime computes in (MeasureSettings.precision).
BYTES_PER_ELEMENT = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1}


class LayerActivations(NamedTuple):
    """Elements alive per image while one step of the deploy net runs."""

    name: str  # ``layer 3`` or ``head``
    elements: int


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a 3x3 conv with padding 1."""
    return (size + 2 - 3) // stride + 1


def layer_activations(spec: RepVGGSpec, resolution: int) -> list[LayerActivations]:
    """Per image, the elements alive during every block of the deploy net, then during the head."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    out: list[LayerActivations] = []
    size = resolution
    for i, (cin, cout, stride) in enumerate(zip(spec.in_widths, spec.widths, spec.layer_strides)):
        after = _out_size(size, stride)
        outputs = 2 if spec.use_se else 1  # SE's gate multiplies into a new tensor
        out.append(LayerActivations(f"layer {i}", cin * size * size + outputs * cout * after * after))
        size = after
    features = spec.feature_dim
    pool = features * size * size + features  # the last map and its pooled vector
    out.append(LayerActivations("head", max(pool, features + spec.num_classes)))
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
