from __future__ import annotations

import json

import pytest

from repvgg_nas import GROUPWISE_PATTERNS, RepVGGSpec, SpecError, UnknownNameError, groupwise_layers, zoo
from repvgg_nas.spec import SPEC_VERSION


def test_json_round_trip_and_stable_hash(tiny_spec):
    again = RepVGGSpec.from_json(tiny_spec.to_json())
    assert again == tiny_spec
    assert again.hash == tiny_spec.hash
    assert hash(again) == hash(tiny_spec)  # usable as a dict key
    json.loads(tiny_spec.to_json())  # plain JSON


def test_hash_is_content_based_and_pinned():
    # Pinned: a change here silently invalidates every stored study and cache.
    assert zoo.get("A0").hash == "c5e7b0a184af"
    assert zoo.get("A0").hash != zoo.get("A0", num_classes=10).hash


def test_stored_spec_carries_its_version_and_another_is_refused():
    a0 = zoo.get("A0")
    assert a0.to_dict()["spec_version"] == SPEC_VERSION
    assert RepVGGSpec.from_dict({k: v for k, v in a0.to_dict().items() if k != "spec_version"}) == a0  # by hand
    old = {**a0.to_dict(), "spec_version": 1}
    with pytest.raises(SpecError) as e:
        RepVGGSpec.from_dict(old)
    msg = str(e.value)
    assert "spec_version 1" in msg and f"spec_version {SPEC_VERSION} only" in msg and "\n" not in msg


def test_block_field():
    a0 = zoo.get("A0")
    assert a0.block == "repvgg" and a0.to_dict()["block"] == "repvgg"
    qa = a0.replace(block="qarepvgg")
    assert qa.to_dict()["block"] == "qarepvgg" and qa.hash != a0.hash
    assert RepVGGSpec.from_json(qa.to_json()) == qa
    assert zoo.get("A0:qarepvgg") == qa and zoo.get("A0:repvgg") == a0
    assert zoo.get_entry("a0:QARepVGG").name == "RepVGG-A0:qarepvgg"
    assert "block=qarepvgg" in qa.summary() and "block" not in a0.summary()
    with pytest.raises(SpecError, match=r"spec.block = 'qa' is invalid; allowed: repvgg, qarepvgg"):
        a0.replace(block="qa")
    with pytest.raises(UnknownNameError, match="allowed: repvgg, qarepvgg"):
        zoo.get("A0:qa")


def test_paper_widths_and_groupwise_layers():
    b1g4 = zoo.get("B1g4")
    assert b1g4.depths == (1, 4, 6, 16, 1)
    assert b1g4.num_layers == 28
    assert b1g4.groupwise == tuple(range(2, 27, 2))
    assert set(b1g4.groups) == {1, 4}
    a0 = zoo.get("A0")
    assert (a0.widths[0], a0.widths[1], a0.widths[3], a0.widths[7], a0.widths[-1]) == (48, 48, 96, 192, 1280)
    assert a0.layer_strides[:4] == (2, 2, 1, 2)


@pytest.mark.parametrize("pattern", GROUPWISE_PATTERNS.list() + ["stages:3", "stages:2,3"])
def test_named_patterns_are_valid_layers(pattern):
    layers = groupwise_layers(pattern, (1, 2, 4, 14, 1))
    assert all(0 < i < 22 for i in layers)


def test_stage_patterns():
    depths = (1, 4, 6, 16, 1)
    assert groupwise_layers("stages:2", depths) == (6, 8, 10)
    assert set(groupwise_layers("stages:1,2,3", depths)) == set(groupwise_layers("paper", depths))
    with pytest.raises(SpecError, match="stages are 0..4"):
        groupwise_layers("stages:7", depths)
    with pytest.raises(SpecError, match="must list stages"):
        groupwise_layers("stages:", depths)


def test_explicit_groupwise_layers_and_out_of_range():
    s = RepVGGSpec.from_paper((1, 2, 4, 14, 1), 1, 2.5, groupwise=[3, 5], g=4)
    assert s.groupwise == (3, 5)
    with pytest.raises(SpecError, match="outside 0..21"):
        RepVGGSpec.from_paper((1, 2, 4, 14, 1), 1, 2.5, groupwise=[30], g=2)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"depths": (1, 0, 1, 1, 1)}, "depths must all be >= 1"),
        ({"depths": (1, -2, 1, 1, 1)}, "depths must all be >= 1"),
        ({"widths": (8, 0, 16, 16, 32, 32, 32)}, "widths must be >= 1"),
        ({"widths": (8, -8, 16, 16, 32, 32, 32)}, "widths must be >= 1"),
        ({"groups": (1, 3, 1, 1, 1, 1, 1)}, r"groups\[1\] = 3 must divide"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"strides": (2, 2, 3, 2, 2)}, "strides must be 1 or 2"),
        ({"widths": (8, 8)}, "widths has 2 entries"),
        ({"depths": (1, 1.5, 1, 1, 1)}, "must contain integers"),
    ],
)
def test_invalid_specs_are_refused(changes, message):
    base = dict(depths=(1, 1, 2, 2, 1), widths=(8, 8, 16, 16, 32, 32, 32), groups=(1,) * 7)
    base.update(changes)
    with pytest.raises(SpecError, match=message):
        RepVGGSpec(**base)


def test_from_dict_rejects_unknown_keys():
    d = zoo.get("A0").to_dict()
    d["width"] = 3
    with pytest.raises(SpecError, match="unknown spec keys"):
        RepVGGSpec.from_dict(d)


def test_bad_multipliers_and_g():
    with pytest.raises(SpecError, match="must be > 0"):
        RepVGGSpec.from_paper((1, 2, 4, 14, 1), 0, 2.5)
    with pytest.raises(SpecError, match="g must be 1, 2 or 4"):
        RepVGGSpec.from_paper((1, 2, 4, 14, 1), 1, 2.5, groupwise="paper", g=3)


def test_replace_keeps_validation(tiny_spec):
    assert tiny_spec.with_num_classes(100).num_classes == 100
    with pytest.raises(SpecError):
        tiny_spec.replace(num_classes=-1)
