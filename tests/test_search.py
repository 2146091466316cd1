"""End-to-end search on a tiny study: resume, failures, outputs, bad input."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from repvgg_nas import ConfigError
from repvgg_nas.checkpoint import load_model
from repvgg_nas.cli import run_cli
from repvgg_nas.data import load_data
from repvgg_nas.search import TrialTools, load_study_config, open_study, run_search
from repvgg_nas.report import register_report
from repvgg_nas.search.__main__ import main
from repvgg_nas.train import DivergenceError, evaluate
from repvgg_nas.train import train as real_train

from .helpers import TINY_SPACE, TINY_STUDY, write_tiny_study

SPACE = TINY_SPACE


@pytest.fixture
def tiny(tmp_path):
    return lambda n=3: write_tiny_study(tmp_path, n)


def _run(path: Path, tmp_path: Path, **kw):
    return run_search(load_study_config(path), reports_dir=tmp_path / "reports", progress=False, **kw)


def test_run_writes_results_and_front_checkpoints(tiny, tmp_path):
    res = _run(tiny(3), tmp_path)
    df = res.trials
    assert len(df) == 3 and set(df["state"]) == {"COMPLETE"}
    assert (df["fusion_error"] < 1e-4).all() and (df["throughput"] > 0).all()
    out = tmp_path / "reports" / "tiny"
    assert (out / "trials.csv").is_file() and (out / "pareto.csv").is_file()
    front = set(df.loc[df["on_front"], "number"])
    kept = {int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("trial_*.pt")}
    assert kept == front
    # A front checkpoint reloads alone and reproduces the recorded accuracy.
    n = min(front)
    model, ckpt = load_model(out / "checkpoints" / f"trial_{n:04d}.pt")
    data = load_data(load_study_config(tiny(3)).data)
    assert evaluate(model, data) == pytest.approx(float(df.loc[df["number"] == n, "accuracy"].iloc[0]))
    phases = res.study.trials[0].user_attrs["phase_seconds"]
    assert {"sample", "measure", "train", "fuse", "evaluate"} <= set(phases)


def test_interrupted_run_resumes_without_redoing_trials(tiny, tmp_path):
    calls = {"n": 0}

    def train_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    first = _run(tiny(4), tmp_path, tools=TrialTools(train=train_then_ctrl_c))
    assert first.interrupted
    done_before = {t.number: (t.values, t.params) for t in first.study.trials if t.state.name == "COMPLETE"}
    assert len(done_before) == 2
    interrupted = [t for t in first.study.trials if t.state.name == "FAIL"]
    assert len(interrupted) == 1

    second = _run(tiny(4), tmp_path)
    trials = second.study.trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    for t in complete:  # earlier results intact, not re-run
        if t.number in done_before:
            assert (t.values, t.params) == done_before[t.number]
    retry = [t for t in complete if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert len(retry) == 1 and retry[0].params == interrupted[0].params
    # A third run has nothing left to do.
    third = _run(tiny(4), tmp_path)
    assert len(third.study.trials) == len(trials)


def test_failing_trials_are_recorded_and_the_study_continues(tiny, tmp_path):
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if calls["n"] == 2:
            raise DivergenceError("non-finite loss at epoch 1 step 3", 1, 3)
        return real_train(*args, **kwargs)

    res = _run(tiny(3), tmp_path, tools=TrialTools(train=flaky))
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in res.study.trials if t.state.name == "FAIL"}
    assert len(reasons) == 2
    assert reasons[0].startswith("out of memory") and reasons[1].startswith("diverged")
    assert sum(t.state.name == "COMPLETE" for t in res.study.trials) == 1
    assert set(res.trials["fail_reason"].dropna()) == set(reasons.values())


def test_changed_space_is_refused(tiny, tmp_path):
    _run(tiny(1), tmp_path)
    study_file = tiny(2)
    (tmp_path / "space.toml").write_text(SPACE.replace("high = 2}, 1]", "high = 3}, 1]"))
    with pytest.raises(ConfigError, match="the space changed"):
        _run(study_file, tmp_path)


def test_resume_with_other_settings_is_refused_and_with_the_same_resumes(tiny, tmp_path):
    import dataclasses

    url = "sqlite:///" + str(tmp_path / "s.db")
    cfg = load_study_config(tiny(1))
    open_study(cfg, url)
    resized = cfg.replace(data=dataclasses.replace(cfg.data, resolution=24))
    with pytest.raises(ConfigError) as e:
        open_study(resized, url)
    msg = str(e.value)
    assert "data.resolution = 16" in msg and "data.resolution = 24" in msg and "\n" not in msg
    assert "another study file name or --storage" in msg
    with pytest.raises(ConfigError, match="seed = 0, .* seed = 1"):
        open_study(cfg.replace(seed=1), url)
    assert open_study(cfg, url).user_attrs["data"]["resolution"] == 16  # the same settings resume
    # measure.device may be spelled differently; a key the stored study predates is not compared.
    open_study(cfg.replace(measure=dataclasses.replace(cfg.measure, device="auto")), url)
    study = optuna.load_study(study_name=cfg.name, storage=url)
    study.set_user_attr("data", {k: v for k, v in study.user_attrs["data"].items() if k != "resolution"})
    open_study(resized, url)


def test_references_are_enqueued_first_and_tagged(tmp_path):
    (tmp_path / "space.toml").write_text(
        'depths = [1, {low = 1, high = 2}, 4, {low = 13, high = 14}, 1]\na = 0.75\nb = 2.5\n'
    )
    p = tmp_path / "refs.toml"
    p.write_text(TINY_STUDY.format(space=tmp_path / "space.toml", n=1, seed=0, train_size=64, epochs=1))
    text = p.read_text().replace("n_trials = 1", 'n_trials = 1\nreferences = ["A0"]')
    p.write_text(text)
    cfg = load_study_config(p)
    study = open_study(cfg, "sqlite:///" + str(tmp_path / "s.db"))
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["reference"] for t in waiting] == ["RepVGG-A0"]
    assert waiting[0].system_attrs["fixed_params"] == {"depth1": 2, "depth3": 14}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", "no_such_study"], "unknown study 'no_such_study'"),
        (["--study", "../x"], "invalid"),
        (["--study", "quick", "--data", "/nowhere"], "uses the embedded synthetic dataset"),
    ],
)
def test_cli_bad_input_exit_2_nothing_written(tmp_path, capsys, args, message):
    code = run_cli(main, [*args, "--reports-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_missing_data_path_nothing_written(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text('space = "quick"\n[data]\nname = "imagefolder"\nroot = "/no/such/images"\n')
    assert run_cli(main, ["--study", str(p), "--reports-dir", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dry_run_writes_nothing(tmp_path, capsys):
    assert run_cli(main, ["--study", "a_family", "--dry-run", "--reports-dir", str(tmp_path / "r")]) == 0
    assert "RepVGG-A0" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_constraints_prune_before_training(tiny, tmp_path):
    p = tiny(2)
    p.write_text(p.read_text() + "[objectives]\nmax_params_m = 0.000001\n")

    def no_training(*a, **k):
        raise AssertionError("an infeasible trial must not train")

    res = _run(p, tmp_path, tools=TrialTools(train=no_training))
    assert [t.state.name for t in res.study.trials] == ["PRUNED", "PRUNED"]
    assert "breaks max_params_m" in res.study.trials[0].user_attrs["prune_reason"]


def test_a_repeated_architecture_is_not_trained_twice(tiny, tmp_path):
    study_file = tiny(2)
    (tmp_path / "space.toml").write_text(SPACE.replace("{choices = [0.125, 0.25]}", "0.125").replace(
        "{choices = [0.25, 0.5]}", "0.25").replace("{low = 1, high = 2}", "1"))
    calls = {"n": 0}

    def counting(*a, **k):
        calls["n"] += 1
        return real_train(*a, **k)

    res = _run(study_file, tmp_path, tools=TrialTools(train=counting))  # the space holds one net
    t0, t1 = res.study.trials
    assert calls["n"] == 1 and t1.values == t0.values and t1.user_attrs["duplicate_of"] == 0


def test_study_prunes_front_members_and_links_them(tiny, tmp_path):
    p = tiny(2)
    p.write_text(p.read_text() + "[prune]\nratio = 0.5\nfinetune_epochs = 1\n")
    res = _run(p, tmp_path)
    children = [t for t in res.study.trials if t.user_attrs.get("parent_trial") is not None]
    parents = {t.number for t in res.study.trials if t.user_attrs.get("parent_trial") is None}
    assert children and {c.user_attrs["parent_trial"] for c in children} <= parents
    for c in children:
        model, ckpt = load_model(tmp_path / "reports" / "tiny" / "checkpoints" / f"trial_{c.number:04d}.pt")
        assert ckpt.meta["parent_trial"] == c.user_attrs["parent_trial"]
        assert c.user_attrs["params"] < res.study.trials[c.user_attrs["parent_trial"]].user_attrs["params"]
    assert res.trials["parent_trial"].notna().sum() == len(children)
    # Resuming does not prune again nor count pruned variants as search trials.
    again = _run(p, tmp_path)
    assert len(again.study.trials) == len(res.study.trials)


def test_a_third_objective_runs_end_to_end(tmp_path, capsys):
    """``[objectives] extra = ["peak_memory_mb"]``: three Optuna directions, the value recorded and in the
    CSVs, the front taken in three objectives, the report written, and resuming without it refused."""
    register_report()  # the page is checked below
    path = write_tiny_study(tmp_path, 4, tail='[objectives]\nextra = ["peak_memory_mb"]\n')
    res = _run(path, tmp_path)
    assert [d.name for d in res.study.directions] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]
    assert res.study.metric_names == ["accuracy", "images/s", "peak memory MB"]
    df = res.trials
    assert (df["peak_memory_mb"] > 0).all()
    for t in res.study.trials:
        assert t.values[2] == pytest.approx(t.user_attrs["peak_memory_mb"])
    out = tmp_path / "reports" / "tiny"
    import pandas as pd

    assert "peak_memory_mb" in pd.read_csv(out / "trials.csv") and "peak_memory_mb" in pd.read_csv(out / "pareto.csv")
    from repvgg_nas.stats import pareto_mask

    done = df[df["state"] == "COMPLETE"].drop_duplicates("spec_hash")  # the front names each architecture once
    three = pareto_mask(done["accuracy"], done["throughput"], -done["peak_memory_mb"])
    assert set(done.loc[three, "number"]) == set(df.loc[df["on_front"], "number"])
    html = (out / "index.html").read_text()
    assert "minimize peak_memory_mb" in html and "peak activation memory" in html
    hv = pd.read_csv(out / "report_hypervolume.csv")
    assert (hv["hypervolume"] >= 0).all()
    with pytest.raises(ConfigError, match="objectives.extra"):
        _run(write_tiny_study(tmp_path, 4), tmp_path)


def test_the_cli_line_shows_every_objective():
    from repvgg_nas.objectives import objectives_for
    from repvgg_nas.search.console import trial_line

    t = optuna.trial.create_trial(values=[0.7123, 1234.4, 61.26], user_attrs={"params": 1_500_000, "arch": "x"})
    assert trial_line(t, objectives_for(["peak_memory_mb"])).startswith(
        "trial -1: acc 0.712, 1234 img/s, 61.3 MB peak activation memory, 1.50M params")
    two = optuna.trial.create_trial(values=[0.7123, 1234.4], user_attrs={"params": 1_500_000, "arch": "x"})
    assert trial_line(two).startswith("trial -1: acc 0.712, 1234 img/s, 1.50M params")


def test_a_rerun_draws_new_nets_instead_of_replaying(tiny, tmp_path):
    """The first run is reproducible from the study seed; a later run of the same command seeds its sampler
    from the study seed and what the study holds, so it does not replay the first run's draws."""
    from repvgg_nas.search import run_seed

    random = '[sampler]\nname = "random"\n'
    first = _run(write_tiny_study(tmp_path, 3, tail=random), tmp_path)
    drawn = [t.params for t in first.study.trials]
    again = _run(write_tiny_study(tmp_path, 6, tail=random), tmp_path)
    later = [t.params for t in again.study.trials[3:]]
    assert len(later) == 3 and later != drawn
    assert run_seed(0, 0) == 0 and run_seed(0, 3) != run_seed(0, 6) and run_seed(0, 3) != 0
