"""A front you can trust: seed repeats and long re-trainings as linked trials, per-architecture
statistics, claims only beyond the noise, proxy fidelity, contended speed, hypervolume floor."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

from repvgg_nas import ConfigError
from repvgg_nas.measure import Measurement, MeasureSettings, ThroughputCache
from repvgg_nas.report import (
    architecture_stats, claims_frame, collect_report_data, dominates, fidelity, hypervolume_frame,
    pareto_frame, report_trials_frame, trials_frame, verdict,
)
from repvgg_nas.report import front_numbers, register_report
from repvgg_nas.stats import PRIOR_SEED_STD, standard_error
from repvgg_nas.search import counts_as_done, load_study_config, run_search, slot_state
from repvgg_nas.measure import measure_spec
from repvgg_nas.search import TrialTools
from repvgg_nas.search import trust as trust_mod
from repvgg_nas.train import train as real_train
from repvgg_nas.search.console import pareto_table
from repvgg_nas.zoo import get as zoo_get

from .helpers import write_tiny_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRUST = "[trust]\nseeds = 2\nlong_epochs = 2\n"
BASE = {"depth2": 1, "depth3": 1, "a": 0.125, "b": 0.25}


# ---------------------------------------------------------------------------
# claims: the rule, on frames built to sit inside and outside the noise
# ---------------------------------------------------------------------------


def _study_with(points: list[tuple[str, str | None, list[float], float]]) -> optuna.Study:
    """One architecture per entry: (spec hash, reference, accuracies over seeds, images/s); 2000 val images."""
    s = optuna.create_study(directions=["maximize", "maximize"])
    for h, ref, accs, thr in points:
        first = len(s.trials)
        for i, acc in enumerate(accs):
            ua: dict[str, Any] = {"spec_hash": h, "arch": h, "val_size": 2000, "throughput_iqr": thr * 0.02,
                                  "measure_contended": False}
            if i == 0 and ref:
                ua["reference"] = ref
            if i:
                ua.update(repeat_of=first, train_seed=i)
            s.add_trial(optuna.trial.create_trial(values=[acc, thr], user_attrs=ua))
    return s


def test_a_gap_inside_the_noise_is_inconclusive_and_a_clear_one_dominates():
    # Trial 2 beats the reference on both point values by a hair: the old bare rule said "dominates".
    s = _study_with([("ref", "A0", [0.700, 0.710], 100.0), ("hair", None, [0.712, 0.708], 101.0)])
    trials = trials_frame(s)
    by = trials.set_index("number")
    assert dominates(by.loc[2], by.loc[0])
    stats = architecture_stats(trials).set_index("number")
    assert stats.loc[0, "n"] == 2 and stats.loc[0, "accuracy_mean"] == pytest.approx(0.705)
    assert stats.loc[0, "accuracy_std"] == pytest.approx(np.std([0.70, 0.71], ddof=1))
    se = math.sqrt(stats.loc[0, "accuracy_std"] ** 2 / 2 + 0.705 * 0.295 / 2000)
    assert stats.loc[0, "accuracy_se"] == pytest.approx(se)
    pareto = pareto_frame(trials).set_index("number")
    assert set(pareto.index) == {0, 2}
    assert pareto.loc[2, "dominates"] == "" and pareto.loc[2, "claims"].startswith("A0: inconclusive (+0.5 ± ")
    claim = claims_frame(architecture_stats(trials)).iloc[0]
    assert claim["verdict"] == "inconclusive" and claim["speed_ratio"] == pytest.approx(1.01)
    assert claim["accuracy_diff"] == pytest.approx(0.005) and claim["accuracy_diff_se"] > 0.005 / 2

    clear = _study_with([("ref", "A0", [0.700, 0.710], 100.0), ("big", None, [0.800, 0.805], 150.0),
                         ("fast", None, [0.703, 0.707], 400.0)])
    pareto = pareto_frame(trials_frame(clear)).set_index("number")
    assert pareto.loc[2, "dominates"] == "A0" and pareto.loc[2, "claims"].startswith("A0: dominates (+9.8 ± ")
    assert pareto.loc[4, "claims"].startswith("A0: inconclusive on accuracy (+0.0 ± 1.5 pts), 4.0x faster (")
    assert "long_claims" in pareto and pareto.loc[2, "long_claims"] == ""
    table = pareto_table(pareto_frame(trials_frame(clear)))
    assert "0.8025 ± " in table and "(n=2)" in table and "A0: dominates" in table


def test_verdict_rule_each_branch():
    assert verdict(0.05, 0.01, 1.5, 0.1, 2.0) == "dominates"
    assert verdict(0.015, 0.01, 1.5, 0.1, 2.0) == "inconclusive on accuracy (+1.5 ± 1.0 pts), 1.5x faster"
    assert verdict(0.002, 0.003, 1.5, 0.1, 2.0) == "as accurate, 1.5x faster"
    assert verdict(0.05, 0.01, 1.05, 0.1, 2.0) == "more accurate, as fast"
    assert verdict(-0.05, 0.01, 1.5, 0.1, 2.0) == "trade-off"
    assert verdict(0.015, 0.01, 1.05, 0.1, 2.0) == "inconclusive"
    assert verdict(0.002, 0.003, 1.05, 0.1, 2.0) == "ties"
    assert verdict(0.015, 0.01, 1.05, 0.1, 1.0) == "more accurate, as fast"  # claim_sigmas matters


def test_single_runs_take_the_pooled_seed_spread_and_the_floor_follows_the_references():
    s = _study_with([("ref", "A0", [0.60, 0.64], 100.0), ("one", None, [0.70], 50.0)])
    stats = architecture_stats(trials_frame(s)).set_index("number")
    pooled = np.std([0.60, 0.64], ddof=1)
    assert stats.loc[2, "accuracy_se"] == pytest.approx(math.sqrt(pooled ** 2 + 0.7 * 0.3 / 2000))
    hv = hypervolume_frame(report_trials_frame(s))
    floor = 0.62 - 2 * stats.loc[0, "accuracy_se"]
    assert hv["reference_accuracy"].iloc[0] == pytest.approx(floor)
    # Seed repeats are not steps of the search's hypervolume history.
    assert hv["number"].tolist() == [0, 2]


def test_one_seed_per_architecture_pays_the_prior_seed_spread():
    # The prior is the pooled seed std of issue 13's a_family 3-seed repeats.
    repeats = [[0.693, 0.699, 0.703], [0.717, 0.704, 0.706], [0.726, 0.693, 0.726]]
    pooled = math.sqrt(sum(2 * np.var(r, ddof=1) for r in repeats) / 6)
    assert round(pooled, 3) == PRIOR_SEED_STD == load_study_config("quick").trust.prior_seed_std
    # Issue 13's example, one seed each: A0 0.693 vs trial 8 0.726 on 2000 images, 1.3x faster.
    # Without a seed term it read "dominates (+3.3 ± 1.4 pts)"; 3-seed means put it at +1.7.
    s = _study_with([("a0", "A0", [0.693], 100.0), ("t8", None, [0.726], 130.0)])
    stats = architecture_stats(trials_frame(s))
    assert stats.attrs["seed_std_source"] == "prior" and stats.attrs["pooled_seed_std"] == PRIOR_SEED_STD
    assert stats.set_index("number").loc[1, "accuracy_se"] == pytest.approx(
        math.sqrt(PRIOR_SEED_STD ** 2 + 0.726 * 0.274 / 2000))
    pareto = pareto_frame(trials_frame(s)).set_index("number")
    assert pareto.loc[1, "claims"].startswith("A0: inconclusive on accuracy (+3.3 ± 2.2 pts), 1.3x faster (")
    assert pareto.loc[1, "dominates"] == ""
    big = _study_with([("a0", "A0", [0.693], 100.0), ("big", None, [0.780], 130.0)])
    assert pareto_frame(trials_frame(big)).set_index("number").loc[1, "dominates"] == "A0"  # a clear gap still does
    # The study's [trust] prior_seed_std is what the frames use (0: the old, overconfident reading).
    s.set_user_attr("trust", {"prior_seed_std": 0.0})
    assert pareto_frame(trials_frame(s)).set_index("number").loc[1, "dominates"] == "A0"


def test_a_pruned_variant_without_a_recorded_val_size_takes_the_studys():
    s = _study_with([("ref", "A0", [0.70], 100.0)])
    s.add_trial(optuna.trial.create_trial(values=[0.68, 150.0], user_attrs={
        "spec_hash": "p", "arch": "p", "parent_trial": 0, "throughput_iqr": 3.0, "measure_contended": False}))
    trials = trials_frame(s)
    se = math.sqrt(PRIOR_SEED_STD ** 2 + 0.68 * 0.32 / 2000)
    assert pareto_frame(trials).set_index("number").loc[1, "accuracy_se"] == pytest.approx(se)
    bare = trials.copy()
    bare.attrs.clear()  # e.g. a frame read back from CSV: the caller gives the study's size
    assert pareto_frame(bare, val_size=2000).set_index("number").loc[1, "accuracy_se"] == pytest.approx(se)


def test_trust_table_is_validated(tmp_path):
    good = load_study_config(write_tiny_study(tmp_path, tail=TRUST))
    assert good.trust.seeds == 2 and good.trust.long_epochs == 2 and good.trust.claim_sigmas == 2.0
    assert good.to_dict()["trust"]["seeds"] == 2 and good.trust.prior_seed_std == 0.012
    assert load_study_config(write_tiny_study(tmp_path / "p", tail="[trust]\nprior_seed_std = 0\n")).trust.prior_seed_std == 0
    for tail, message in [
        ("[trust]\nseeds = 0\n", "trust.seeds: 0 is out of range"),
        ("[trust]\nlong_epochs = 1\n", "trust.long_epochs: 1 must exceed train.epochs (1)"),
        ("[trust]\naccuracy_floor = 1.5\n", "trust.accuracy_floor: 1.5 is out of range"),
        ("[trust]\nclaim_sigma = 2\n", "trust.claim_sigma: unknown key"),
        ("[trust]\nseeds = \"3\"\n", "trust.seeds: must be"),
        ("[trust]\nprior_seed_std = 1.5\n", "trust.prior_seed_std: 1.5 is out of range"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_study_config(write_tiny_study(tmp_path / "bad", tail=tail))
    assert load_study_config("quick").trust.seeds == 1


# ---------------------------------------------------------------------------
# speed: contended figures are flagged and never final in the cache
# ---------------------------------------------------------------------------


def test_contended_measurement_is_not_served_as_final(tmp_path):
    spec = zoo_get("A0")
    settings = MeasureSettings(device="cpu")
    cache = ThroughputCache(tmp_path / "c.json")

    def m(thr: float, contended: bool) -> Measurement:
        return Measurement(thr, 1.0, 1.0, 0.1, thr, 0.01, 0.01, 3, 1, (1.0,), None, contended=contended)

    cache.put(spec, settings, m(12.9, True))
    assert cache.get(spec, settings) is None and ThroughputCache.key(spec, settings) not in cache
    cache.put(spec, settings, m(29.3, False))
    cache.put(spec, settings, m(10.0, True))  # a later contended figure does not replace the clean one
    again = ThroughputCache(tmp_path / "c.json")
    assert again.get(spec, settings).images_per_s == 29.3 and ThroughputCache.key(spec, settings) in again


# ---------------------------------------------------------------------------
# end to end on tiny nets: linked trials, statistics, tau, flags, resume
# ---------------------------------------------------------------------------


def _trust_study(tmp_path, n: int = 2):
    """A tiny study with ``[trust] seeds = 2, long_epochs = 2`` and one reference enqueued first."""
    path = write_tiny_study(tmp_path, n=n, seed=0, tail=TRUST + '[sampler]\nname = "random"\n')
    reports = tmp_path / "reports"
    (reports / "tiny").mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{reports / 'tiny' / 'study.db'}"
    if not (reports / "tiny" / "study.db").exists():
        pre = optuna.create_study(study_name="tiny", storage=url, directions=["maximize", "maximize"])
        pre.enqueue_trial(BASE, user_attrs={"reference": "tiny-ref"})
    return path, reports


def _linked(study: optuna.Study) -> dict[tuple, list[optuna.trial.FrozenTrial]]:
    out: dict[tuple, list] = {}
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if ua.get("repeat_of") is not None and ua.get("outcome") != "lost":
            out.setdefault((ua["repeat_of"], ua.get("train_seed"), ua.get("train_epochs")), []).append(t)
    return out


def test_seeds_and_long_retraining_are_linked_trials(tmp_path):
    register_report()  # the report's CSVs are checked below
    path, reports = _trust_study(tmp_path)
    real_measure = measure_spec
    flagged: list[str] = []

    def first_one_contended(spec, settings, cache):
        """The first measurement (the reference's) as if other work had loaded the machine."""
        if flagged:
            return real_measure(spec, settings, cache)
        flagged.append(spec.hash)
        m = dataclasses.replace(real_measure(spec, settings, None), contended=True)
        cache.put(spec, settings, m)
        return m

    res = run_search(load_study_config(path), reports_dir=reports, progress=False,
                     tools=TrialTools(measure=first_one_contended))
    study = res.study
    assert study.metric_names == ["accuracy", "images/s"]
    assert slot_state(study.get_trials(deepcopy=False), 2).done == 2
    linked = _linked(study)
    stats = architecture_stats(res.trials)
    wanted = stats[stats["on_front"] | stats["reference"].notna()]
    assert 0 in set(wanted["number"])  # the reference
    for n in wanted["number"]:
        for key in ((n, 1, None), (n, None, 2)):  # seed cfg.seed + 1 at the proxy budget; the long budget
            runs = linked[key]
            assert len(runs) == 1 and runs[0].state.name == "COMPLETE"
            assert not counts_as_done(runs[0])
    long_run = linked[(0, None, 2)][0]
    assert long_run.user_attrs["spec_hash"] == study.trials[0].user_attrs["spec_hash"]
    # Another seed is another net: its accuracy comes from its own training.
    assert linked[(0, 1, None)][0].params == study.trials[0].params
    # Every trial records whether its speed was measured under load and on how many val images.
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(t.user_attrs["measure_contended"] in (True, False) and t.user_attrs["val_size"] == 32 for t in done)

    pareto = pd.read_csv(reports / "tiny" / "pareto.csv")
    ref = pareto[pareto["number"] == 0].iloc[0]
    accs = [study.trials[0].values[0], linked[(0, 1, None)][0].values[0]]
    assert ref["n"] == 2 and ref["accuracy"] == pytest.approx(np.mean(accs))
    assert ref["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert ref["long_accuracy"] == pytest.approx(long_run.values[0])
    assert set(pareto["number"]) == set(wanted["number"])
    # Lockstep re-measurement of the front and the references, stored on the study.
    lock = study.user_attrs["lockstep_measurement"]
    assert set(lock["archs"]) == set(wanted["spec_hash"]) and lock["at"]
    assert pareto["lockstep_throughput"].notna().all()
    # Kendall tau between the proxy and the long budget, in the report's data.
    # Every net re-trained long was on the front or a reference when the re-training was chosen; the
    # final front (on mean accuracy, lockstep speed) may have dropped one since, never gained one untrained.
    long_trained = stats[stats["long_accuracy"].notna()]
    assert set(wanted["number"]) <= set(long_trained["number"])
    fid = fidelity(stats)
    assert fid.n == len(long_trained)
    data = collect_report_data(study)
    assert len(data.fidelity) == fid.n
    summary = data.summary.set_index("field")["value"]
    assert "Kendall tau" in summary["proxy fidelity"] or fid.n < 2
    assert "lowest reference" in summary["hypervolume reference point"] or "tiny-ref" not in set(pareto["reference"])
    # The contended figure is flagged on its trial and in the report, and was not served again as final.
    assert study.trials[0].user_attrs["measure_contended"] is True
    assert summary["contended measurements"].startswith("trial 0")
    assert linked[(0, 1, None)][0].user_attrs["measure_cached"] is False
    assert (reports / "tiny" / "report_fidelity.csv").is_file() and (reports / "tiny" / "report_claims.csv").is_file()
    # Long re-trainings keep their checkpoints (the better-trained nets).
    assert (reports / "tiny" / "checkpoints" / f"trial_{long_run.number:04d}.pt").is_file()


def test_resume_keeps_every_repeat_and_redoes_none(tmp_path):
    path, reports = _trust_study(tmp_path)
    real = real_train
    calls: list[tuple[int, int]] = []

    def second_linked_is_ctrl_c(model, data, cfg, *a, **kw):
        calls.append((cfg.seed, cfg.epochs))
        if sum(c != (0, 1) for c in calls) == 2:  # the second linked re-training
            raise KeyboardInterrupt
        return real(model, data, cfg, *a, **kw)

    first = run_search(load_study_config(path), reports_dir=reports, progress=False,
                       tools=TrialTools(train=second_linked_is_ctrl_c))
    assert first.interrupted
    before = {k: [(t.number, t.values) for t in v if t.state.name == "COMPLETE"] for k, v in _linked(first.study).items()}
    finished = {k: v for k, v in before.items() if v}
    assert len(finished) == 1
    died = [t for v in _linked(first.study).values() for t in v if t.state.name == "FAIL"]
    assert len(died) == 1 and died[0].user_attrs["fail_reason"].startswith("interrupted")

    calls.clear()
    counting = TrialTools(train=lambda *a, **kw: (calls.append(a[2].seed), real(*a, **kw))[1])
    second = run_search(load_study_config(path), reports_dir=reports, progress=False, tools=counting)
    assert not second.interrupted
    after = _linked(second.study)
    for key, runs in finished.items():  # the finished repeat is kept, not trained again
        assert [(t.number, t.values) for t in after[key] if t.state.name == "COMPLETE"] == runs
    for key, runs in after.items():
        assert sum(t.state.name == "COMPLETE" for t in runs) == 1, key
    missing = len(after) - len(finished)
    assert len(calls) == missing  # only what was missing ran (no search trial either)
    # A third run trains nothing at all.
    calls.clear()
    run_search(load_study_config(path), reports_dir=reports, progress=False)
    assert calls == []


def test_pruned_variants_record_what_their_standard_error_needs(tmp_path):
    path = write_tiny_study(tmp_path, n=2, tail="[prune]\nratio = 0.5\nfinetune_epochs = 1\n")
    res = run_search(load_study_config(path), reports_dir=tmp_path / "reports", progress=False)
    children = [t for t in res.study.trials if t.user_attrs.get("parent_trial") is not None]
    assert children
    stats = architecture_stats(res.trials).set_index("number")
    for c in children:
        ua = c.user_attrs
        assert ua["val_size"] == 32 and ua["throughput_iqr"] >= 0 and ua["measure_contended"] in (True, False)
        acc = c.values[0]
        assert ua["accuracy"] == acc and acc * 32 == pytest.approx(round(acc * 32), abs=1e-9)  # not rounded
        assert stats.loc[c.number, "kind"] == "pruned"
        se = stats.loc[c.number, "accuracy_se"]
        assert se > 0 and se == pytest.approx(standard_error(acc, PRIOR_SEED_STD, 1, 32))


def test_a_trial_that_rejoins_the_front_keeps_its_checkpoint(tmp_path):
    """Trial 1 is off the front when it finishes (trial 0 beats it on both axes); trial 0's second
    seed lowers its mean below trial 1's, which rejoins the front and must still have its net."""
    path = write_tiny_study(tmp_path, n=2, tail="[trust]\nseeds = 2\n")
    reports = tmp_path / "reports"
    (reports / "tiny").mkdir(parents=True)
    pre = optuna.create_study(study_name="tiny", storage=f"sqlite:///{reports / 'tiny' / 'study.db'}",
                              directions=["maximize", "maximize"])
    pre.enqueue_trial(BASE)
    pre.enqueue_trial({**BASE, "a": 0.25})
    accs, speeds = [[0.8, 0.5], [0.7, 0.7]], [100.0, 50.0]  # per architecture in order of first sight
    seen: list[str] = []
    evaluated: dict[str, int] = {}

    def fake(thr: float) -> Measurement:
        return Measurement(thr, 1.0, 1.0, 0.1, thr, 0.01, 0.01, 3, 1, (1.0,), None)

    def measure(spec, settings, cache):
        if spec.hash not in seen:
            seen.append(spec.hash)
        return fake(speeds[seen.index(spec.hash)])

    def evaluate(net, data, device):
        k = evaluated.get(net.spec.hash, 0)
        evaluated[net.spec.hash] = k + 1
        return accs[seen.index(net.spec.hash)][k]

    tools = TrialTools(measure=measure, evaluate=evaluate,
                       measure_lockstep=lambda specs, m: {h: fake(1.0) for h in specs})
    res = run_search(load_study_config(path), reports_dir=reports, progress=False, tools=tools)
    assert front_numbers(res.study) == {0, 1}
    ckpts = reports / "tiny" / "checkpoints"
    assert all((ckpts / f"trial_{n:04d}.pt").is_file() for n in (0, 1))
    # Once the repeats are done, checkpoints off the front go as before (bounded disk use).
    repeats = [t.number for t in res.study.trials if t.user_attrs.get("repeat_of") is not None]
    assert len(repeats) == 2 and not any((ckpts / f"trial_{n:04d}.pt").exists() for n in repeats)


def test_a_reference_queued_past_the_target_does_not_block_the_re_trainings(tmp_path):
    """Optuna runs the oldest queued trial first: a second reference that finds the target (1) full is
    pruned as surplus and queued again; the linked re-trainings must still all run in this run."""
    path, reports = _trust_study(tmp_path, n=1)
    pre = optuna.load_study(study_name="tiny", storage=f"sqlite:///{reports / 'tiny' / 'study.db'}")
    pre.enqueue_trial({**BASE, "a": 0.25}, user_attrs={"reference": "tiny-ref-2"})
    cfg = load_study_config(path)
    res = run_search(cfg, reports_dir=reports, progress=False)
    study = res.study
    assert slot_state(study.get_trials(deepcopy=False), 1).done == 1
    assert trust_mod.linked_wanted(study, cfg) and not trust_mod.linked_pending(study, cfg)
    linked = _linked(study)
    assert set(linked) == set(trust_mod.linked_wanted(study, cfg))
    assert all(sum(t.state.name == "COMPLETE" for t in v) == 1 for v in linked.values())
    # The reference past the target is still queued for a run with a larger target.
    waiting = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))]
    assert [t.user_attrs.get("reference") for t in waiting] == ["tiny-ref-2"]


def test_one_seed_trained_twice_at_once_is_one_sample():
    """Two workers trained the same net at the same seed before either finished (no duplicate_of):
    one experiment, so n = 1 and no seed spread of 0 from it."""
    s = _study_with([("ref", "A0", [0.70], 100.0), ("twin", None, [0.75], 150.0)])
    s.add_trial(optuna.trial.create_trial(values=[0.75, 151.0], user_attrs={
        "spec_hash": "twin", "arch": "twin", "val_size": 2000, "throughput_iqr": 3.0, "measure_contended": False}))
    s.add_trial(optuna.trial.create_trial(values=[0.74, 150.0], user_attrs={
        "spec_hash": "twin", "arch": "twin", "val_size": 2000, "throughput_iqr": 3.0, "measure_contended": False,
        "repeat_of": 1, "train_seed": 1}))
    stats = architecture_stats(trials_frame(s)).set_index("number")
    assert stats.loc[1, "n"] == 2 and stats.loc[1, "seeds"] == "base,1"
    assert stats.loc[1, "accuracy_mean"] == pytest.approx(0.745)
    assert stats.attrs["seed_std_source"] == "measured"


def test_long_accuracy_is_taken_at_the_studys_current_long_budget():
    s = _study_with([("ref", "A0", [0.70], 100.0), ("fast", None, [0.70], 300.0)])
    for epochs, acc in ((4, 0.80), (8, 0.90), (8, 0.86)):
        s.add_trial(optuna.trial.create_trial(values=[acc, 100.0], user_attrs={
            "spec_hash": "ref", "arch": "ref", "val_size": 2000, "repeat_of": 0, "train_epochs": epochs}))
    stats = architecture_stats(trials_frame(s)).set_index("number")  # no [trust] recorded: the longest
    assert stats.loc[0, "long_accuracy"] == pytest.approx(0.88) and stats.loc[0, "long_epochs"] == 8
    s.set_user_attr("trust", {"long_epochs": 4})  # a resume went back to 4 epochs
    stats = architecture_stats(trials_frame(s)).set_index("number")
    assert stats.loc[0, "long_accuracy"] == pytest.approx(0.80) and stats.loc[0, "long_epochs"] == 4
    assert stats.loc[0, "long_n"] == 1


def test_a_speed_ratio_never_pairs_a_lockstep_figure_with_a_search_figure():
    s = _study_with([("ref", "A0", [0.70], 100.0), ("fast", None, [0.70], 300.0)])
    trials = trials_frame(s)
    stats = architecture_stats(trials)
    ref = stats["reference"].notna()
    stats.loc[ref, ["lockstep_throughput", "lockstep_iqr"]] = [50.0, 1.0]  # only the reference re-measured
    assert claims_frame(stats).iloc[0]["speed_ratio"] == pytest.approx(3.0)  # search vs search
    stats.loc[~ref, ["lockstep_throughput", "lockstep_iqr"]] = [200.0, 2.0]
    assert claims_frame(stats).iloc[0]["speed_ratio"] == pytest.approx(4.0)  # lockstep vs lockstep


def test_an_end_phase_error_still_writes_the_results(tmp_path):
    register_report()
    path = write_tiny_study(tmp_path, n=1)

    def broken(*a, **kw):
        raise RuntimeError("measuring device lost")

    with pytest.raises(RuntimeError, match="measuring device lost"):  # the lockstep re-measurement fails
        run_search(load_study_config(path), reports_dir=tmp_path / "reports", progress=False,
                   tools=TrialTools(measure_lockstep=broken))
    out = tmp_path / "reports" / "tiny"
    assert (out / "trials.csv").is_file() and (out / "pareto.csv").is_file() and (out / "index.html").is_file()
    assert len(pd.read_csv(out / "trials.csv")) == 1


class _Recorder:
    """A trial runner that records which trials it was given (it must be given none)."""

    def __init__(self, ran: list) -> None:
        self.ran = ran

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        self.ran.append(trial.number)
        return (0.0, 0.0)

    def release(self, trial: optuna.Trial, how: Any) -> None:
        pass


def test_linked_phase_waits_for_a_re_training_running_elsewhere(monkeypatch):
    """Nothing queued but a linked re-training still RUNNING (another worker, or a killed run whose
    heartbeat has not expired): the phase waits for it instead of returning without it."""
    import threading

    from repvgg_nas.search import current_worker
    from repvgg_nas.search.events import Waiting

    study = optuna.create_study(directions=["maximize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.7, 100.0], user_attrs={"spec_hash": "a"}))
    other = study.ask()
    other.set_user_attr("repeat_of", 0)
    other.set_user_attr("train_seed", 1)
    other.set_user_attr("worker", current_worker().name)  # alive: not recovered as dead
    monkeypatch.setattr(trust_mod, "linked_wanted", lambda s, c: [(0, 1, None)])
    finisher = threading.Timer(1.5, lambda: study.tell(other, [0.71, 100.0]))
    events: list = []
    ran: list = []
    finisher.start()
    try:
        trust_mod.run_linked(study, None, _Recorder(ran), lambda *a: None, events.append)
    finally:
        finisher.cancel()
    assert study.trials[1].state.name == "COMPLETE" and ran == []
    assert [type(e) for e in events] == [Waiting] and events[0].running == 1 and events[0].target == 1
