from __future__ import annotations

import copy

import pytest
import torch

from repvgg_nas import ConfigError, RepVGGSpec, build_model, complexity, is_deploy
from repvgg_nas import prune as prune_mod
from repvgg_nas.prune import channels, deploy, speedup
from repvgg_nas.checkpoint import load_model, save_checkpoint
from repvgg_nas.cli import run_cli
from repvgg_nas.data import load_data
from repvgg_nas.layout import StudyPaths, pruned_path
from repvgg_nas.measure import Measurement, MeasureSettings
from repvgg_nas.prune import (
    FINETUNE_MODES,
    IMPORTANCES,
    PruneJob,
    PruneSettings,
    finetune,
    fold_inserted_bn,
    insert_bn,
    prune_channels,
    prune_to_speedup,
)
from repvgg_nas.prune.__main__ import main as prune_main
from repvgg_nas.train import Distillation

from .helpers import randomize_bn, write_tiny_study

ALIGN = pytest.mark.parametrize("align", [True, False], ids=["stage-aligned", "per-layer"])
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


@ALIGN
@pytest.mark.parametrize("criterion", IMPORTANCES.list())
def test_every_criterion_prunes_to_a_valid_smaller_spec(model, data, criterion, align):
    pruned = prune_channels(model, 0.5, PruneSettings(importance=criterion, align_stages=align), data, resolution=16)
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
    torch.testing.assert_close(_out(fold_inserted_bn(with_bn), x), ref, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())


def _iteratively_pruned(model, steps=2, align=True, **settings):
    work = deploy.as_deploy(model)
    original = copy.deepcopy(work)
    kept = deploy.full_kept(work)
    pruner = channels.make_pruner(work, PruneSettings(align_stages=align, **settings), 0.6, 3, 16)
    for _ in range(steps):
        pruner.step(kept)
    return original, deploy.rebuild(work, work.spec), kept


@ALIGN
@pytest.mark.parametrize("global_pruning", [False, True], ids=["uniform", "global"])
def test_kept_indices_name_the_surviving_original_channels(model, align, global_pruning):
    # two steps, so indices must compose; the weights of every pruned conv must be exactly
    # the original weights of the kept outputs and inputs (groupwise convs: in-group inputs)
    original, pruned, kept = _iteratively_pruned(model, align=align, global_pruning=global_pruning)
    prev = torch.arange(SPEC.in_channels)
    convs0 = deploy.block_convs(original)
    for name, conv in deploy.block_convs(pruned).items():
        k, conv0 = kept[name], convs0[name]
        assert len(k) == conv.out_channels <= conv0.out_channels
        torch.testing.assert_close(conv.bias, conv0.bias[k], rtol=0, atol=0)
        g, seg = conv0.groups, conv0.in_channels // conv0.groups
        for i, o in enumerate(k.tolist()):
            grp = o // (conv0.out_channels // g)
            inputs = prev[(prev >= grp * seg) & (prev < (grp + 1) * seg)] - grp * seg
            torch.testing.assert_close(conv.weight[i], conv0.weight[o][inputs], rtol=0, atol=0)
        prev = k
    assert sum(c.out_channels for c in deploy.block_convs(pruned).values()) < sum(SPEC.widths)


def test_stage_alignment_prunes_the_same_channels_through_a_stage(model):
    _, pruned, kept = _iteratively_pruned(model)
    names = list(kept)
    for stage_names in ([n for n in names if n.startswith(f"stages.{s}.")] for s in range(len(SPEC.depths))):
        assert all(torch.equal(kept[n], kept[stage_names[0]]) for n in stage_names)


def _conv_stats(model, x):
    out = {}
    hooks = [c.register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, (o.mean((0, 2, 3)), o.std((0, 2, 3)))))
             for n, c in deploy.block_convs(model).items()]
    _out(model, x)
    for h in hooks:
        h.remove()
    return out


@ALIGN
def test_recalibration_gives_kept_channels_their_original_statistics(model, data, align):
    original, pruned, kept = _iteratively_pruned(model, align=align)
    x = data.sample_images(64)
    before = _conv_stats(pruned, x)
    prune_mod.recalibrate(pruned, original, kept, data, images=64)
    target, after = _conv_stats(original, x), _conv_stats(pruned, x)
    for i, name in enumerate(after):
        mean, std = target[name][0][kept[name]], target[name][1][kept[name]]
        torch.testing.assert_close(after[name][0], mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(after[name][1], std, rtol=1e-4, atol=1e-4)
        if i == 0:  # nothing upstream changed: the first conv is left as it was
            torch.testing.assert_close(before[name][1], std, rtol=1e-5, atol=1e-6)
        else:
            assert not torch.allclose(before[name][1], std, rtol=1e-3)


def test_recalibration_leaves_dead_channels_finite(model, data):
    original, pruned, kept = _iteratively_pruned(model, steps=1)
    conv = next(iter(deploy.block_convs(pruned).values()))
    with torch.no_grad():
        conv.weight[0].zero_()  # a channel whose output is constant
    prune_mod.recalibrate(pruned, original, kept, data, images=32)
    assert all(torch.isfinite(p).all() for p in pruned.parameters())


def test_prune_channels_recalibrates_only_with_data(model, data):
    x = next(data.val_batches(8))[0]
    raw = prune_channels(model, 0.3)
    off = prune_channels(model, 0.3, PruneSettings(recalibrate=False), data)
    on = prune_channels(model, 0.3, PruneSettings(calibration_images=32), data)
    torch.testing.assert_close(_out(off, x), _out(raw, x))
    assert on.spec == raw.spec and not torch.allclose(_out(on, x), _out(raw, x))


def test_distillation_from_an_identical_teacher_adds_no_loss(model, data):
    x, y = next(data.val_batches(16))
    logits = _out(model, x)
    hard = torch.nn.functional.cross_entropy(logits, y)
    assert Distillation(copy.deepcopy(model).eval(), weight=1.0).loss(logits, x, hard).abs() < 1e-5
    assert Distillation(model, weight=0.0).loss(logits, x, hard) == hard
    with pytest.raises(ConfigError, match="distillation weight"):
        Distillation(model, weight=1.5)


@pytest.mark.parametrize("mode", FINETUNE_MODES.list())
@pytest.mark.parametrize("distill", [False, True])
def test_finetune_keeps_the_net_plain(model, data, mode, distill):
    pruned = prune_channels(model, 0.3)
    teacher = deploy.as_deploy(model) if distill else None
    tuned = finetune(pruned, data, epochs=1, mode=mode, teacher=teacher, batch_size=32)
    assert is_deploy(tuned) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in tuned.modules())
    assert tuned.spec == pruned.spec


def _fake_measure(specs, settings=None, cache=None, **kw):
    """Deterministic lockstep 'throughput': inversely proportional to MACs."""
    def one(spec):
        macs = complexity(spec, 32).macs
        return Measurement(1e9 / macs, 0.0, 1.0, 0.0, 1e9 / macs, 0.0, 0.0, 1, 1, (1.0,), None, {})
    return {name: one(spec) for name, spec in specs.items()}


def test_prune_to_speedup_stops_at_the_target(model):
    res = prune_to_speedup(model, 1.5, MeasureSettings(device="cpu"), PruneSettings(step=0.1),
                           measure_lockstep=_fake_measure)
    assert res.met and res.best.speedup >= 1.5
    assert [s.speedup >= 1.5 for s in res.steps].count(True) == 1  # stopped at the first hit
    assert res.model.spec == res.best.spec


def test_unreachable_speedup_keeps_the_best(model):
    res = prune_to_speedup(model, 1000.0, MeasureSettings(device="cpu"), PruneSettings(step=0.3, max_layer_ratio=0.6),
                           measure_lockstep=_fake_measure)
    assert not res.met
    assert res.best.speedup == max(s.speedup for s in res.steps)
    assert res.model.spec == res.best.spec


def test_prune_job_validation():
    with pytest.raises(ConfigError, match="exactly one of"):
        PruneJob()
    with pytest.raises(ConfigError, match=r"prune.target_speedup: .* is out of range; must be > 1"):
        PruneJob(target_speedup=0.5)
    with pytest.raises(ConfigError, match="prune.ratios: unknown key; allowed keys in prune"):
        PruneJob.from_dict({"ratio": 0.2, "ratios": 3})


@pytest.mark.parametrize("flags, recorded", [
    ([], {"align_stages": True, "recalibrate": True, "distill": False, "finetune_epochs": 1}),
    (["--per-layer", "--no-recalibrate", "--distill"], {"align_stages": False, "recalibrate": False, "distill": True}),
])
def test_cli_prunes_a_checkpoint(tmp_path, model, capsys, flags, recorded):
    src = save_checkpoint(tmp_path / "m.pt", model, meta={"data": {"train_size": 64, "val_size": 32, "resolution": 16}})
    out = tmp_path / "small.pt"
    argv = [str(src), "--ratio", "0.5", "--finetune-epochs", "1", "--device", "cpu", "--batch-size", "2",
            "--measure-resolution", "16", "--out", str(out), "--no-progress", *flags]
    assert run_cli(prune_main, argv) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned" in printed and "speedup" in printed
    loaded, ckpt = load_model(out)
    assert ckpt.meta["prune"]["ratio"] == 0.5 and ckpt.spec.widths != SPEC.widths
    assert recorded.items() <= ckpt.meta["prune"].items()


def test_cli_onnx_mismatch_fails_before_anything_is_written(tmp_path, model, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    from repvgg_nas import export as export_mod
    from repvgg_nas.model import FUSION_TOLERANCE

    monkeypatch.setattr(export_mod, "_onnx_logits", lambda path, x: torch.full((x.shape[0], 10), 1e3))
    src = save_checkpoint(tmp_path / "m.pt", model)  # no data: pruned, not fine-tuned
    out, onnx = tmp_path / "small.pt", tmp_path / "small.onnx"
    argv = [str(src), "--ratio", "0.5", "--device", "cpu", "--batch-size", "2", "--measure-resolution", "16",
            "--max-seconds", "0.1", "--out", str(out), "--onnx", str(onnx), "--no-progress"]
    assert run_cli(prune_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match the torch model" in err and f"> {FUSION_TOLERANCE:g}" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no checkpoint, no ONNX, no temp file


def test_cli_writes_beside_the_input_by_default(tmp_path, model, capsys):
    src = save_checkpoint(tmp_path / "m.pt", model)
    assert pruned_path(src) == tmp_path / "m_pruned.pt"
    argv = [str(src), "--ratio", "0.5", "--device", "cpu", "--batch-size", "2", "--measure-resolution", "16",
            "--max-seconds", "0.1", "--no-progress"]
    assert run_cli(prune_main, argv) == 0
    assert f"wrote {pruned_path(src)}" in capsys.readouterr().out and load_model(pruned_path(src))[1].deploy


def test_prune_job_round_trips_through_a_study_table():
    job = PruneJob(target_speedup=1.5, distill=True, settings=PruneSettings(
        align_stages=False, recalibrate=False, max_layer_ratio=0.5, step=0.1, round_to=8, calibration_images=64))
    again = PruneJob.from_dict(job.to_dict())
    assert again == job
    with pytest.raises(ConfigError, match="prune.recalibrate: must be true/false"):
        PruneJob.from_dict({"ratio": 0.2, "recalibrate": "yes"})


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
    assert not pruned_path(src).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_global_stage_pruning_removes_the_ratio_of_layer_channels(model):
    pruned = prune_channels(model, 0.4, PruneSettings(global_pruning=True))
    removed = 1 - sum(pruned.spec.widths) / sum(SPEC.widths)
    assert 0.3 <= removed <= 0.45  # exact up to whole in-group positions of a run
    assert len(set(pruned.spec.widths) - set(SPEC.widths)) >= 1 and pruned.spec.groups == SPEC.groups


@pytest.mark.parametrize("groupwise, g", [("even", 2), ("paper", 4), ("stages:2,3", 4)])
def test_stage_pruning_never_makes_a_groupwise_layer_depthwise(groupwise, g):
    spec = RepVGGSpec.from_paper((1, 2, 2, 2, 1), 0.25, 0.5, num_classes=10, groupwise=groupwise, g=g)
    res = prune_to_speedup(build_model(spec), 1000.0, MeasureSettings(device="cpu"), PruneSettings(max_layer_ratio=0.95),
                           measure_lockstep=_fake_measure)
    assert not res.met and res.model.spec.groups == spec.groups
    assert all(g == 1 or (cin > g and cout > g) for cin, cout, g in
               zip(res.model.spec.in_widths, res.model.spec.widths, res.model.spec.groups))


def test_per_layer_pruning_stops_before_a_layer_turns_depthwise():
    spec = RepVGGSpec.from_paper((1, 2, 2, 2, 1), 0.25, 0.5, num_classes=10, groupwise="paper", g=4)
    with pytest.raises(ConfigError, match="group count"):
        prune_channels(build_model(spec), 0.89, PruneSettings(align_stages=False))
    res = prune_to_speedup(build_model(spec), 1000.0, MeasureSettings(device="cpu"),
                           PruneSettings(align_stages=False, max_layer_ratio=0.95, step=0.3),
                           measure_lockstep=_fake_measure)
    assert not res.met and res.model.spec == res.best.spec


def test_depthwise_input_is_refused():
    spec = RepVGGSpec(depths=(1, 2, 2), widths=(8, 4, 4, 8, 8), groups=(1, 4, 4, 4, 2), strides=(2, 2, 2), num_classes=5)
    with pytest.raises(ConfigError, match="depthwise layers"):
        prune_channels(build_model(spec), 0.3)


def test_global_round_to_keeps_multiples_and_the_ratio():
    from repvgg_nas import zoo

    a0 = build_model(zoo.get("A0", num_classes=10), deploy=True)
    for round_to in (8, 64):
        pruned = prune_channels(a0, 0.3, PruneSettings(global_pruning=True, round_to=round_to), resolution=16)
        changed = [w for w, w0 in zip(pruned.spec.widths, a0.spec.widths) if w != w0]
        assert changed and all(w % round_to == 0 for w in changed)
        assert 0.2 <= 1 - sum(pruned.spec.widths) / sum(a0.spec.widths) <= 0.4


@pytest.mark.parametrize("target", [dict(ratio=0.5), dict(target_speedup=1.5)])
def test_run_prune_reports_the_lockstep_speedup(model, data, target):
    out = prune_mod.run_prune(model, PruneJob(finetune_epochs=0, **target), data, MeasureSettings(device="cpu"),
                              measure_lockstep=_fake_measure)
    expected = complexity(SPEC, 32).macs / complexity(out.model.spec, 32).macs
    assert out.stages[1].speedup == pytest.approx(expected, rel=1e-2)
    assert [f.stage for f in out.stages] == ["original", "pruned"]


def test_cli_prunes_a_study_trial_with_the_study_tables(tmp_path, model, capsys, monkeypatch):
    """``--study NAME --trial N`` reads the study file's [data], [measure] and [train] (flags applied first)
    without the study package, and writes beside the study's checkpoints."""
    monkeypatch.setattr(speedup, "measure_specs", _fake_measure)
    study = write_tiny_study(tmp_path / "studies", name="tiny")
    reports = tmp_path / "reports"
    paths = StudyPaths.of("tiny", reports)
    save_checkpoint(paths.checkpoint(3), model)
    argv = ["--study", str(study), "--trial", "3", "--ratio", "0.5", "--finetune-epochs", "1",
            "--data-resolution", "24", "--reports-dir", str(reports), "--no-progress"]
    assert run_cli(prune_main, argv) == 0, capsys.readouterr().err
    _, ckpt = load_model(paths.pruned_checkpoint(3))
    data = ckpt.meta["data"]
    assert (data["name"], data["train_size"], data["val_size"], data["resolution"]) == ("synthetic", 64, 32, 24)
    assert ckpt.meta["measure_resolution"] == 16 and ckpt.meta["prune"]["ratio"] == 0.5  # the study's [measure]

    # A flag that breaks a table is named; a trial without a checkpoint says where checkpoints are kept.
    bad = ["--study", str(study), "--trial", "3", "--ratio", "0.5", "--data-resolution", "4",
           "--reports-dir", str(reports)]
    assert run_cli(prune_main, bad) == 2
    assert "--data-resolution 4: " in capsys.readouterr().err
    missing = ["--study", str(study), "--trial", "7", "--ratio", "0.5", "--reports-dir", str(reports)]
    assert run_cli(prune_main, missing) == 2
    err = capsys.readouterr().err
    assert "no checkpoint for trial 7 of study 'tiny'" in err and str(paths.pareto_csv) in err
