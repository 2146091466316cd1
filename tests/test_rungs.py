"""Multi-fidelity search ([fidelity]): who climbs the rungs, what a pause, a resume and a kill keep.

The promotion rule is checked three ways: on hand-built trials (the pure
functions), on a scripted single-process study whose rung results are set
by the test (so the expected stops are known exactly, and every decision is
re-derived from the records of the trials that came before it), and on real
multi-process studies (PostgreSQL, a journal file with a SIGKILL), where a
decision can only be checked against what had certainly been recorded
before it. Every study trains for real: in ``continue`` mode a candidate that
climbs to the top must end with the very weights of a single-fidelity run.
The scripted studies get their measurements and rung scores through the
trial's tools (:class:`repvgg_nas.search.TrialTools`), not by patching modules.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import torch

from repvgg_nas import ConfigError, lifecycle
from repvgg_nas.checkpoint import load_checkpoint
from repvgg_nas.data import load_data
from repvgg_nas.layout import CACHE_DIR_ENV, StudyPaths
from repvgg_nas.lifecycle import Outcome
from repvgg_nas.measure import Measurement
from repvgg_nas.records import RungRecord
from repvgg_nas.stats import dominates
from repvgg_nas.search import TrialTools, load_study_config, open_study, run_search
from repvgg_nas.search import rungs as rungs_mod
from repvgg_nas.search.__main__ import main
from repvgg_nas.report import report_trials_frame, status_frame
from repvgg_nas.report.rungs import rungs_caption, rungs_frame
from repvgg_nas.search.ends import Stopped, TimeBudgetPaused
from repvgg_nas.search.events import RungDecided, TimeUp
from repvgg_nas.search.console import Console, budget_text, trial_line
from repvgg_nas.search.rungs import (
    Climber, RungResult, dominating, paused_by_time, rung_records, rung_results, stopped_at,
)
from repvgg_nas.search.slots import slot_state
from repvgg_nas.study import PROMOTION_RULES, FidelityConfig, RuleSettings
from repvgg_nas.spec import RepVGGSpec
from repvgg_nas.storage import make_storage
from repvgg_nas.train import TrainConfig, evaluate, init_model, train

from .helpers import write_tiny_study
from .test_scale import HEARTBEAT, child_env, load, postgres, run_workers_and_kill, search_cmd  # noqa: F401  (postgres: fixture)

optuna.logging.set_verbosity(optuna.logging.WARNING)
TS = optuna.trial.TrialState

FIDELITY = '[fidelity]\nrungs = 3\nreduction_factor = 2\nmode = "continue"\n[sampler]\nname = "random"\n'
EPOCHS = 4
BUDGETS = (1, 2, 4)  # rungs of 4 epochs with reduction factor 2

# A scripted study: each architecture's measured speed and its accuracy at rungs 0 and 1 (the top
# rung is evaluated for real). Single process, so trials decide in number order; what each should do:
SCENARIO = [
    (dict(depth2=1, depth3=1, a=0.125, b=0.25), 100.0, (0.5, 0.5)),   # 0 reference: always climbs
    (dict(depth2=1, depth3=1, a=0.25, b=0.25), 50.0, (0.6, 0.4)),     # 1 climbs (more accurate), stopped at 1 by 0
    (dict(depth2=1, depth3=1, a=0.125, b=0.5), 100.0, (0.5, 0.5)),    # 2 equal to 0 at both rungs: climbs to the top
    (dict(depth2=1, depth3=1, a=0.25, b=0.5), 40.0, (0.55,)),         # 3 stopped at 0 by 1 (0 is less accurate)
    (dict(depth2=2, depth3=1, a=0.125, b=0.25), 200.0, (0.1, 0.9)),   # 4 fastest, then best: climbs to the top
    (dict(depth2=1, depth3=2, a=0.125, b=0.25), 30.0, (0.05,)),       # 5 stopped at 0: 1 is its most accurate dominator
]
EXPECTED = {  # trial -> (state, rung it was stopped at, the trial that stopped it)
    0: (TS.COMPLETE, None, None), 1: (TS.PRUNED, 1, 0), 2: (TS.COMPLETE, None, None), 3: (TS.PRUNED, 0, 1),
    4: (TS.COMPLETE, None, None), 5: (TS.PRUNED, 0, 1),
    6: (TS.PRUNED, 1, 0),  # the architecture of 1 again: stopped like its twin, untrained
    7: (TS.COMPLETE, None, None),  # the architecture of 2 again
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One training thread: on 2 shared cores a second one spins against the other load (4x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _measurement(images_per_s: float) -> Measurement:
    return Measurement(images_per_s, 1.0, 1.0, 0.1, images_per_s, 0.01, 0.01, 3, 1, (1.0,), None)


class Script:
    """The tools of a scripted study: measured speed and rung accuracies of architectures, by order of first
    measurement; training and the full budget's evaluation are the real ones.

    A rung's evaluation still runs the real one (on the fused copy) first, so a
    side effect of evaluating between rungs would still show in the weights; the
    rung a net is scored at is the epochs its last training stopped at. Kept for
    the test: ``weights``, each trial's deploy net as evaluated at the full
    budget (the net its checkpoint saves), and, with ``watch`` (the study's rung
    checkpoint folder), ``on_disk``: at each rung's evaluation below the top,
    (trial, rung, {file name: meta} of the paused nets in that folder).
    ``train`` is the training the script wraps (a test's own wrapper of the real one).
    """

    def __init__(self, entries: list[tuple[dict, float, tuple[float, ...]]], watch: Path | None = None,
                 train: Callable[..., Any] = train) -> None:
        self.entries, self.seen, self.watch, self.inner = entries, [], watch, train
        self.trained: dict[str, tuple[int, int]] = {}  # spec hash -> (trial, epochs) of its latest training
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.on_disk: list[tuple[int, int, dict[str, dict]]] = []

    def measure(self, spec, settings, cache):
        if spec.hash not in self.seen:
            self.seen.append(spec.hash)
        return _measurement(self.entries[self.seen.index(spec.hash)][1])

    def train(self, model, data, cfg, device, *a, desc="", stop_epoch=None, **kw):
        result = self.inner(model, data, cfg, device, *a, desc=desc, stop_epoch=stop_epoch, **kw)
        trial = int(desc.split()[1])  # "trial N" or "trial N rung k/n"
        self.trained[model.spec.hash] = (trial, cfg.epochs if stop_epoch is None else stop_epoch)
        return result

    def evaluate(self, net, data, device=None, **kw):
        real = evaluate(net, data, device, **kw)
        assert net.spec.hash in self.trained, f"{net.spec.summary()} scored, never trained here"
        trial, epochs = self.trained[net.spec.hash]
        if epochs == EPOCHS:  # the full budget: the trial's result, scored for real
            self.weights[trial] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            return real
        rung = BUDGETS.index(epochs)
        if self.watch is not None:
            files = sorted(self.watch.glob("*")) if self.watch.is_dir() else []
            self.on_disk.append((trial, rung, {f.name: load_checkpoint(f).meta for f in files}))
        return self.entries[self.seen.index(net.spec.hash)][2][rung]

    def tools(self) -> TrialTools:
        return TrialTools(train=self.train, evaluate=self.evaluate, measure=self.measure,
                          measure_lockstep=lambda specs, settings: {h: _measurement(1.0) for h in specs})


def _prepare(folder: Path, n: int, queued: list[dict], tail: str = FIDELITY) -> tuple[Path, Path]:
    """A tiny study file and its storage with ``queued`` trials enqueued, the first as a reference."""
    path = write_tiny_study(folder, n=n, epochs=EPOCHS, tail=tail)
    reports = folder / "reports"
    (reports / "tiny").mkdir(parents=True)
    pre = optuna.create_study(study_name="tiny", storage=f"sqlite:///{reports / 'tiny' / 'study.db'}",
                              directions=["maximize", "maximize"])
    for i, params in enumerate(queued):
        pre.enqueue_trial(params, user_attrs={"reference": "tiny-ref"} if i == 0 else {})
    return path, reports


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """The scripted study in ``continue`` mode, and the climbers again as a single-fidelity study (--rungs 1)."""
    root = tmp_path_factory.mktemp("scripted")
    with pytest.MonkeyPatch.context() as mp:  # module scope: set up before the autouse cache fixture of each test
        mp.setenv(CACHE_DIR_ENV, str(root / "cache"))  # so a reference is trained here, never taken from ~/.cache
        return _scripted_studies(root)


def _scripted_studies(root: Path) -> SimpleNamespace:
    queued = [p for p, _, _ in SCENARIO] + [SCENARIO[1][0], SCENARIO[2][0]]
    path, reports = _prepare(root / "multi", n=len(queued), queued=queued)
    paths = StudyPaths.of("tiny", reports)
    events: list[Any] = []
    script = Script(SCENARIO, watch=paths.rung_checkpoints)
    res = run_search(load_study_config(path), reports_dir=reports, progress=False, on_event=events.append,
                     tools=script.tools())

    climbers = [0, 2, 4]
    single_path, single_reports = _prepare(root / "single", n=len(climbers), queued=[SCENARIO[i][0] for i in climbers])
    single_script = Script([SCENARIO[i] for i in climbers])
    single_cfg = load_study_config(single_path, {"fidelity.rungs": 1})
    single = run_search(single_cfg, reports_dir=single_reports, progress=False, tools=single_script.tools())
    return SimpleNamespace(
        study=res.study, events=events, weights=script.weights, on_disk=script.on_disk, paths=paths,
        single=single.study, single_cfg=single_cfg, single_weights=single_script.weights, climbers=climbers,
    )


# ---------------------------------------------------------------------------
# the rule, on hand-built trials
# ---------------------------------------------------------------------------


def _rec(rung: int, acc: float, ips: float, promoted: bool | None = True) -> dict:
    """A rung record in its stored form."""
    return {"rung": rung, "epochs": BUDGETS[rung], "accuracy": acc, "float_accuracy": None, "images_per_s": ips,
            "train_seconds": 0.1, "promoted": promoted, "dominated_by": None}


def _climbed(*records: dict, **attrs: Any) -> dict:
    """A candidate's user attrs: its rung records and its measured throughput (the one every record shows)."""
    return {"rungs": list(records), "images_per_s": records[0]["images_per_s"], **attrs}


def test_with_stop_sigmas_only_a_gap_beyond_the_validation_noise_stops_a_candidate():
    # 2000 validation images at ~0.33 accuracy: one binomial SE is 1.05 points, two combined 1.49.
    me = RungResult(7, (0.327, 121.6))
    assert dominating(me, [RungResult(4, (0.330, 128.7))]).trial == 4  # plain dominance: 0.3 points stop it
    assert dominating(me, [RungResult(4, (0.330, 128.7))], 1.0, 2000) is None  # inside the noise: it climbs
    assert dominating(me, [RungResult(5, (0.350, 121.6))], 1.0, 2000).trial == 5  # 2.3 points, as fast
    assert dominating(me, [RungResult(5, (0.350, 121.6))], 2.0, 2000) is None  # but not beyond 2 SE
    tie_or_slower = [RungResult(1, (0.327, 500.0)), RungResult(2, (0.6, 121.5))]
    assert dominating(me, tie_or_slower, 1.0, 2000) is None  # a tie in accuracy; a slower one
    assert dominating(me, [RungResult(1, (0.328, 121.6))], 1.0, None).trial == 1  # no validation size: no noise term


def test_dominating_needs_both_objectives_and_names_the_most_accurate():
    me = RungResult(9, (0.5, 100.0))
    assert dominating(me, []) is None
    assert dominating(me, [RungResult(1, (0.5, 100.0))]) is None  # an equal point does not dominate
    assert dominating(me, [RungResult(1, (0.9, 99.9)), RungResult(2, (0.49, 1000.0))]) is None  # trade-offs
    assert dominating(me, [RungResult(1, (0.5, 100.1))]).trial == 1  # as accurate, faster
    assert dominating(me, [RungResult(1, (0.51, 100.0))]).trial == 1  # as fast, more accurate
    pool = [RungResult(1, (0.6, 100.0)), RungResult(2, (0.7, 100.0)), RungResult(3, (0.7, 150.0)),
            RungResult(4, (0.8, 50.0))]
    assert dominating(me, pool).trial == 3  # largest accuracy, then throughput; 4 is slower
    stopped = [RungRecord.from_dict(_rec(0, 0.5, 1.0)), RungRecord.from_dict(_rec(1, 0.4, 1.0, False))]
    assert stopped_at(stopped) == 1
    climbed = [RungRecord.from_dict(r) for r in (_rec(0, 0.5, 1.0), _rec(1, 0.4, 1.0), _rec(2, 0.4, 1.0, None))]
    assert stopped_at(climbed) is None


def test_rung_records_round_trip_their_stored_form():
    stored = _rec(1, 0.4, 50.0, False)
    record = RungRecord.from_dict(stored)
    assert (record.rung, record.accuracy, record.promoted, record.out_of_time) == (1, 0.4, False, False)
    assert record.to_dict() == stored and "out_of_time" not in record.to_dict()  # only present when set
    late = RungRecord.from_dict({**stored, "out_of_time": True})
    assert late.out_of_time and late.to_dict() == {**stored, "out_of_time": True}
    assert RungRecord.from_dict(late.to_dict()) == late


def test_rung_results_pool_every_candidate_but_lost_and_linked_trials():
    study = optuna.create_study(directions=["maximize", "maximize"])
    rows: list[tuple[TS, dict]] = [
        (TS.COMPLETE, _climbed(_rec(0, 0.5, 100.0), _rec(1, 0.6, 100.0), _rec(2, 0.7, 100.0, None))),  # 0
        (TS.PRUNED, _climbed(_rec(0, 0.6, 50.0, False))),                                              # 1 stopped
        (TS.RUNNING, _climbed(_rec(0, 0.7, 20.0, None))),                      # 2 not decided yet: still a result
        (TS.FAIL, _climbed(_rec(0, 0.8, 10.0), fail_reason="interrupted: Ctrl-C",  # 3 died: its result stands
                           outcome="interrupted")),
        (TS.PRUNED, _climbed(_rec(0, 0.99, 999.0), outcome="lost")),                 # 4 lost: never counts
        (TS.COMPLETE, _climbed(_rec(0, 0.99, 999.0), repeat_of=0)),                   # 5 linked: never counts
        (TS.COMPLETE, {}),                                                            # 6 single fidelity
        (TS.RUNNING, {"images_per_s": 5.0}),                                          # 7 measured, no rung scored yet
    ]
    for state, attrs in rows:
        values = [0.5, 100.0] if state == TS.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(state=state, values=values, user_attrs=attrs))
    trials = study.get_trials(deepcopy=False)
    got = rung_results(trials, 0)
    assert [(r.trial, r.values) for r in got] == [
        (0, (0.5, 100.0)), (1, (0.6, 50.0)), (2, (0.7, 20.0)), (3, (0.8, 10.0))]
    assert [r.trial for r in rung_results(trials, 0, exclude=(2, 3))] == [0, 1]
    assert [r.trial for r in rung_results(trials, 1)] == [0] and [r.trial for r in rung_results(trials, 2)] == [0]
    assert rung_records(trials[6]) == [] and rung_records(trials[0])[2].promoted is None
    assert rung_records(trials[0])[1] == RungRecord.from_dict(_rec(1, 0.6, 100.0))
    # A newcomer with 0.65 at 30 img/s: 0 and 1 are faster but less accurate, 2 and 3 more accurate but slower
    # (trade-offs, not dominance); 4 and 5 would dominate it but do not count.
    assert dominating(RungResult(8, (0.65, 30.0)), rung_results(trials, 0)) is None
    assert dominating(RungResult(8, (0.55, 40.0)), rung_results(trials, 0)).trial == 1  # 0.6 at 50 img/s
    assert dominating(RungResult(8, (0.05, 5.0)), rung_results(trials, 0)).trial == 3  # the most accurate dominator


def test_promotion_rules_are_a_registry_of_named_rules():
    assert PROMOTION_RULES.list() == ["dominance", "none"]
    me, pool = RungResult(9, (0.5, 100.0)), [RungResult(1, (0.9, 99.9)), RungResult(2, (0.51, 100.0))]
    dominance, none = PROMOTION_RULES.get("dominance"), PROMOTION_RULES.get("None")
    assert dominance(me, pool, RuleSettings()).trial == 2 and none(me, pool, RuleSettings()) is None
    noisy = RuleSettings(stop_sigmas=1.0, val_size=2000)  # the rule reads the study's settings it needs
    assert dominance(me, pool, noisy) is None and dominance(me, pool, noisy) == dominating(me, pool, 1.0, 2000)
    assert dominance.why(me, pool[1], noisy) == (
        "dominates it beyond 1 standard error (0.510 vs 0.500 accuracy, 100 vs 100 img/s)")
    assert dominance.climbs(noisy) == "while no result at its rung dominates it beyond 1 standard error"
    assert none.climbs(RuleSettings()) == "to the top whatever the others score"


# ---------------------------------------------------------------------------
# [fidelity]: budgets, validation, the --rungs override, resuming
# ---------------------------------------------------------------------------


def test_rung_budgets():
    assert FidelityConfig(rungs=3, reduction_factor=3).budgets(6) == (1, 2, 6)
    assert FidelityConfig(rungs=3, reduction_factor=3).budgets(24) == (3, 8, 24)
    assert FidelityConfig(rungs=3, reduction_factor=2).budgets(EPOCHS) == BUDGETS
    assert FidelityConfig(rungs=1).budgets(7) == (7,) and not FidelityConfig(rungs=1).multi
    assert FidelityConfig().multi and FidelityConfig().mode == "retrain"


def test_fidelity_table_is_validated(tmp_path):
    cfg = load_study_config(write_tiny_study(tmp_path / "ok", epochs=9, tail="[fidelity]\n"))
    assert (cfg.fidelity.rungs, cfg.fidelity.reduction_factor, cfg.fidelity.mode) == (3, 3, "retrain")
    assert cfg.fidelity.budgets(9) == (1, 3, 9)
    assert cfg.to_dict()["fidelity"] == {"rungs": 3, "reduction_factor": 3, "mode": "retrain", "stop_sigmas": 0.0,
                                         "rule": "dominance", "budgets": [1, 3, 9]}
    noisy = load_study_config(write_tiny_study(tmp_path / "ns", epochs=9, tail="[fidelity]\nstop_sigmas = 1.5\n"))
    assert noisy.fidelity.stop_sigmas == 1.5
    cont = load_study_config(write_tiny_study(tmp_path / "ct", epochs=9, tail='[fidelity]\nmode = "continue"\n'))
    assert cont.fidelity.mode == "continue"
    absent = load_study_config(write_tiny_study(tmp_path / "none", epochs=9))
    assert absent.fidelity == FidelityConfig(rungs=1) and not absent.fidelity.multi
    for name, epochs, tail, message in [
        ("few", 2, "[fidelity]\nrungs = 3\nreduction_factor = 3\n",
         r"fidelity\.rungs: 3 rungs with reduction_factor 3 need more than train\.epochs = 2 "
         r"\(rung budgets would be \[1, 1, 2\] epochs\)"),
        ("key", 9, "[fidelity]\nrung = 3\n", r"fidelity\.rung: unknown key; allowed keys in fidelity: "
         r"mode, reduction_factor, rule, rungs, stop_sigmas"),
        ("mode", 9, '[fidelity]\nmode = "restart"\n', r"fidelity\.mode: "),
        ("eta", 9, "[fidelity]\nreduction_factor = 1\n", r"fidelity\.reduction_factor: 1 is out of range"),
        ("zero", 9, "[fidelity]\nrungs = 0\n", r"fidelity\.rungs: 0 is out of range"),
        ("sigmas", 9, "[fidelity]\nstop_sigmas = -1.0\n", r"fidelity\.stop_sigmas: -1\.0 is out of range"),
    ]:
        with pytest.raises(ConfigError, match=message) as e:
            load_study_config(write_tiny_study(tmp_path / name, epochs=epochs, tail=tail))
        assert str(tmp_path / name / "tiny.toml") in str(e.value)  # the file is named
    with pytest.raises(ConfigError, match="restart"):
        load_study_config(write_tiny_study(tmp_path / "mode", epochs=9, tail='[fidelity]\nmode = "restart"\n'))


def test_rungs_flag_overrides_the_table(tmp_path, capsys):
    multi = write_tiny_study(tmp_path / "m", epochs=9, tail="[fidelity]\nrungs = 3\n")
    plain = write_tiny_study(tmp_path / "p", epochs=9)
    assert not load_study_config(multi, {"fidelity.rungs": 1}).fidelity.multi
    assert load_study_config(plain, {"fidelity.rungs": 2}).fidelity.budgets(9) == (3, 9)

    def dry(study: Path, *extra: str) -> str:
        assert main(["--study", str(study), "--reports-dir", str(tmp_path), "--dry-run", *extra]) == 0
        return capsys.readouterr().out

    assert "rungs of 1, 3, 9 epochs (reduction factor 3, retrain): a candidate climbs while no result at its rung " \
           "dominates it; references train only the full 9" in dry(multi)
    assert "9 epochs per candidate (single fidelity)" in dry(multi, "--rungs", "1")
    assert "rungs of 1, 3, 9 epochs" in dry(plain, "--rungs", "3")
    with pytest.raises(ConfigError, match="--rungs"):  # the error names the flag that caused it
        main(["--study", str(plain), "--reports-dir", str(tmp_path), "--dry-run", "--rungs", "4"])


def test_resuming_with_another_fidelity_is_refused(tmp_path):
    path = write_tiny_study(tmp_path, epochs=9, tail="[fidelity]\nrungs = 3\n")
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_study_config(path)
    open_study(cfg, url)
    open_study(load_study_config(path), url)  # the same settings resume
    for overrides, key in [({"fidelity.rungs": 2}, "fidelity.rungs"), ({"fidelity.mode": "continue"}, "fidelity.mode"),
                           ({"fidelity.reduction_factor": 2}, "fidelity.reduction_factor"),
                           ({"fidelity.rungs": 1}, "fidelity.rungs")]:
        with pytest.raises(ConfigError, match=rf"created with {key} = .*resuming would mix results"):
            open_study(load_study_config(path, overrides), url)
    single = tmp_path / "single.db"
    open_study(load_study_config(write_tiny_study(tmp_path / "p", epochs=9)), f"sqlite:///{single}")
    with pytest.raises(ConfigError, match="fidelity.rungs = 1"):  # a single-fidelity study stays one
        open_study(load_study_config(tmp_path / "p" / "tiny.toml", {"fidelity.rungs": 3}), f"sqlite:///{single}")


def test_the_rule_key_is_validated_stored_and_a_changed_rule_refused_on_resume(tmp_path):
    none = load_study_config(write_tiny_study(tmp_path / "n", epochs=9, tail='[fidelity]\nrule = "none"\n'))
    assert none.fidelity.rule == "none" and none.to_dict()["fidelity"]["rule"] == "none"
    assert "a candidate climbs to the top whatever the others score; references" in budget_text(none)
    with pytest.raises(ConfigError, match=r"fidelity\.rule: 'dominate' is not allowed; choose from "
                                          r"\['dominance', 'none'\]"):
        load_study_config(write_tiny_study(tmp_path / "bad", epochs=9, tail='[fidelity]\nrule = "dominate"\n'))
    path = write_tiny_study(tmp_path / "old", epochs=9, tail="[fidelity]\nrungs = 3\n")
    made = open_study(load_study_config(path, {"fidelity.rule": "none"}), f"sqlite:///{tmp_path / 'new.db'}")
    assert made.user_attrs["fidelity"]["rule"] == "none"
    with pytest.raises(ConfigError, match=r"created with fidelity\.rule = 'none'.*resuming would mix results"):
        open_study(load_study_config(path), f"sqlite:///{tmp_path / 'new.db'}")


# ---------------------------------------------------------------------------
# checking a study's rung records
# ---------------------------------------------------------------------------


def _search(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if lifecycle.is_search(t)]


def _point(r: RungRecord) -> dict[str, float]:
    return {"accuracy": r.accuracy, "throughput": r.images_per_s}


def _at(trial: optuna.trial.FrozenTrial, rung: int) -> RungRecord | None:
    return next((r for r in rung_records(trial) if r.rung == rung), None)


def check_records(study: optuna.Study, budgets: tuple[int, ...]) -> None:
    """What holds for any multi-fidelity study, however many workers ran it."""
    top = len(budgets) - 1
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    retrain = (study.user_attrs.get("fidelity") or {}).get("mode") == "retrain"
    for t in _search(study):
        recs = rung_records(t)
        ua = t.user_attrs
        full_only = bool(ua.get("reference")) and retrain  # a retrain-mode reference trains the full budget only
        rungs = list(range(len(recs))) if not full_only else [top] * len(recs)
        assert [r.rung for r in recs] == rungs, (t.number, recs)
        assert all(r.epochs == budgets[r.rung] for r in recs)
        if recs:  # a rung is judged on the throughput measured for the trial
            assert all(r.images_per_s == ua["images_per_s"] for r in recs), (t.number, recs)
        if ua.get("duplicate_of") is not None:  # an architecture seen before: the twin's records and fate
            twin = by_number[ua["duplicate_of"]]
            assert recs == rung_records(twin) and t.state == twin.state and t.values == twin.values
            continue
        if ua.get("reference"):
            assert all(r.promoted is not False for r in recs), t.number  # references always climb
        if t.state == TS.COMPLETE:  # climbed every rung; the top one is the trial's result
            assert [r.rung for r in recs] == ([top] if full_only else list(range(len(budgets)))), (t.number, recs)
            assert all(r.promoted is True and r.dominated_by is None for r in recs[:-1])
            assert recs[-1].promoted is None and recs[-1].rung == top
            assert t.values == [recs[-1].accuracy, recs[-1].images_per_s] and ua["rung"] == top
        elif t.state == TS.PRUNED:  # stopped at the last rung it recorded, by a result that dominates it
            assert t.values is None and not ua.get("reference")
            last = recs[-1]
            assert all(r.promoted is True for r in recs[:-1]) and last.promoted is False, (t.number, recs)
            by = last.dominated_by
            assert ua["prune_reason"].startswith(f"stopped at rung {last.rung + 1}/{len(budgets)} "
                                                 f"({budgets[last.rung]} epoch")
            if by is None:  # or because its next rung needs more than a whole run's time budget
                assert last.out_of_time is True and "more than all of the time budget" in ua["prune_reason"]
                assert lifecycle.outcome(t) == Outcome.OUT_OF_TIME
            else:
                assert f"trial {by} dominates it" in ua["prune_reason"] and not last.out_of_time
                assert lifecycle.outcome(t) == Outcome.STOPPED
                theirs = _at(by_number[by], last.rung)
                assert theirs is not None and dominates(_point(theirs), _point(last))
        elif lifecycle.paused(t):  # promoted, its next rung left to the next run by the time budget
            assert recs[-1].promoted is True and recs[-1].out_of_time is True and not ua.get("reference")
        if t.state.is_finished() and not lifecycle.cut_short(t):
            assert ua.get("rung") == (recs[-1].rung if recs else None)


def _result(t: optuna.trial.FrozenTrial, r: RungRecord) -> RungResult:
    """The point a rung record of ``t`` is judged on (accuracy, throughput)."""
    return RungResult(t.number, (r.accuracy, r.images_per_s))


def check_in_order(study: optuna.Study) -> None:
    """Single process: each decision re-derived from the results of the trials numbered before it."""
    trials = study.get_trials(deepcopy=False)
    for t in _search(study):
        if t.user_attrs.get("duplicate_of") is not None:
            continue
        for r in rung_records(t):
            if r.promoted is None:
                continue
            want = dominating(_result(t, r), rung_results([u for u in trials if u.number < t.number], r.rung))
            if t.user_attrs.get("reference"):
                want = None
            # A time pause is a promotion whose next rung waits for the next run; a rung longer than a whole
            # run's budget stops a candidate nothing dominates.
            climbs = want is None and not (r.out_of_time and r.promoted is False)
            assert (r.promoted, r.dominated_by) == (climbs, None if want is None else want.trial), (t.number, r)


def check_no_known_dominator(study: optuna.Study) -> None:
    """Several workers: a promoted result is dominated by no result that was recorded before it for sure
    (that of a trial finished before this one started)."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    for t in _search(study):
        if t.user_attrs.get("reference") or t.user_attrs.get("duplicate_of") is not None:
            continue
        # A retry takes over the rungs its killed predecessors decided: those were decided when the
        # first trial of the chain ran, so only trials finished before that start are sure to be seen.
        first = by_number[lifecycle.slot_key(t, by_number)]
        before = [u for u in trials if u.datetime_complete is not None and first.datetime_start is not None
                  and u.datetime_complete < first.datetime_start]
        for r in rung_records(t):
            if r.promoted is True:
                pool = rung_results(before, r.rung, exclude=(t.number,))
                assert dominating(_result(t, r), pool) is None, (t.number, r)


def check_slots(study: optuna.Study, n: int) -> dict[int, list[optuna.trial.FrozenTrial]]:
    """Exactly ``n`` search slots answered (a stopped candidate is an answer), none twice, nothing running;
    no rung decided twice within a slot's retry chain (a retry takes its original's decisions over as they are,
    but may stop a paused candidate whose next rung needs more than its whole time budget)."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    search = [t for t in trials if lifecycle.is_search(t)]
    assert not [t.number for t in search if t.state in (TS.RUNNING, TS.WAITING)]
    state = slot_state(trials, n)
    assert state.done == n and state.finished, state
    chains: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in search:
        chains.setdefault(lifecycle.slot_key(t, by_number), []).append(t)
    answers = {k: [t for t in ts if t.state.is_finished() and not lifecycle.cut_short(t)] for k, ts in chains.items()}
    assert sorted(len(a) for a in answers.values()) == [1] * n, {k: [t.number for t in a] for k, a in answers.items()}
    for t in search:
        if t.state == TS.FAIL:
            assert lifecycle.cut_short(t), t.user_attrs.get("fail_reason")  # nothing failed but what was killed
        if t.state == TS.PRUNED:
            assert t.user_attrs["prune_reason"].startswith("stopped"), t.user_attrs["prune_reason"]
    for k, ts in chains.items():
        decided: dict[int, set[str]] = {}
        for t in ts:
            for r in rung_records(t):
                if r.promoted is not None:  # a pause may become a stop: a later run's budget was too short
                    same = r.to_dict()
                    if r.out_of_time:
                        del same["promoted"]
                    decided.setdefault(r.rung, set()).add(repr(sorted(same.items())))
        assert all(len(v) == 1 for v in decided.values()), (k, decided)
    return chains


# ---------------------------------------------------------------------------
# a scripted study: the expected stops, every decision, the pause that changes nothing
# ---------------------------------------------------------------------------


def test_promotion_picks_exactly_the_non_dominated(scripted):
    study = scripted.study
    got = {t.number: (t.state, stopped_at(rung_records(t)),
                      (rung_records(t)[-1].dominated_by if t.state == TS.PRUNED else None))
           for t in study.trials}
    assert got == EXPECTED
    assert [len(rung_records(t)) for t in study.trials] == [3, 2, 3, 1, 3, 1, 2, 3]
    assert study.trials[6].user_attrs["duplicate_of"] == 1 and study.trials[7].user_attrs["duplicate_of"] == 2
    assert study.trials[6].user_attrs["prune_reason"] == study.trials[1].user_attrs["prune_reason"]
    assert study.trials[1].user_attrs["prune_reason"] == (
        "stopped at rung 2/3 (2 epochs): trial 0 dominates it (0.500 vs 0.400 accuracy, 100 vs 50 img/s)")
    assert study.trials[3].user_attrs["prune_reason"].startswith("stopped at rung 1/3 (1 epoch): trial 1 dominates")
    check_records(study, BUDGETS)
    check_in_order(study)
    check_slots(study, len(EXPECTED))
    # One event per decision, as recorded (duplicates decide nothing).
    decided = [(e.trial, e.rung, e.promoted, e.dominated_by) for e in scripted.events if isinstance(e, RungDecided)]
    recorded = [(t.number, r.rung, r.promoted, r.dominated_by) for t in study.trials[:6]
                for r in rung_records(t) if r.promoted is not None]
    assert sorted(decided) == sorted(recorded)
    assert all(e.rungs == 3 and e.epochs == BUDGETS[e.rung] for e in scripted.events if isinstance(e, RungDecided))
    assert [e.reference for e in scripted.events if isinstance(e, RungDecided) and e.trial == 0] == ["tiny-ref"] * 2
    # Stopped candidates are no results: not on the front, not in the sampler's view of the objectives.
    assert {t.number for t in study.get_trials(states=(TS.COMPLETE,))} == {0, 2, 4, 7}


def test_stop_sigmas_lets_a_candidate_inside_the_validation_noise_climb(tmp_path):
    # 32 validation images: a 0.05 gap to the reference is inside 1 combined SE (0.125), a 0.45 gap is not.
    scenario = [(SCENARIO[0][0], 100.0, (0.5, 0.5)), (SCENARIO[1][0], 50.0, (0.45, 0.45)),
                (SCENARIO[5][0], 40.0, (0.05,))]
    tail = FIDELITY.replace("[sampler]", "stop_sigmas = 1.0\n[sampler]")
    path, reports = _prepare(tmp_path, n=3, queued=[p for p, _, _ in scenario], tail=tail)
    study = run_search(load_study_config(path), reports_dir=reports, progress=False,
                       tools=Script(scenario).tools()).study
    assert [t.state for t in study.trials] == [TS.COMPLETE, TS.COMPLETE, TS.PRUNED]  # plain dominance stops 1 too
    assert study.trials[2].user_attrs["prune_reason"] == (
        "stopped at rung 1/3 (1 epoch): trial 0 dominates it beyond 1 standard error "
        "(0.500 vs 0.050 accuracy, 100 vs 40 img/s)")


def test_rule_none_lets_every_candidate_climb_to_the_top(tmp_path):
    # 5 is stopped at rung 1 by the reference under dominance; with rule "none" it climbs with rung records.
    scenario = [SCENARIO[0], (SCENARIO[5][0], 30.0, (0.05, 0.05))]
    tail = FIDELITY.replace("[sampler]", 'rule = "none"\n[sampler]')
    path, reports = _prepare(tmp_path, n=2, queued=[p for p, _, _ in scenario], tail=tail)
    study = run_search(load_study_config(path), reports_dir=reports, progress=False,
                       tools=Script(scenario).tools()).study
    assert [t.state for t in study.trials] == [TS.COMPLETE, TS.COMPLETE]
    records = rung_records(study.trials[1])
    assert [(r.rung, r.promoted, r.dominated_by) for r in records] == [(0, True, None), (1, True, None),
                                                                               (2, None, None)]
    assert dominates(_point(rung_records(study.trials[0])[0]), _point(records[0]))  # dominated, yet it climbed


def test_continue_mode_ends_with_the_weights_of_a_single_fidelity_run(scripted):
    assert not scripted.single_cfg.fidelity.multi
    single = scripted.single.trials
    assert [t.state for t in single] == [TS.COMPLETE] * 3 and all("rungs" not in t.user_attrs for t in single)
    for mine, theirs in zip(scripted.climbers, range(len(scripted.climbers))):
        a, b = scripted.weights[mine], scripted.single_weights[theirs]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), mine
        t, s = scripted.study.trials[mine], single[theirs]
        assert t.params == s.params and t.values[0] == s.values[0]  # the real top-rung accuracy
        assert t.user_attrs["train_images_per_s"] > 0 and t.user_attrs["final_loss"] == s.user_attrs["final_loss"]
    # The paused nets went through disk between rungs, one slot each, and none is left behind: at every
    # rung's evaluation (before the decision) the folder holds exactly the net of that trial at that rung.
    scored = [(trial, rung) for trial, rung, _ in scripted.on_disk]
    assert scored == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (4, 0), (4, 1), (5, 0)]  # no duplicate
    assert all(files == {f"slot_{trial:04d}.pt": {"trial": trial, "rung": rung}}
               for trial, rung, files in scripted.on_disk), scripted.on_disk
    assert list(scripted.paths.rung_checkpoints.glob("*")) == []


# ---------------------------------------------------------------------------
# resume mid-rung, retrain mode, a retry of a stopped trial
# ---------------------------------------------------------------------------


def test_resume_mid_rung_redoes_nothing_decided(tmp_path, scripted):
    entries = [SCENARIO[0], SCENARIO[4]]
    path, reports = _prepare(tmp_path, n=2, queued=[p for p, _, _ in entries])
    paths = StudyPaths.of("tiny", reports)
    calls: list[tuple[str, int | None, int | None]] = []

    def counted(model, data, cfg, device, *a, desc="", resume=None, stop_epoch=None, **kw):
        calls.append((desc, None if resume is None else resume.epoch, stop_epoch))  # a whole run would show too
        if desc == "trial 1 rung 2/3" and stop_after_rung_0:
            raise KeyboardInterrupt  # Ctrl-C while trial 1 trains its second rung
        return train(model, data, cfg, device, *a, desc=desc, resume=resume, stop_epoch=stop_epoch, **kw)

    script = Script(entries, train=counted)
    stop_after_rung_0 = True
    first = run_search(load_study_config(path), reports_dir=reports, progress=False, tools=script.tools())
    assert first.interrupted
    assert calls == [("trial 0 rung 1/3", None, 1), ("trial 0 rung 2/3", 1, 2), ("trial 0 rung 3/3", 2, 4),
                     ("trial 1 rung 1/3", None, 1), ("trial 1 rung 2/3", 1, 2)]
    t0, t1 = first.study.trials
    assert t0.state == TS.COMPLETE and t1.state == TS.FAIL and t1.user_attrs["fail_reason"] == "interrupted: Ctrl-C"
    assert lifecycle.outcome(t1) == Outcome.INTERRUPTED
    assert [r.promoted for r in rung_records(t1)] == [True]
    kept = load_checkpoint(paths.rung_checkpoint(1))  # the paused net stays for the retry
    assert kept.train_state["epoch"] == 1 and kept.meta == {"trial": 1, "rung": 0}
    before = {t.number: rung_records(t) for t in first.study.trials}

    calls.clear()
    stop_after_rung_0 = False
    second = run_search(load_study_config(path), reports_dir=reports, progress=False, tools=script.tools())
    assert not second.interrupted
    trials = second.study.trials
    assert len(trials) == 3 and [t.user_attrs.get("retry_of") for t in trials] == [None, None, 1]
    retry = trials[2]
    assert retry.state == TS.COMPLETE and retry.params == t1.params
    # Rung 0 is taken over as decided; training continues from the paused net at epoch 1 (and never a whole run).
    assert calls == [("trial 2 rung 2/3", 1, 2), ("trial 2 rung 3/3", 2, 4)]
    assert rung_records(trials[0]) == before[0] and rung_records(trials[1]) == before[1]
    assert rung_records(retry)[0] == before[1][0] and [r.rung for r in rung_records(retry)] == [0, 1, 2]
    # The same net as the uninterrupted scripted study's (same architecture, seed and data).
    w = script.weights[2]
    assert all(torch.equal(w[k], scripted.weights[4][k]) for k in w)
    assert retry.values[0] == scripted.study.trials[4].values[0]
    check_records(second.study, BUDGETS)
    check_in_order(second.study)
    check_slots(second.study, 2)
    assert list(paths.rung_checkpoints.glob("*")) == []
    calls.clear()
    third = run_search(load_study_config(path), reports_dir=reports, progress=False, tools=script.tools())
    assert calls == [] and len(third.study.trials) == 3


def test_retrain_mode_trains_each_rung_afresh(tmp_path):
    entries = [SCENARIO[0], SCENARIO[1]]
    path, reports = _prepare(tmp_path, n=2, queued=[p for p, _, _ in entries],
                             tail=FIDELITY.replace('mode = "continue"', 'mode = "retrain"'))
    calls: list[tuple[int, Any, Any]] = []

    def counted(model, data, cfg, device, *a, resume=None, stop_epoch=None, **kw):
        calls.append((cfg.epochs, resume, stop_epoch))
        return train(model, data, cfg, device, *a, resume=resume, stop_epoch=stop_epoch, **kw)

    res = run_search(load_study_config(path), reports_dir=reports, progress=False,
                     tools=Script(entries, train=counted).tools())
    # The reference trains the full budget only; the candidate, judged against nothing at the lower rungs, climbs.
    assert calls == [(4, None, None), (1, None, None), (2, None, None), (4, None, None)]
    assert [t.state for t in res.study.trials] == [TS.COMPLETE, TS.COMPLETE]
    assert [r.rung for r in rung_records(res.study.trials[0])] == [2]
    check_records(res.study, BUDGETS)
    assert not StudyPaths.of("tiny", reports).rung_checkpoints.exists() or \
        list(StudyPaths.of("tiny", reports).rung_checkpoints.glob("*")) == []


class Trained(Exception):
    pass


def _no_training(*a, **kw):
    raise Trained


class _Calls:
    """A trial runner for the worker loop (:func:`repvgg_nas.search.loop.run_trial`): calls ``run(trial)`` and
    keeps what it is told to release."""

    def __init__(self, run: Callable[[optuna.Trial], Any]) -> None:
        self.run, self.released = run, []

    def __call__(self, trial: optuna.Trial) -> Any:
        return self.run(trial)

    def release(self, trial: optuna.Trial, how: Outcome) -> None:
        self.released.append(how)


def test_retry_of_a_trial_stopped_before_it_said_so_is_stopped_untrained(tmp_path):
    """Killed between recording its stop and raising it: the retry ends stopped, and trains nothing."""
    from repvgg_nas.search.loop import run_trial

    cfg = load_study_config(write_tiny_study(tmp_path, epochs=EPOCHS, tail=FIDELITY))
    study = optuna.create_study(directions=["maximize", "maximize"])
    dist = {"a": optuna.distributions.CategoricalDistribution([0.125, 0.25])}
    study.add_trial(optuna.trial.create_trial(state=TS.FAIL, params={"a": 0.25}, distributions=dist, user_attrs={
        "rungs": [_rec(0, 0.6, 50.0), {**_rec(1, 0.4, 50.0, False), "dominated_by": 7}],
        "fail_reason": "interrupted: worker h:1 died", "outcome": "died"}))
    study.add_trial(optuna.trial.create_trial(state=TS.FAIL, params={"a": 0.25}, distributions=dist, user_attrs={
        "rungs": [_rec(0, 0.6, 50.0), _rec(1, 0.4, 50.0, None)]}))  # died before deciding rung 1
    spec = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=10)
    climber = Climber(cfg.fidelity, cfg.objectives.table, None, torch.device("cpu"), StudyPaths(tmp_path / "r"),
                      score=lambda net: (0.0, None), train=_no_training, init_model=init_model)

    def climb(trial: optuna.Trial) -> Any:
        trial.set_user_attr("images_per_s", 50.0)  # measured before the climb, as the trial pipeline does
        return climber.climb(trial, spec, 50.0, TrainConfig(epochs=EPOCHS), 0)

    study.enqueue_trial({"a": 0.25}, user_attrs={"retry_of": 0})
    trial = study.ask()
    runner = _Calls(climb)  # run by the worker loop, which records how it ended and tells the study
    ended = run_trial(study, trial, runner, lambda e: None)
    assert ended.state == TS.PRUNED and lifecycle.outcome(ended) == Outcome.STOPPED
    assert [r.rung for r in rung_records(ended)] == [0, 1] and ended.user_attrs["rung"] == 1
    assert ended.user_attrs["prune_reason"].startswith("stopped at rung 2/3 (2 epochs): trial 7 dominates it")
    assert runner.released == [Outcome.STOPPED]
    # An undecided record is redone, not taken over: the retry trains again from rung 1.
    study.enqueue_trial({"a": 0.25}, user_attrs={"retry_of": 1})
    trial = study.ask()
    with pytest.raises(Trained):
        climb(trial)
    assert [r.promoted for r in rung_records(trial)] == [True]
    # Killed after a stop by the time budget (its next rung needed more than a whole run's): stopped too.
    study.add_trial(optuna.trial.create_trial(state=TS.FAIL, params={"a": 0.25}, distributions=dist, user_attrs={
        "rungs": [{**_rec(0, 0.6, 50.0, False), "out_of_time": True}], "fail_reason": "interrupted: worker h:1 died", "outcome": "died"}))
    study.enqueue_trial({"a": 0.25}, user_attrs={"retry_of": 4})
    trial = study.ask()
    with pytest.raises(Stopped, match=r"stopped at rung 1/3 \(1 epoch\): rung 2 needs more than all of "
                                      r"the time budget") as e:
        climb(trial)
    assert e.value.outcome == Outcome.OUT_OF_TIME


def test_a_second_retry_never_runs_and_leaves_the_paused_net_of_the_live_retry(tmp_path):
    """Two retries of one killed trial (Optuna's heartbeat and a recovery both queued one): the slot check
    before the ask refuses the second while the first runs, so it is never asked for, never trains and never
    deletes the rung checkpoint the first is climbing from."""
    from repvgg_nas.search.events import Waiting
    from repvgg_nas.search.loop import claim_search_trial

    paths = StudyPaths.of("tiny", tmp_path / "r")
    paths.rung_checkpoints.mkdir(parents=True)
    paused = paths.rung_checkpoint(0)
    paused.write_bytes(b"paused net")
    study = optuna.create_study(directions=["maximize", "maximize"])
    died_attrs = {"fail_reason": "interrupted: worker h:1 died", "outcome": "died"}
    study.add_trial(optuna.trial.create_trial(state=TS.FAIL, user_attrs=died_attrs))
    study.add_trial(optuna.trial.create_trial(state=TS.RUNNING, user_attrs={"retry_of": 0, "admitted": True}))
    study.enqueue_trial({}, user_attrs={"retry_of": 0})
    assert claim_search_trial(study, 1) == Waiting(1, 0, 1)
    assert study.trials[2].state == TS.WAITING and len(study.trials) == 3
    assert paused.read_bytes() == b"paused net"


def test_a_killed_references_retry_climbs_though_its_architecture_was_stopped_meanwhile(tmp_path):
    """Seen with 2 workers: the reference's worker died; meanwhile the sampler drew the reference's architecture
    again, and that trial was stopped at rung 0. The reference's retry must still climb (references always do)
    and keep the rung its original decided, not turn into a stopped duplicate."""
    path, reports = _prepare(tmp_path, n=2, queued=[SCENARIO[0][0], SCENARIO[0][0]])
    cfg = load_study_config(path)
    data = load_data(cfg.data)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{reports / 'tiny' / 'study.db'}")
    decided = [_rec(0, 0.5, 100.0)]
    for state, attrs in [
        (TS.FAIL, _climbed(*decided, rung=0, fail_reason="interrupted: Ctrl-C",  # the reference, killed
                           outcome="interrupted")),
        (TS.PRUNED, _climbed({**_rec(0, 0.5, 100.0, False), "dominated_by": 9}, rung=0,  # its twin, stopped
                             prune_reason="stopped at rung 1/3 (1 epoch): trial 9 dominates it")),
    ]:
        t = study.ask()
        spec = cfg.space.sample(t, data.num_classes, data.in_channels)
        for k, v in {**attrs, "spec_hash": spec.hash, "arch": spec.summary()}.items():
            t.set_user_attr(k, v)
        study.tell(t, state=state)
    res = run_search(cfg, reports_dir=reports, progress=False, tools=Script([SCENARIO[0]]).tools())
    retry = res.study.trials[2]
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["reference"] == "tiny-ref"
    assert retry.state == TS.COMPLETE and retry.user_attrs.get("duplicate_of") is None
    assert rung_records(retry)[0] == RungRecord.from_dict(decided[0]) and len(rung_records(retry)) == 3


# ---------------------------------------------------------------------------
# several workers: PostgreSQL, and a journal file with a worker killed mid-climb
# ---------------------------------------------------------------------------


def _multi_study(folder: Path, n: int, train_size: int) -> Path:
    return write_tiny_study(folder, n=n, epochs=EPOCHS, train_size=train_size, tail=FIDELITY)


def test_postgres_three_workers_climb_to_exactly_n(postgres, tmp_path):
    url = postgres("rungs")
    study_file = _multi_study(tmp_path, n=6, train_size=64)
    r = subprocess.run(search_cmd(study_file, tmp_path / "r", "--storage", url, "--workers", "3", *HEARTBEAT),
                       env=child_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(url, "tiny")
    assert study.user_attrs["fidelity"]["budgets"] == list(BUDGETS)
    check_slots(study, 6)
    check_records(study, BUDGETS)
    check_no_known_dominator(study)
    assert all(rung_records(t) for t in _search(study) if t.state.is_finished())  # every candidate met rung 0
    assert list(StudyPaths.of("tiny", tmp_path / "r").rung_checkpoints.glob("*")) == []


def _kill_a_promoted_climber(url: str, name: str, alive, timeout: float = 240) -> dict:
    """SIGKILL the worker of a RUNNING trial that was promoted at a rung and trains the next one."""
    deadline = time.monotonic() + timeout
    study = None  # one storage, read incrementally: replaying the whole journal each poll would load the cores
    while time.monotonic() < deadline:
        assert alive(), "the search ended before a climber could be killed"
        with contextlib.suppress(Exception):  # the study may not be readable yet
            study = study or load(url, name)
            trials = study.get_trials(deepcopy=False)
            for t in trials:
                recs = rung_records(t)
                if (t.state == TS.RUNNING and recs and recs[-1].promoted is True and "train_seconds" not in
                        t.user_attrs and t.user_attrs.get("duplicate_of") is None):
                    pid = int(str(t.user_attrs["worker"]).rsplit(":", 1)[1])
                    os.kill(pid, signal.SIGKILL)
                    return {"trial": t.number, "worker": t.user_attrs["worker"], "records": recs,
                            "before": {u.number: (u.state, u.values, rung_records(u)) for u in trials
                                       if u.state.is_finished()}}
        time.sleep(0.1)
    raise AssertionError("no climber was caught training a rung above the first")


def test_killed_climber_loses_no_decided_rung(tmp_path):
    name, n = "tiny", 4
    study_file = _multi_study(tmp_path, n=n, train_size=512)
    reports = tmp_path / "r"
    url = f"journal:{reports / name / 'journal.log'}"
    pre = optuna.create_study(study_name=name, storage=make_storage(url, heartbeat_interval=None),
                              directions=["maximize", "maximize"])
    # Distinct architectures, queued (no sampled twin of a killed trial: see the test above); the
    # first is a reference, so one candidate surely climbs.
    for i, (params, _, _) in enumerate(SCENARIO[:n]):
        pre.enqueue_trial(params, user_attrs={"reference": "tiny-ref"} if i == 0 else {})
    kill, code, out = run_workers_and_kill(search_cmd(study_file, reports, "--storage", url, "--workers", "2"),
                                           child_env(tmp_path), url, name, tmp_path, killer=_kill_a_promoted_climber)
    assert code == 1 and "killed by SIGKILL" in out, out[-3000:]
    study = load(url, name)
    chains = check_slots(study, n)
    check_records(study, BUDGETS)
    check_no_known_dominator(study)
    killed = study.trials[kill["trial"]]
    assert killed.state == TS.FAIL and killed.user_attrs["fail_reason"] == f"interrupted: worker {kill['worker']} died"
    final = rung_records(killed)
    assert final[:len(kill["records"])] == kill["records"]  # what it had decided when killed is still there
    decided = [r for r in final if r.promoted is not None]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1, [t.number for t in retries]
    retry = retries[0]
    assert retry in chains[kill["trial"]] and retry.params == killed.params
    assert rung_records(retry)[:len(decided)] == decided  # taken over unchanged
    assert retry.state == TS.COMPLETE or retry.user_attrs["prune_reason"].startswith("stopped")
    if killed.user_attrs.get("reference"):
        assert retry.user_attrs["reference"] == "tiny-ref" and retry.state == TS.COMPLETE
    for number, (state, values, recs) in kill["before"].items():  # earlier results intact
        t = study.trials[number]
        assert (t.state, t.values, rung_records(t)) == (state, values, recs)
    assert list(StudyPaths.of(name, reports).rung_checkpoints.glob("*")) == []


def test_a_retry_of_a_retry_takes_over_the_chain_and_is_not_judged_by_its_own_earlier_runs(tmp_path):
    """Trial 0 climbed rung 0 and recorded (undecided) rung 1 at 0.9; its retry 1 died before climbing.
    Retry 2 must inherit rung 0 from trial 0, and its own rung 1 (0.5) must not be stopped by trial 0's 0.9."""
    cfg = load_study_config(write_tiny_study(tmp_path, epochs=EPOCHS, tail=FIDELITY))
    study = optuna.create_study(directions=["maximize", "maximize"])
    dist = {"a": optuna.distributions.CategoricalDistribution([0.125, 0.25])}
    study.add_trial(optuna.trial.create_trial(state=TS.FAIL, params={"a": 0.25}, distributions=dist, user_attrs={
        "rungs": [_rec(0, 0.6, 50.0), _rec(1, 0.9, 50.0, None)], "fail_reason": "interrupted: Ctrl-C", "outcome": "interrupted"}))
    study.add_trial(optuna.trial.create_trial(state=TS.FAIL, params={"a": 0.25}, distributions=dist, user_attrs={
        "retry_of": 0, "fail_reason": "interrupted: Ctrl-C", "outcome": "interrupted"}))
    study.enqueue_trial({"a": 0.25}, user_attrs={"retry_of": 1})
    trial = study.ask()
    spec = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=10)
    data = load_data({"train_size": 64, "val_size": 32, "resolution": 16, "seed": 0})
    climber = Climber(cfg.fidelity, cfg.objectives.table, data, torch.device("cpu"), StudyPaths(tmp_path / "r"),
                      score=lambda net: (0.5, None), train=train, init_model=init_model)
    trial.set_user_attr("images_per_s", 50.0)  # measured before the climb, as the trial pipeline does
    model, result = climber.climb(trial, spec, 50.0, TrainConfig(epochs=EPOCHS, batch_size=32), 0)
    records = rung_records(trial)
    assert [(r.rung, r.accuracy, r.promoted) for r in records] == [(0, 0.6, True), (1, 0.5, True)]
    assert result.epochs == EPOCHS  # climbed to the top


def test_quantized_runtime_promotes_on_the_quantized_accuracy(tmp_path):
    """Under onnxruntime-int8 a rung is judged on the INT8 net's accuracy; the float one is kept beside it."""
    path = write_tiny_study(tmp_path, n=2, epochs=EPOCHS, tail=FIDELITY)
    text = path.read_text().replace('[measure]\n', '[measure]\nruntime = "onnxruntime-int8"\n', 1)
    path.write_text(text)
    quantized = TrialTools(runtime_accuracy=lambda net, data, runtime, threads=None: 0.123)
    res = run_search(load_study_config(path), reports_dir=tmp_path / "r", progress=False, tools=quantized)
    climbed = [t for t in res.study.trials if rung_records(t)]
    assert climbed
    for t in climbed:
        for r in rung_records(t):
            assert r.accuracy == 0.123 and r.float_accuracy is not None and r.float_accuracy != 0.123


def test_a_study_of_an_older_trial_schema_is_refused_in_one_line(tmp_path):
    """A study written before trials stored their role and outcome cannot be read right: it is refused,
    naming the study, the storage, both versions and what to do."""
    cfg = load_study_config(write_tiny_study(tmp_path, n=1, epochs=EPOCHS, tail=FIDELITY))
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(study_name=cfg.name, storage=storage, directions=["maximize", "maximize"])
    for k, v in cfg.to_dict().items():
        if k != "fidelity":  # what an older version stored
            old.set_user_attr(k, v)
    with pytest.raises(ConfigError, match=r"study 'tiny' in sqlite:///.*old\.db was written with trial schema "
                                          r"version 1, but .* reads version 2 only: start a new study") as e:
        open_study(cfg, storage)
    assert "\n" not in str(e.value)
    assert open_study(cfg, f"sqlite:///{tmp_path / 'new.db'}").user_attrs["schema_version"] == 2


# ---------------------------------------------------------------------------
# the time budget: no rung started that cannot end in time, no trial after it
# ---------------------------------------------------------------------------


def test_next_rung_seconds_prices_the_next_rung_at_the_rate_paid_so_far():
    budgets = (1, 2, 6)
    assert rungs_mod.next_rung_seconds(budgets, 0, 10.0, "continue") == 10.0  # 1 more epoch at 10 s
    assert rungs_mod.next_rung_seconds(budgets, 1, 20.0, "continue") == 40.0  # 4 more epochs
    # A retry whose paused net is missing starts afresh; one whose net is a rung ahead has nothing to train.
    assert rungs_mod.next_rung_seconds(budgets, 0, 10.0, "continue", trained=0) == 20.0
    assert rungs_mod.next_rung_seconds(budgets, 0, 10.0, "continue", trained=2) == 0.0
    assert rungs_mod.next_rung_seconds(budgets, 0, 10.0, "retrain") == 20.0  # a fresh run of 2 epochs
    assert rungs_mod.next_rung_seconds(budgets, 1, 30.0, "retrain") == 60.0  # 3 epochs paid, 6 to train


def test_timeout_key_is_validated_and_shown_in_the_plan(tmp_path, capsys):
    cfg = load_study_config(write_tiny_study(tmp_path / "ok", epochs=9, head="timeout = 90\n", tail=FIDELITY))
    assert cfg.timeout == 90.0
    assert load_study_config(write_tiny_study(tmp_path / "none", epochs=9)).timeout is None
    for name, value, message in [("zero", "0", r"timeout: 0\.0 is out of range; must be >= 1\.0"),
                                 ("text", '"20m"', r"timeout: must be a number"),
                                 ("nan", "nan", r"timeout: must be a finite number")]:
        with pytest.raises(ConfigError, match=message) as e:
            load_study_config(write_tiny_study(tmp_path / name, epochs=9, head=f"timeout = {value}\n"))
        assert str(tmp_path / name / "tiny.toml") in str(e.value)
    study = tmp_path / "ok" / "tiny.toml"
    assert main(["--study", str(study), "--reports-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "time budget 90 s: no trial starts after it, and a candidate climbs only to a rung it can finish" in out
    assert main(["--study", str(study), "--reports-dir", str(tmp_path), "--dry-run", "--timeout", "600"]) == 0
    assert "time budget 10 min" in capsys.readouterr().out
    assert main(["--study", str(study), "--reports-dir", str(tmp_path), "--dry-run", "--timeout", "0"]) == 0
    assert "time budget" not in capsys.readouterr().out  # 0: none
    with pytest.raises(ConfigError, match=r"--timeout must be a number of seconds >= 0 \(0: no time budget\)"):
        main(["--study", str(study), "--reports-dir", str(tmp_path), "--dry-run", "--timeout", "-5"])


def _late_clock(mp: pytest.MonkeyPatch, ahead: float) -> None:
    """The rung layer's clock runs ``ahead`` seconds ahead of the run's, so the deadline looks that much nearer."""
    mp.setattr(rungs_mod, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + ahead))


def _slow_training(calls: list, seconds: dict[str, float | None]) -> Callable[..., Any]:
    """The real training, counted in ``calls`` as (desc, epoch resumed from, stop epoch), each run said to take
    ``seconds["s"]`` (None: as long as it took): the rate the next rung is priced at."""
    def slow(model, data, cfg, device, *a, desc="", resume=None, stop_epoch=None, **kw):
        calls.append((desc, None if resume is None else resume.epoch, stop_epoch))
        result = train(model, data, cfg, device, *a, desc=desc, resume=resume, stop_epoch=stop_epoch, **kw)
        return result if seconds["s"] is None else result._replace(seconds=seconds["s"])
    return slow


def test_a_candidate_whose_next_rung_would_end_late_pauses_and_the_next_run_continues_it(
        tmp_path, monkeypatch, scripted, capsys):
    entries = [SCENARIO[0], SCENARIO[2]]  # a reference, and a candidate nothing dominates (it ties the reference)
    path, reports = _prepare(tmp_path, n=2, queued=[p for p, _, _ in entries])
    paths = StudyPaths.of("tiny", reports)
    calls: list[tuple[str, int | None, int | None]] = []
    # Every rung's training (the reference's too) is said to take 3000 s: the next rung is priced at 3000 s more,
    # longer than the budget left, shorter than a whole run's budget.
    seconds: dict[str, float | None] = {"s": 3000.0}
    script = Script(entries, train=_slow_training(calls, seconds))
    _late_clock(monkeypatch, 1000.0)
    events: list[Any] = []
    res = run_search(load_study_config(path), reports_dir=reports, progress=False, timeout=3600,
                     on_event=events.append, tools=script.tools())
    ref, cand = res.study.trials
    assert ref.state == TS.COMPLETE and len(rung_records(ref)) == 3  # never paused: references always climb
    # Promoted (nothing dominates it), but its next rung is left to the next run: a run cut short, not a result.
    assert cand.state == TS.FAIL and lifecycle.cut_short(cand) and lifecycle.paused(cand)
    assert stopped_at(rung_records(cand)) is None and len(rung_records(cand)) == 1
    record = rung_records(cand)[0]
    assert record.out_of_time is True and record.dominated_by is None and record.promoted is True
    assert record.train_seconds == 3000.0  # the price of its next rung was read from the seconds it paid
    reason = cand.user_attrs["fail_reason"]
    assert re.fullmatch(r"paused at rung 1/3 \(1 epoch\): the time budget ends in \d+ s and rung 2 "
                        r"needs about 30\d\d s more; the next run continues its climb", reason), reason
    assert trial_line(cand).startswith("trial 1: paused at rung 1/3 (1 epoch): the time budget ends in")
    assert [(e.trial, e.rung, e.promoted, e.paused) for e in events if isinstance(e, RungDecided)] == [
        (0, 0, True, False), (0, 1, True, False), (1, 0, True, True)]
    # Its slot stays in flight: the study is not finished, and the budget's end says one candidate waits.
    state = slot_state(res.study.trials, 2)
    assert (state.done, state.held, state.finished) == (1, 2, False)
    assert [e for e in events if isinstance(e, TimeUp)] == [TimeUp(3600, 1, 2, 1)]
    assert paused_by_time(res.study.trials) == [1]
    kept = load_checkpoint(paths.rung_checkpoint(1))  # the paused net stays for the next run
    assert kept.train_state["epoch"] == 1 and kept.meta == {"trial": 1, "rung": 0}
    frame = rungs_frame(res.study)
    row = frame[frame["number"] == 1].iloc[0]
    assert bool(row["out_of_time"]) and not bool(row["stopped"])
    assert row["final_state"] == "paused at rung 1/3 (1 epoch, out of time)"
    assert not frame[frame["number"] == 0]["out_of_time"].any()
    assert "1 climbed to the top and 1 was paused by the time budget (the next run continues it)" in rungs_caption(
        frame, BUDGETS)
    status = status_frame(report_trials_frame(res.study)).set_index("state")
    assert status.loc["FAIL", "reasons"] == "paused by the time budget"
    Console(progress=False)(TimeUp(900, 3, 40, 2))
    assert ("time budget of 15 min spent: 3 of 40 trials finished, 2 candidates paused mid-climb; run the same "
            "command again to continue them and search for another 15 min") in capsys.readouterr().err
    check_records(res.study, BUDGETS)
    check_in_order(res.study)

    # A next run whose budget is again too short for rung 2: the retry pauses at once, untrained.
    calls.clear()
    again = run_search(load_study_config(path), reports_dir=reports, progress=False, timeout=3600,
                       tools=script.tools())
    trials = again.study.trials
    assert [t.user_attrs.get("retry_of") for t in trials] == [None, None, 1] and calls == []
    assert lifecycle.paused(trials[2]) and trials[2].user_attrs["fail_reason"].startswith("paused at rung 1/3")
    assert paused_by_time(trials) == [2] and load_checkpoint(paths.rung_checkpoint(1)).meta == kept.meta

    # A run with time for it: the candidate climbs on from its paused net; rung 1 is neither trained nor judged again.
    seconds["s"] = None
    calls.clear()
    done = run_search(load_study_config(path), reports_dir=reports, progress=False, timeout=0, tools=script.tools())
    trials = done.study.trials
    assert len(trials) == 4 and trials[3].user_attrs.get("retry_of") == 2 and trials[3].state == TS.COMPLETE
    assert calls == [("trial 3 rung 2/3", 1, 2), ("trial 3 rung 3/3", 2, 4)]
    assert rung_records(trials[3])[0] == record and [r.rung for r in rung_records(trials[3])] == [0, 1, 2]
    # The very net of an uninterrupted climb of that architecture (same seed and data).
    assert all(torch.equal(script.weights[3][k], scripted.weights[2][k]) for k in script.weights[3])
    state = slot_state(trials, 2)
    assert (state.done, state.finished) == (2, True) and paused_by_time(trials) == []
    assert list(paths.rung_checkpoints.glob("*")) == []
    frame = rungs_frame(done.study)
    assert set(frame["number"]) == {0, 3} and set(frame["final_state"]) == {"climbed to top"}
    check_records(done.study, BUDGETS)
    check_slots(done.study, 2)


def test_a_rung_longer_than_a_whole_runs_budget_stops_the_candidate_instead_of_pausing_it_for_ever(
        tmp_path, monkeypatch):
    entries = [SCENARIO[0], SCENARIO[2], SCENARIO[4]]  # a reference, then two candidates nothing dominates
    path, reports = _prepare(tmp_path, n=2, queued=[p for p, _, _ in entries[:2]])
    paths = StudyPaths.of("tiny", reports)
    calls: list[tuple[str, int | None, int | None]] = []
    # Every rung's training is said to take 1e6 s: the next rung needs as long again.
    script = Script(entries, train=_slow_training(calls, {"s": 1e6}))
    with monkeypatch.context() as mp:  # a run whose whole budget holds that rung, but whose time left does not
        _late_clock(mp, 1.5e6)
        first = run_search(load_study_config(path), reports_dir=reports, progress=False, timeout=2e6,
                           tools=script.tools())
    assert paused_by_time(first.study.trials) == [1]

    # Its next rung needs more than the whole budget of this run: it would pause in every run, so it stops.
    events: list[Any] = []
    calls.clear()
    second = run_search(load_study_config(path), reports_dir=reports, progress=False, timeout=3600,
                        on_event=events.append, tools=script.tools())
    retry = second.study.trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.state == TS.PRUNED and calls == []  # untrained
    assert lifecycle.outcome(retry) == Outcome.OUT_OF_TIME
    last = rung_records(retry)[-1]
    assert (last.promoted, last.out_of_time, last.dominated_by) == (False, True, None)
    assert re.fullmatch(r"stopped at rung 1/3 \(1 epoch\): rung 2 needs about 1000000 s, more than all of the time "
                        r"budget \(3600 s\); a larger --timeout, or --timeout 0, lets such a candidate climb",
                        retry.user_attrs["prune_reason"]), retry.user_attrs["prune_reason"]
    assert slot_state(second.study.trials, 2).finished and paused_by_time(second.study.trials) == []
    assert not any(isinstance(e, TimeUp) for e in events)
    assert list(paths.rung_checkpoints.glob("*")) == []
    frame = rungs_frame(second.study)
    assert frame[frame["number"] == 2]["final_state"].iloc[0] == "stopped at rung 1/3 (1 epoch, out of time)"
    status = status_frame(report_trials_frame(second.study)).set_index("state")
    assert status.loc["PRUNED", "reasons"] == "stopped at rung 1/3 (1 epoch): out of time"

    # The same for a candidate at the end of its own rung: stopped there, not paused.
    first.study.enqueue_trial(entries[2][0])
    third = run_search(load_study_config(path), n_trials=3, reports_dir=reports, progress=False, timeout=3600,
                       on_event=events.append, tools=script.tools())
    new = third.study.trials[3]
    assert new.state == TS.PRUNED and stopped_at(rung_records(new)) == 0 and rung_records(new)[0].out_of_time
    assert lifecycle.outcome(new) == Outcome.OUT_OF_TIME
    assert [(e.trial, e.promoted, e.paused) for e in events if isinstance(e, RungDecided)] == [(3, False, False)]
    check_records(third.study, BUDGETS)
    check_in_order(third.study)
    check_slots(third.study, 3)


def test_a_spent_time_budget_starts_no_trial_and_says_so(tmp_path, capsys):
    path = write_tiny_study(tmp_path, n=2, epochs=EPOCHS, tail=FIDELITY)
    events: list[Any] = []
    res = run_search(load_study_config(path), reports_dir=tmp_path, progress=False, timeout=1e-9,
                     on_event=events.append)
    assert res.study.trials == []
    assert [e for e in events if isinstance(e, TimeUp)] == [TimeUp(1e-9, 0, 2)]
    assert main(["--study", str(path), "--reports-dir", str(tmp_path), "--timeout", "0.000001", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "time budget of 0 s spent: 0 of 2 trials finished; run the same command again" in err


def test_ctrl_c_and_pauses_end_their_trial_quietly_and_real_failures_keep_a_traceback():
    """The loop tells the study itself, so Optuna logs nothing for any of them: a trial the time budget or
    Ctrl-C cut short ends FAIL with its structured outcome and reason (the run says so in one line), and a
    real failure ends FAIL as failed with one warning, traceback included, on the search's logger."""
    import logging

    from repvgg_nas.search.loop import run_trial

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("optuna", "repvgg_nas"):
        logging.getLogger(name).addHandler(handler)
    study = optuna.create_study()
    try:
        def pause(trial):  # the pipeline only raises: the loop records the outcome and the reason
            raise TimeBudgetPaused("paused at rung 1/3")
        runner = _Calls(pause)
        assert lifecycle.outcome(run_trial(study, study.ask(), runner, lambda e: None)) == Outcome.PAUSED

        def ctrl_c(trial):
            raise KeyboardInterrupt
        runner.run = ctrl_c
        with pytest.raises(KeyboardInterrupt):
            run_trial(study, study.ask(), runner, lambda e: None)

        def broken(trial):
            raise ValueError("boom")
        runner.run = broken
        failed = run_trial(study, study.ask(), runner, lambda e: None)
    finally:
        for name in ("optuna", "repvgg_nas"):
            logging.getLogger(name).removeHandler(handler)
    assert [lifecycle.outcome(t) for t in study.trials] == [Outcome.PAUSED, Outcome.INTERRUPTED, Outcome.FAILED]
    assert runner.released == [Outcome.PAUSED, Outcome.INTERRUPTED, Outcome.FAILED]  # released knowing how each ended
    assert all(t.state == TS.FAIL for t in study.trials)
    assert study.trials[0].user_attrs["fail_reason"] == "paused at rung 1/3"  # its own words
    assert study.trials[1].user_attrs["fail_reason"] == "interrupted: Ctrl-C"
    assert failed.state == TS.FAIL and failed.user_attrs["fail_reason"] == "ValueError: boom"
    warned = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].getMessage().startswith("Trial 2 failed")
    assert warned[0].exc_info and isinstance(warned[0].exc_info[1], ValueError)
