from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from repvgg_nas import ConfigError, zoo
from repvgg_nas.search import SearchSpace, load_space

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (ROOT / "search_spaces").glob("*.toml"))
REFERENCES = {"a_family": ["A0", "A1", "A2"], "b_family": ["B0", "B1", "B1g2", "B1g4", "B2", "B2g4"]}


def test_ships_the_required_spaces():
    assert {"a_family", "b_family", "quick"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_samples_valid_specs(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        spec = space.sample(trial, num_classes=10)
        study.tell(trial, 0.0)
        for dim, depth in zip(space.depths, spec.depths):
            assert dim.contains(depth)
        assert spec.num_classes == 10


@pytest.mark.parametrize("space_name, ref", [(s, r) for s, refs in REFERENCES.items() for r in refs])
def test_references_are_expressible(space_name, ref):
    space = load_space(space_name)
    params = space.params_for(zoo.get_entry(ref))
    assert space.build(params, num_classes=1000) == zoo.get(ref)


def _space(tmp_path: Path, text: str) -> SearchSpace:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return load_space(p)


GOOD = 'depths = [1, 1, {low = 1, high = 2}, 1, 1]\na = {choices = [0.25, 0.5]}\nb = 0.5\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ("depths = [1, 1", "malformed TOML"),
        (GOOD + "widths = 3\n", "widths: unknown key"),
        (GOOD.replace("b = 0.5", 'b = "wide"'), "b: must be a number"),
        (GOOD + "g = 3\n", "g: 3 is not allowed"),
        (GOOD.replace("[1, 1, {", "[1, 0, {"), r"depths\[1\]: depths must be >= 1"),
        (GOOD.replace("b = 0.5", "b = 0.25"), r"b < a"),
        (GOOD.replace("{choices = [0.25, 0.5]}", "{low = 0.25, high = 0.5}"), "needs a step"),
        (GOOD + 'groupwise = "stages:9"\ng = 2\n', "stages are 0..4"),
        (GOOD + 'groupwise = "sometimes"\ng = 2\n', "unknown groupwise pattern 'sometimes'"),
        (GOOD.replace("high = 2", "high = 0"), "below low"),
    ],
)
def test_bad_spaces_name_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        _space(tmp_path, text)
    assert "s.toml" in str(e.value)


def test_hash_tracks_dimensions_only(tmp_path):
    a = _space(tmp_path, GOOD)
    b = _space(tmp_path, 'description = "x"\n' + GOOD)
    c = _space(tmp_path, GOOD.replace("high = 2", "high = 3"))
    assert a.hash == b.hash != c.hash


def test_block_dimension(tmp_path):
    # Pinned hashes of the shipped spaces: a resumed study of the current schema must stay valid.
    assert load_space("a_family").hash == "b0fc8901b215"
    assert load_space("quick").hash == "9c7377c93a01"
    plain = _space(tmp_path, GOOD)
    assert _space(tmp_path, GOOD + 'block = "repvgg"\n').hash == plain.hash
    both = _space(tmp_path, GOOD + 'block = {choices = ["repvgg", "qarepvgg"]}\n')
    assert both.hash != plain.hash and both.size() == 2 * plain.size()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        spec = both.sample(trial, num_classes=10)
        study.tell(trial, 0.0)
        assert spec.block == trial.params["block"]
        seen.add(spec.block)
    assert seen == {"repvgg", "qarepvgg"}
    # A plain space asks the trial nothing about the block.
    trial = optuna.create_study().ask()
    assert plain.sample(trial, 10).block == "repvgg" and "block" not in trial.params
    with pytest.raises(ConfigError, match=r"s.toml: block: 'qa' is not allowed; allowed: repvgg, qarepvgg"):
        _space(tmp_path, GOOD + 'block = "qa"\n')


def test_references_name_their_block():
    space = SearchSpace.from_dict(
        {"depths": [1, 2, 4, 14, 1], "a": 0.75, "b": 2.5, "block": {"choices": ["repvgg", "qarepvgg"]}}, "ab"
    )
    for ref in ("A0", "A0:qarepvgg"):
        assert space.build(space.params_for(zoo.get_entry(ref)), num_classes=1000) == zoo.get(ref)
    with pytest.raises(ConfigError, match="block = 'qarepvgg' is not among"):
        load_space("a_family").params_for(zoo.get_entry("A0:qarepvgg"))
