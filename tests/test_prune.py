from __future__ import annotations

import pytest
import torch

from repvgg_nas import ConfigError, RepVGGSpec, build_model, complexity, is_deploy
from repvgg_nas import prune as prune_mod
from repvgg_nas.checkpoint import load_model, save_checkpoint
from repvgg_nas.cli import run_cli
from repvgg_nas.data import load_data
from repvgg_nas.measure import Measurement, MeasureSettings
from repvgg_nas.prune import (
    FINETUNE_MODES,
    IMPORTANCES,
    PruneJob,
    PruneSettings,
    finetune,
    fold_bn,
    insert_bn,
    prune_channels,
    prune_to_speedup,
)
from repvgg_nas.prune.__main__ import main as prune_main

from .conftest import randomize_bn

SPEC = RepVGGSpec.from_paper((1, 1, 2, 2, 1), 0.25, 0.5, num_classes=10, groupwise="even", g=2)


@pytest.fixture(scope="module")
def data():
    return load_data({"train_size": 96, "val_size": 64, "resolution": 16})


@pytest.fixture
def model():
    torch.manual_seed(0)
    return randomize_bn(build_model(SPEC))


def _out(m, x):
    with torch.no_grad():
        return m.eval()(x)


@pytest.mark.parametrize("criterion", IMPORTANCES.list())
def test_every_criterion_prunes_to_a_valid_smaller_spec(model, data, criterion):
    pruned = prune_channels(model, 0.5, PruneSettings(importance=criterion), data, resolution=16)
    assert is_deploy(pruned) and pruned.spec.groups == SPEC.groups  # groupwise layers kept, valid
    assert all(w < w0 for w, w0 in zip(pruned.spec.widths, SPEC.widths))
    assert all(w % g == 0 for w, g in zip(pruned.spec.widths, pruned.spec.groups))
    before, after = complexity(SPEC, 32), complexity(pruned.spec, 32)
    assert after.params < before.params and after.macs < before.macs
    assert _out(pruned, torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_pruned_checkpoint_reloads_with_identical_outputs(tmp_path, model):
    pruned = prune_channels(model, 0.3, PruneSettings(round_to=4))
    path = save_checkpoint(tmp_path / "p.pt", pruned)
    loaded, ckpt = load_model(path)
    assert ckpt.spec == pruned.spec and ckpt.spec != SPEC
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_out(loaded, x), _out(pruned, x))


def test_ratio_zero_is_a_no_op(model):
    same = prune_channels(model, 0.0)
    x = torch.randn(2, 3, 32, 32)
    assert same.spec == SPEC
    torch.testing.assert_close(_out(same, x), _out(model, x), rtol=1e-5, atol=1e-5)


def test_round_to_and_global(model):
    rounded = prune_channels(model, 0.4, PruneSettings(round_to=8))
    assert all(w % 8 == 0 for w in rounded.spec.widths[:-1])
    glob = prune_channels(model, 0.4, PruneSettings(global_pruning=True))
    assert glob.spec.widths != rounded.spec.widths


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "half", True])
def test_bad_ratios_are_refused(model, ratio):
    with pytest.raises(ConfigError, match="ratio must be a number in"):
        prune_channels(model, ratio)


def test_unknown_criterion_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown importance criterion 'l3'.*allowed: l1, l2, taylor, lamp, random"):
        PruneSettings(importance="l3")


def test_se_models_are_refused():
    se = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=10, use_se=True)
    with pytest.raises(ConfigError, match="SE"):
        prune_channels(build_model(se), 0.5)


def test_bn_reinsertion_preserves_the_function(model, data):
    pruned = prune_channels(model, 0.3)
    x = next(data.val_batches(8))[0]
    ref = _out(pruned, x)
    with_bn = insert_bn(pruned, data)
    torch.testing.assert_close(_out(with_bn, x), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_out(fold_bn(with_bn), x), ref, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())


@pytest.mark.parametrize("mode", FINETUNE_MODES.list())
def test_finetune_keeps_the_net_plain(model, data, mode):
    pruned = prune_channels(model, 0.3)
    tuned = finetune(pruned, data, epochs=1, mode=mode, progress=False, batch_size=32)
    assert is_deploy(tuned) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in tuned.modules())
    assert tuned.spec == pruned.spec


def _fake_measure(spec, settings=None, cache=None, **kw):
    """Deterministic 'throughput': inversely proportional to MACs."""
    macs = complexity(spec, 32).macs
    return Measurement(1e9 / macs, 0.0, 1.0, 0.0, 1e9 / macs, 0.0, 0.0, 1, 1, (1.0,), None, {})


def test_prune_to_speedup_stops_at_the_target(model, monkeypatch):
    monkeypatch.setattr(prune_mod, "measure_spec", _fake_measure)
    res = prune_to_speedup(model, 1.5, MeasureSettings(device="cpu"), PruneSettings(step=0.1))
    assert res.met and res.best.speedup >= 1.5
    assert [s.speedup >= 1.5 for s in res.steps].count(True) == 1  # stopped at the first hit
    assert res.model.spec == res.best.spec


def test_unreachable_speedup_keeps_the_best(model, monkeypatch):
    monkeypatch.setattr(prune_mod, "measure_spec", _fake_measure)
    res = prune_to_speedup(model, 1000.0, MeasureSettings(device="cpu"), PruneSettings(step=0.3, max_layer_ratio=0.6))
    assert not res.met
    assert res.best.speedup == max(s.speedup for s in res.steps)
    assert res.model.spec == res.best.spec


def test_prune_job_validation():
    with pytest.raises(ConfigError, match="exactly one of"):
        PruneJob()
    with pytest.raises(ConfigError, match="target_speedup must be a number > 1"):
        PruneJob(target_speedup=0.5)
    with pytest.raises(ConfigError, match="unknown prune keys"):
        PruneJob.from_dict({"ratio": 0.2, "ratios": 3})


def test_cli_prunes_a_checkpoint(tmp_path, model, capsys):
    src = save_checkpoint(tmp_path / "m.pt", model, meta={"data": {"train_size": 64, "val_size": 32, "resolution": 16}})
    out = tmp_path / "small.pt"
    argv = [str(src), "--ratio", "0.5", "--finetune-epochs", "1", "--device", "cpu", "--batch-size", "2",
            "--resolution", "16", "--out", str(out), "--no-progress"]
    assert run_cli(prune_main, argv) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned" in printed and "speedup" in printed
    loaded, ckpt = load_model(out)
    assert ckpt.meta["prune"]["ratio"] == 0.5 and ckpt.spec.widths != SPEC.widths


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{src}", "--ratio", "1.5"], "ratio must be a number in [0, 1)"),
        (["{src}", "--ratio", "0.2", "--importance", "magic"], "unknown importance criterion 'magic'"),
        (["{tmp}/missing.pt", "--ratio", "0.2"], "no such file"),
    ],
)
def test_cli_bad_input(tmp_path, model, capsys, argv, message):
    src = save_checkpoint(tmp_path / "m.pt", model)
    args = [a.format(src=src, tmp=tmp_path) for a in argv]
    assert run_cli(prune_main, args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*_pruned.pt"))
