from __future__ import annotations

from pathlib import Path

import pytest

from repvgg_nas import ConfigError
from repvgg_nas.search import load_study_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (ROOT / "studies").glob("*.toml"))


def test_ships_the_required_studies():
    assert {"a_family", "b_family", "quick"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_studies_validate(name):
    cfg = load_study_config(name)
    assert cfg.name == name and cfg.n_trials >= 1
    assert cfg.to_dict()["space_hash"] == cfg.space.hash


def test_every_stored_study_key_is_named_in_attrs():
    """The report reads the stored study config through repvgg_nas.attrs: every key the config writes is there."""
    from repvgg_nas import attrs

    named = {v for k, v in vars(attrs).items() if k.startswith("STUDY_")} - {attrs.STUDY_LOCKSTEP, attrs.STUDY_POOL}
    assert set(load_study_config("quick").to_dict()) == named


def test_a_family_enqueues_the_paper_a_models_and_searches_within_its_time_budget():
    cfg = load_study_config("a_family")
    assert cfg.references == ("RepVGG-A0", "RepVGG-A1")  # A2 is still expressible (test_space); it costs 11 min
    assert cfg.timeout == 900.0 and cfg.fidelity.multi


BASE = 'space = "quick"\nn_trials = 2\n'


def _study(tmp_path: Path, text: str):
    p = tmp_path / "st.toml"
    p.write_text(text)
    return load_study_config(p)


@pytest.mark.parametrize(
    "text, message",
    [
        ("space = 'quick'\n[train\n", "malformed TOML"),
        (BASE + "trials = 3\n", "trials: unknown key"),
        (BASE + "[train]\nepoch = 3\n", "train.epoch: unknown key"),
        (BASE + '[train]\nepochs = "three"\n', "train.epochs: must be an integer"),
        (BASE.replace("n_trials = 2", "n_trials = 0"), "n_trials: 0 is out of range"),
        (BASE + "[measure]\nbatch_size = 0\n", "measure.batch_size: 0 is out of range"),
        (BASE + '[measure]\ndevice = "tpu"\n', "measure.device: 'tpu' is invalid; allowed: auto, cpu, cuda"),
        (BASE + '[sampler]\nname = "cmaes"\n', "choose from"),
        (BASE + 'references = ["A0"]\n', "reference RepVGG-A0 is outside search space"),
        (BASE + 'references = ["Z9"]\n', "unknown zoo model 'Z9'"),
        (BASE + '[data]\nname = "cifar10"\nroot = "/no/such/dir"\n', "data.root: '/no/such/dir' for dataset 'cifar10' does not exist"),
        ('space = "nope"\n', "unknown search space 'nope'"),
    ],
)
def test_bad_studies_are_refused_with_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        _study(tmp_path, text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "..", ".hidden"])
def test_study_names_with_path_parts_are_refused(name):
    with pytest.raises(ConfigError, match="invalid"):
        load_study_config(name)


def test_unknown_study_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean a_family"):
        load_study_config("a_famly")
