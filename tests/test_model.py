from __future__ import annotations

import pytest
import torch
from torch import nn

from repvgg_nas import PlainBlock, QARepVGGBlock, RepVGGBlock, RepVGGSpec, build_model, is_deploy, reparameterize, zoo
from repvgg_nas.model import TRAIN_BLOCKS, fusion_error
from repvgg_nas.spec import BLOCKS

from .helpers import randomize_bn

TOL = 1e-5


def _randomize_biases(model: nn.Module, seed: int) -> nn.Module:
    """QARepVGG's 1x1 branch has its own bias: give it non-zero values too."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QARepVGGBlock):
                m.conv1x1.bias.copy_(torch.rand(m.out_channels, generator=g) - 0.5)
    return model


def _relative_error(spec: RepVGGSpec, resolution: int, seed: int = 0) -> tuple[float, nn.Module]:
    torch.manual_seed(seed)
    model = _randomize_biases(randomize_bn(build_model(spec), seed), seed)
    fused = reparameterize(model)
    return fusion_error(model, fused, resolution=resolution, batch=2, seed=seed), fused


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("name", zoo.list_names())
def test_fusion_is_exact_for_every_zoo_config(name, block):
    err, fused = _relative_error(zoo.get(name, num_classes=10).replace(block=block), resolution=32)
    assert err <= TOL, f"{name} ({block}): relative error {err:.2e}"


NON_PAPER = {
    "odd widths": RepVGGSpec(depths=(1, 2, 3, 1), widths=(7, 13, 13, 21, 21, 21, 9), groups=(1,) * 7, strides=(2, 2, 2, 2), num_classes=5),
    "groups on arbitrary layers": RepVGGSpec(depths=(1, 2, 2, 1), widths=(16, 24, 24, 48, 48, 64), groups=(1, 2, 4, 3, 16, 2), strides=(2, 2, 2, 2), num_classes=3),
    "se": RepVGGSpec.from_paper((1, 2, 2, 2, 1), 0.5, 0.5, num_classes=10, use_se=True, groupwise="odd", g=2),
    "stride-1 stages": RepVGGSpec(depths=(1, 2, 2), widths=(8, 8, 8, 16, 16), groups=(1, 1, 8, 1, 4), strides=(1, 1, 2), num_classes=4, in_channels=1),
}


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("label", list(NON_PAPER))
def test_fusion_is_exact_for_non_paper_specs(label, block):
    err, _ = _relative_error(NON_PAPER[label].replace(block=block), resolution=24, seed=3)
    assert err <= TOL, f"{label} ({block}): relative error {err:.2e}"


@pytest.mark.parametrize("block", BLOCKS)
def test_deploy_model_is_plain(tiny_spec, block):
    tiny_spec = tiny_spec.replace(block=block)
    model = build_model(tiny_spec)
    assert {type(m) for m in model.modules()} & set(TRAIN_BLOCKS.values()) == {TRAIN_BLOCKS[block]}
    fused = reparameterize(randomize_bn(model))
    kinds = {type(m) for m in fused.modules()}
    assert nn.BatchNorm2d not in kinds and not kinds & set(TRAIN_BLOCKS.values())
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == tiny_spec.num_layers
    assert all(c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    assert is_deploy(fused)
    blocks = [m for m in fused.modules() if isinstance(m, PlainBlock)]
    assert [b.groups for b in blocks] == list(tiny_spec.groups)


def test_reparameterize_returns_a_new_model_by_default(tiny_spec):
    model = build_model(tiny_spec)
    fused = reparameterize(model)
    assert fused is not model and not is_deploy(model)
    same = reparameterize(model, inplace=True)
    assert same is model and is_deploy(model)


def test_deploy_built_from_spec_loads_fused_weights(tiny_spec):
    fused = reparameterize(randomize_bn(build_model(tiny_spec)))
    rebuilt = build_model(tiny_spec, deploy=True)
    rebuilt.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), fused(x))


def test_identity_branch_only_where_shapes_allow():
    spec = zoo.get("A0", num_classes=10)
    blocks = [m for m in build_model(spec).modules() if isinstance(m, RepVGGBlock)]
    for b in blocks:
        assert (b.identity is not None) == (b.in_channels == b.out_channels and b.stride == 1)
    assert sum(b.identity is not None for b in blocks) == spec.num_layers - 5


def test_qarepvgg_block_layout():
    """3x3 conv + BN, biased 1x1 conv without BN, BN-free identity, one BN after the sum."""
    spec = zoo.get("A0:qarepvgg", num_classes=10)
    blocks = [m for m in build_model(spec).modules() if isinstance(m, QARepVGGBlock)]
    assert len(blocks) == spec.num_layers
    for b in blocks:
        assert isinstance(b.conv3x3.bn, nn.BatchNorm2d) and b.conv3x3.conv.bias is None
        assert b.conv1x1.bias is not None and b.conv1x1.kernel_size == (1, 1)
        assert b.bn.num_features == b.out_channels
        bns = [m for m in b.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(bns) == 2  # no BN on the 1x1 branch or on the identity
    # The identity is really there: a block with every conv zeroed is BN(x).
    b = next(b for b in blocks if b.has_identity).eval()
    with torch.no_grad():
        b.conv3x3.bn.weight.zero_(); b.conv3x3.bn.bias.zero_()
        b.conv1x1.weight.zero_(); b.conv1x1.bias.zero_()
        x = torch.randn(1, b.in_channels, 5, 5)
        assert torch.allclose(b(x), torch.relu(b.bn(x)), atol=1e-6)


@pytest.mark.parametrize("block", BLOCKS)
def test_identity_init_starts_as_a_shifted_identity(block):
    from repvgg_nas.train import identity_init

    spec = RepVGGSpec(depths=(1, 2), widths=(4, 4, 4), groups=(1, 1, 1), strides=(1, 1), num_classes=2, in_channels=4, block=block)
    model = build_model(spec).eval()
    assert identity_init(model, shift=2.0) == 3
    x = torch.randn(2, 4, 6, 6)
    b = model.stages[0][0]
    with torch.no_grad():
        bn = b.identity if block == "repvgg" else b.bn
        assert torch.allclose(b(x), torch.relu(bn(x)), atol=1e-6)
        assert float(bn.bias.min()) == 2.0


@pytest.mark.parametrize("block", BLOCKS)
def test_train_form_trains_and_still_fuses(tiny_spec, block):
    model = build_model(tiny_spec.replace(block=block))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert fusion_error(model, reparameterize(model), resolution=32) <= TOL
    assert model.training  # the check restores the mode
