"""Foreign weight layouts, built here from the documented key names (no download)."""

from __future__ import annotations

import pytest
import torch

from repvgg_nas import RepVGGSpec, WeightsError, build_model, reparameterize, zoo
from repvgg_nas.model import PlainBlock, RepVGGBlock
from repvgg_nas.weights import detect_layout, import_weights, infer_spec, load_any

from .helpers import randomize_bn

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# Documented names: official RepVGG repo and timm's byobnet.
LAYOUT = {
    "official": dict(
        block=lambda s, b: "stage0." if s == 0 else f"stage{s}.{b}.",
        dense="rbr_dense", one="rbr_1x1", ident="rbr_identity", reparam="rbr_reparam",
        se_down="se.down", se_up="se.up", head="linear",
    ),
    "timm": dict(
        block=lambda s, b: "stem." if s == 0 else f"stages.{s - 1}.{b}.",
        dense="conv_kxk", one="conv_1x1", ident="identity", reparam="reparam_conv",
        se_down="attn.fc1", se_up="attn.fc2", head="head.fc",
    ),
}


def foreign_state_dict(model, layout: str) -> dict[str, torch.Tensor]:
    """Write ``model``'s tensors under another implementation's key names."""
    names = LAYOUT[layout]
    out: dict[str, torch.Tensor] = {}
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            p = names["block"](s, b)
            if isinstance(block, RepVGGBlock):
                for branch, key in ((block.conv3x3, names["dense"]), (block.conv1x1, names["one"])):
                    out[f"{p}{key}.conv.weight"] = branch.conv.weight
                    for f in BN:
                        out[f"{p}{key}.bn.{f}"] = getattr(branch.bn, f)
                if block.identity is not None:
                    for f in BN:
                        out[f"{p}{names['ident']}.{f}"] = getattr(block.identity, f)
            else:
                assert isinstance(block, PlainBlock)
                out[f"{p}{names['reparam']}.weight"] = block.reparam.weight
                out[f"{p}{names['reparam']}.bias"] = block.reparam.bias
            if model.spec.use_se:
                for mod, key in ((block.se.down, names["se_down"]), (block.se.up, names["se_up"])):
                    out[f"{p}{key}.weight"] = mod.weight
                    out[f"{p}{key}.bias"] = mod.bias
    out[f"{names['head']}.weight"] = model.head.weight
    out[f"{names['head']}.bias"] = model.head.bias
    return {k: v.detach().clone() for k, v in out.items()}


SPECS = {
    "A0": zoo.get("A0", num_classes=10),
    "B1g4": zoo.get("B1g4", num_classes=10),
    "tiny-se": RepVGGSpec.from_paper((1, 1, 2, 2, 1), 0.25, 0.5, num_classes=7, use_se=True, groupwise="even", g=2),
}


@pytest.mark.parametrize("deploy", [False, True], ids=["train", "deploy"])
@pytest.mark.parametrize("layout", ["official", "timm"])
@pytest.mark.parametrize("name", list(SPECS))
def test_foreign_layout_gives_the_same_outputs(name, layout, deploy):
    spec = SPECS[name]
    torch.manual_seed(0)
    ours = randomize_bn(build_model(spec))
    if deploy:
        ours = reparameterize(ours)
    sd = foreign_state_dict(ours, layout)
    assert detect_layout(sd) == layout
    got = import_weights(sd)  # spec inferred from shapes
    assert got.layout == layout and got.deploy == deploy and got.spec == spec
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got.model(x), ours.eval()(x), rtol=0, atol=0)


def test_zoo_spec_check_and_wrappers(tmp_path):
    spec = SPECS["A0"]
    ours = randomize_bn(build_model(spec))
    sd = {f"module.{k}": v for k, v in foreign_state_dict(ours, "official").items()}
    path = tmp_path / "RepVGG-A0-train.pth"
    torch.save({"state_dict": sd}, path)
    got = load_any(path, zoo.get("A0"))  # num_classes follows the head
    assert got.spec == spec
    with pytest.raises(WeightsError, match=r"'stage0\.rbr_dense\.conv\.weight' has shape \(48, 3, 3, 3\) but the model expects \(64, 3, 3, 3\)"):
        load_any(path, zoo.get("B0"))


def test_missing_key_is_named():
    sd = foreign_state_dict(build_model(SPECS["A0"]), "timm")
    del sd["stages.2.3.conv_1x1.bn.running_var"]
    with pytest.raises(WeightsError, match=r"missing key 'stages\.3\.3\.conv1x1\.bn\.running_var'"):
        import_weights(sd, zoo.get("A0"))


def test_unknown_layout_and_mixed_forms():
    with pytest.raises(WeightsError, match="cannot tell the layout"):
        import_weights({"fc.weight": torch.zeros(2, 2)})
    sd = foreign_state_dict(build_model(SPECS["A0"]), "official")
    sd["stage1.0.rbr_reparam.weight"] = torch.zeros(48, 48, 3, 3)
    with pytest.raises(WeightsError, match="mixes train-form"):
        import_weights(sd)


def test_infer_spec_recovers_groups():
    from repvgg_nas.weights import to_native

    spec = SPECS["B1g4"]
    native, layout = to_native(foreign_state_dict(build_model(spec), "timm"))
    assert layout == "timm" and infer_spec(native) == spec
