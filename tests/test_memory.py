"""Peak activation memory of deploy nets: the spec walk against the tensors a forward really holds."""

from __future__ import annotations

import pytest
import torch

from repvgg_nas import build_model, zoo
from repvgg_nas.measure import layer_activations, peak_activation_elements, peak_memory_mb
from repvgg_nas.model import PlainBlock


def _alive_per_step(spec, resolution: int, batch: int = 2) -> list[int]:
    """Per image, the distinct tensors alive in each block (input, conv output, SE output) and in the head."""
    model = build_model(spec, deploy=True).eval()
    seen: list[int] = []
    tensors: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            tensors[name + ".in"] = inputs[0]
            tensors[name + ".out"] = output
        return hook

    def block_done(block, inputs, output):
        parts = [inputs[0], tensors["conv.out"], tensors["se.out"], output]
        assert output.data_ptr() == tensors["se.out"].data_ptr()  # the ReLU works in place
        distinct = {t.data_ptr(): t.numel() for t in parts}
        seen.append(sum(distinct.values()) // batch)

    for block in model.modules():
        if isinstance(block, PlainBlock):
            block.reparam.register_forward_hook(keep("conv"))
            block.se.register_forward_hook(keep("se"))
            block.register_forward_hook(block_done)
    model.pool.register_forward_hook(keep("pool"))
    model.head.register_forward_hook(keep("head"))
    with torch.no_grad():
        model(torch.randn(batch, spec.in_channels, resolution, resolution))
    pool = tensors["pool.in"].numel() + tensors["pool.out"].numel()
    head = tensors["head.in"].numel() + tensors["head.out"].numel()
    return seen + [max(pool, head) // batch]


@pytest.mark.parametrize("name", ["A0", "B1g4", "D2se"])
@pytest.mark.parametrize("resolution", [32, 17])
def test_spec_walk_matches_the_tensors_of_a_forward(name, resolution):
    spec = zoo.get(name, num_classes=10)
    direct = _alive_per_step(spec, resolution)
    assert [a.elements for a in layer_activations(spec, resolution)] == direct
    assert peak_activation_elements(spec, resolution) == max(direct)


def test_peak_memory_scales_with_batch_and_precision():
    a0 = zoo.get("A0")
    one = peak_memory_mb(a0, 224, 1)
    # A0's stem: 3x224x224 in, 48x112x112 out: the largest pair, 4 bytes each.
    assert one == pytest.approx((3 * 224 * 224 + 48 * 112 * 112) * 4 / 2**20)
    assert peak_memory_mb(a0, 224, 8) == pytest.approx(8 * one)
    assert peak_memory_mb(a0, 224, 8, bytes_per_element=2) == pytest.approx(4 * one)
    assert peak_memory_mb(zoo.get("B3"), 224) > peak_memory_mb(zoo.get("A0"), 224)
    with pytest.raises(ValueError):
        peak_memory_mb(a0, 0)
