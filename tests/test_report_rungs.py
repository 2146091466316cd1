"""The multi-fidelity report: the rung frame (who was stopped where, by whom), the hypervolume over wall
time, and the page showing the rung figure only for a multi-fidelity study."""

from __future__ import annotations

import datetime as dt
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from repvgg_nas.report import (
    CLIMBED, collect_report_data, elapsed_seconds, hypervolume_2d, hypervolume_figure, hypervolume_frame,
    hypervolume_time_frame, render_html, report_trials_frame, rung_counts, rungs_caption, rungs_figure, rungs_frame,
    status_frame, study_budgets, write_report,
)
from repvgg_nas.report.rungs import RUNG_COLUMNS

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTS = {"depth3": IntDistribution(1, 3), "a": CategoricalDistribution([0.25, 0.5])}
BUDGETS = [1, 3, 9]
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _rungs(points: list[tuple[float, float]], thr: float, stopped_by: int | None = None,
           top: bool = False) -> list[dict[str, Any]]:
    """Rung records as the search writes them: ``points`` are (accuracy, train_seconds), lowest rung first."""
    out = []
    for k, (acc, secs) in enumerate(points):
        last = k == len(points) - 1
        promoted = None if (last and top) else (False if (last and stopped_by is not None) else True)
        out.append({"rung": k, "epochs": BUDGETS[k], "accuracy": acc, "images_per_s": thr, "train_seconds": secs,
                    "promoted": promoted, "dominated_by": stopped_by if promoted is False else None})
    return out


def _add(study: optuna.Study, acc: float | None, thr: float | None, start: float, end: float | None, *,
         state: TrialState = TrialState.COMPLETE, depth3: int = 1, a: float = 0.25, **ua: Any) -> int:
    """Add one trial started ``start`` s and finished ``end`` s after :data:`T0` (None: still running)."""
    depths = [1, 1, 1, depth3, 1]
    attrs = {"spec": {"depths": depths, "groups": [1] * sum(depths)}, "arch": f"depths={depths}",
             "arch_a": a, "arch_b": 0.5, "arch_groupwise": "none", "arch_g": 2, "params": 1_000_000 * depth3,
             "macs": 2_000_000 * depth3, "latency_ms": 1.0, **ua}
    t = optuna.trial.create_trial(
        state=state, values=None if acc is None else [acc, thr], params={"depth3": depth3, "a": a},
        distributions=DISTS, user_attrs=attrs)
    t.datetime_start = T0 + dt.timedelta(seconds=start)
    t.datetime_complete = None if end is None else T0 + dt.timedelta(seconds=end)
    study.add_trial(t)
    return len(study.trials) - 1


@pytest.fixture
def multi() -> optuna.Study:
    """Budgets 1/3/9 epochs. 0 (reference), 1 and 5 climb to the top; 2 is stopped at rung 1 by 1,
    3 at rung 2 by 0; 4 duplicates 1 (copied attrs); 6 is still climbing. Completion order: 0, 5, 1, 4."""
    s = optuna.create_study(directions=["maximize", "maximize"], study_name="multi")
    s.set_user_attr("fidelity", {"rungs": 3, "reduction_factor": 3, "mode": "continue", "budgets": BUDGETS})
    climb1 = _rungs([(0.40, 1.0), (0.55, 3.0), (0.70, 9.0)], 150.0, top=True)
    _add(s, 0.60, 100.0, 0, 10, reference="RepVGG-A0", rung=2,
         rungs=_rungs([(0.35, 1.0), (0.50, 3.0), (0.60, 9.0)], 100.0, top=True))
    _add(s, 0.70, 150.0, 2, 12, depth3=2, rung=2, rungs=climb1)
    _add(s, None, None, 4, 6, state=TrialState.PRUNED, depth3=3, rung=0,
         rungs=_rungs([(0.30, 1.0)], 50.0, stopped_by=1),
         prune_reason="stopped at rung 1/3 (1 epoch): trial 1 dominates it")
    _add(s, None, None, 5, 9, state=TrialState.PRUNED, depth3=2, a=0.5, rung=1,
         rungs=_rungs([(0.36, 1.0), (0.45, 3.0)], 90.0, stopped_by=0),
         prune_reason="stopped at rung 2/3 (3 epochs): trial 0 dominates it")
    _add(s, 0.70, 150.0, 12.5, 13.5, depth3=2, rung=2, rungs=climb1, duplicate_of=1)
    _add(s, 0.65, 300.0, 7, 11, a=0.5, rung=2, rungs=_rungs([(0.38, 1.0), (0.50, 3.0), (0.65, 9.0)], 300.0, top=True))
    _add(s, None, None, 11, None, state=TrialState.RUNNING, depth3=3, a=0.5, rung=0,
         rungs=_rungs([(0.50, 1.0)], 400.0))
    return s


# ---------------------------------------------------------------------------
# the rung frame
# ---------------------------------------------------------------------------


def test_one_row_per_candidate_and_rung_duplicates_left_out(multi):
    f = rungs_frame(multi)
    assert list(f.columns) == list(RUNG_COLUMNS)
    assert f.groupby("number")["rung"].apply(list).to_dict() == {
        0: [0, 1, 2], 1: [0, 1, 2], 2: [0], 3: [0, 1], 5: [0, 1, 2], 6: [0]}  # 4 is 1's duplicate
    assert f["epochs"].tolist() == [BUDGETS[k] for k in f["rung"]]
    row = f[(f["number"] == 1) & (f["rung"] == 1)].iloc[0]
    assert (row["accuracy"], row["throughput"], row["train_seconds"]) == (0.55, 150.0, 3.0)
    assert f.loc[f["number"] == 0, "reference"].tolist() == ["RepVGG-A0"] * 3


def test_stopped_flags_name_the_dominating_trial_and_the_final_state(multi):
    f = rungs_frame(multi)
    stopped = f[f["stopped"]]
    assert list(zip(stopped["number"], stopped["rung"], stopped["dominated_by"])) == [(2, 0, 1), (3, 1, 0)]
    assert f.loc[~f["stopped"], "dominated_by"].isna().all()
    assert f.loc[f["number"] == 3, "promoted"].tolist() == [True, False]
    assert f.loc[f["number"] == 1, "promoted"].tolist() == [True, True, None]
    final = f.drop_duplicates("number").set_index("number")["final_state"].to_dict()
    assert final == {0: CLIMBED, 1: CLIMBED, 2: "stopped at rung 1/3 (1 epoch)",
                     3: "stopped at rung 2/3 (3 epochs)", 5: CLIMBED, 6: "running after rung 1/3"}


def test_counts_and_caption_name_the_budgets_and_the_stops(multi):
    f = rungs_frame(multi)
    counts = rung_counts(f, study_budgets(multi))
    assert counts.to_dict("list") == {"rung": [0, 1, 2], "epochs": BUDGETS, "reached": [6, 4, 3],
                                      "stopped": [1, 1, 0]}
    assert rungs_caption(f, BUDGETS) == (
        "Rungs train for 1, 3 and 9 epochs; of 6 candidates, 1 stopped at rung 1 (1 epoch), 1 at rung 2 "
        "(3 epochs), 3 climbed to the top and 1 is still climbing or failed.")


def test_figure_marks_stopped_points_and_names_who_stopped_them(multi):
    fig = rungs_figure(rungs_frame(multi), BUDGETS)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["stopped at rung 1"].customdata) == [2]
    assert list(by_name["stopped at rung 2"].customdata) == [3]
    assert by_name["stopped at rung 1"].marker.symbol == "x"
    assert "trial 1 dominates it" in by_name["stopped at rung 1"].hovertext[0]
    assert sorted(by_name["rung 3: 9 epochs (full budget)"].customdata) == [0, 1, 5]
    assert fig.layout.xaxis.type == "linear"  # 50..400 img/s: less than a decade


def test_a_retried_trial_is_drawn_once_and_single_fidelity_has_no_rungs():
    s = optuna.create_study(directions=["maximize", "maximize"])
    s.set_user_attr("fidelity", {"rungs": 2, "reduction_factor": 3, "mode": "continue", "budgets": [1, 3]})
    killed = _add(s, None, None, 0, 2, state=TrialState.FAIL, rungs=_rungs([(0.4, 1.0)], 100.0),
                  fail_reason="interrupted: worker died")
    _add(s, None, None, 3, 5, state=TrialState.PRUNED, retry_of=killed, surplus=False,
         rungs=_rungs([(0.4, 1.0)], 100.0, stopped_by=7))
    _add(s, 0.5, 80.0, 0, 4, repeat_of=0, rungs=_rungs([(0.3, 1.0), (0.5, 3.0)], 80.0, top=True))  # never climbs
    f = rungs_frame(s)
    assert f["number"].tolist() == [1] and f["final_state"].tolist() == ["stopped at rung 1/2 (1 epoch)"]

    single = optuna.create_study(directions=["maximize", "maximize"])
    single.set_user_attr("fidelity", {"rungs": 1, "reduction_factor": 3, "mode": "continue", "budgets": [9]})
    _add(single, 0.6, 100.0, 0, 1)
    assert study_budgets(single) == ()
    empty = rungs_frame(single)
    assert empty.empty and list(empty.columns) == list(RUNG_COLUMNS)


def test_status_counts_ends_by_outcome_and_rung_records_never_by_the_reason_text():
    """The status table groups rung stops by their rung and pauses as one kind, read from the stored outcome and
    rung records: reasons worded any way at all (here none starts with what it is) are only shown."""
    s = optuna.create_study(directions=["maximize", "maximize"])
    s.set_user_attr("fidelity", {"rungs": 3, "reduction_factor": 3, "mode": "continue", "budgets": BUDGETS})
    for by in (7, 8):  # stopped at rung 2 by two different trials: one kind
        _add(s, None, None, 0, 1, state=TrialState.PRUNED, outcome="stopped", prune_reason=f"trial {by} beat it",
             rungs=_rungs([(0.4, 1.0), (0.5, 3.0)], 100.0, stopped_by=by))
    late = _rungs([(0.4, 1.0)], 100.0, stopped_by=0)
    late[0].update(dominated_by=None, out_of_time=True)
    _add(s, None, None, 0, 1, state=TrialState.PRUNED, outcome="out_of_time", prune_reason="too slow to climb",
         rungs=late)
    for secs in (5, 9):  # paused at different rungs and seconds: one kind
        _add(s, None, None, 0, 1, state=TrialState.FAIL, outcome="paused", fail_reason=f"{secs} s left",
             rungs=_rungs([(0.4, 1.0)], 100.0))
    _add(s, None, None, 0, 1, state=TrialState.FAIL, outcome="failed", fail_reason="stopped at rung 1: diverged")
    status = status_frame(report_trials_frame(s)).set_index("state")["reasons"]
    assert status["PRUNED"] == "stopped at rung 2/3 (3 epochs) (x2); stopped at rung 1/3 (1 epoch): out of time"
    assert status["FAIL"] == "paused by the time budget (x2); stopped at rung 1: diverged"


# ---------------------------------------------------------------------------
# hypervolume over wall time
# ---------------------------------------------------------------------------


def test_elapsed_seconds_run_from_the_first_start_of_any_trial():
    s = optuna.create_study(directions=["maximize", "maximize"])
    _add(s, None, None, 0, 3, state=TrialState.FAIL)  # the clock starts here, though it failed
    _add(s, 0.5, 100.0, 3, 10.5)
    _add(s, 0.6, 50.0, 5, 8.25)  # a second worker
    trials = report_trials_frame(s)
    assert elapsed_seconds(trials).tolist() == pytest.approx([3.0, 10.5, 8.25])
    hv = hypervolume_frame(trials, (0.0, 0.0))
    assert hv["number"].tolist() == [1, 2] and hv["elapsed_s"].tolist() == pytest.approx([10.5, 8.25])
    timed = hypervolume_time_frame(trials, (0.0, 0.0))
    assert timed["number"].tolist() == [2, 1] and timed["elapsed_s"].tolist() == pytest.approx([8.25, 10.5])
    # No datetimes (a plain frame): NaN, and no wall-time rows.
    bare = trials.drop(columns=["datetime_start", "datetime_complete"])
    assert elapsed_seconds(bare).isna().all() and hypervolume_time_frame(bare, (0.0, 0.0)).empty


def test_elapsed_seconds_skip_the_idle_time_between_two_runs_of_a_study():
    s = optuna.create_study(directions=["maximize", "maximize"])
    _add(s, 0.5, 100.0, 0, 10)
    _add(s, 0.6, 50.0, 10, 15)  # run 1 ends here; the next command starts an hour later
    _add(s, None, None, 3615, 3620, state=TrialState.PRUNED)
    _add(s, 0.7, 40.0, 3620, 3630)
    _add(s, None, None, 3625, None, state=TrialState.RUNNING)  # runs on: counts to the latest completion
    _add(s, 0.4, 200.0, 3628, 3640)
    elapsed = elapsed_seconds(report_trials_frame(s))
    assert elapsed.tolist()[:4] == pytest.approx([10.0, 15.0, 20.0, 30.0])
    assert pd.isna(elapsed.iloc[4]) and elapsed.iloc[5] == pytest.approx(40.0)


def test_hypervolume_at_a_time_is_that_of_the_trials_complete_by_then(multi):
    trials = report_trials_frame(multi)
    timed = hypervolume_time_frame(trials, (0.0, 0.0))
    assert timed["number"].tolist() == [0, 5, 1, 4]  # completion order; stopped and running trials never count
    assert timed["elapsed_s"].tolist() == pytest.approx([10.0, 11.0, 12.0, 13.5])
    assert timed["elapsed_s"].is_monotonic_increasing and timed["hypervolume"].is_monotonic_increasing
    done = trials[trials["state"] == "COMPLETE"]
    ends = (done["datetime_complete"] - T0).dt.total_seconds()
    for _, row in timed.iterrows():
        by_then = done[ends <= row["elapsed_s"]]
        assert row["hypervolume"] == pytest.approx(hypervolume_2d(zip(by_then["accuracy"], by_then["throughput"])))
    # The trial-number view keeps its order and values.
    by_number = hypervolume_frame(trials, (0.0, 0.0))
    assert by_number["number"].tolist() == [0, 1, 4, 5]
    assert by_number["elapsed_s"].tolist() == pytest.approx([10.0, 12.0, 13.5, 11.0])
    assert by_number["hypervolume"].iloc[-1] == pytest.approx(timed["hypervolume"].iloc[-1])


def test_hypervolume_figure_switches_to_wall_time(multi):
    trials = report_trials_frame(multi)
    fig = hypervolume_figure(hypervolume_frame(trials), hypervolume_time_frame(trials))
    assert [t.visible for t in fig.data] == [True, True, False, False]
    assert list(fig.data[2].x) == pytest.approx([10.0, 11.0, 12.0, 13.5])  # seconds: the run is short
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["by trial", "by wall time"]
    assert len(hypervolume_figure(hypervolume_frame(trials)).data) == 2  # the old call: trial number only


# ---------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------


def test_page_shows_the_rung_figure_only_for_a_multi_fidelity_study(multi, tmp_path):
    data = collect_report_data(multi)
    assert data.budgets == (1, 3, 9)
    page = render_html(data, "multi")
    assert 'id="rungs"' in page and 'id="sec-rungs"' in page
    assert "1 stopped at rung 1 (1 epoch)" in page and "report_rungs.csv" in page
    assert "by wall time" in page
    write_report(multi, tmp_path / "multi", data=data)
    back = pd.read_csv(tmp_path / "multi" / "report_rungs.csv")
    assert len(back) == len(data.rungs) and list(back.columns) == list(RUNG_COLUMNS)
    assert (tmp_path / "multi" / "report_hypervolume_time.csv").is_file()

    single = optuna.create_study(directions=["maximize", "maximize"], study_name="single")
    for n, (acc, thr) in enumerate([(0.60, 100.0), (0.70, 150.0), (0.65, 300.0)]):
        _add(single, acc, thr, 2 * n, 2 * n + 1.5, depth3=1 + n % 3, a=(0.25, 0.5)[n % 2],
             **({"reference": "RepVGG-A0"} if n == 0 else {}))
    data = collect_report_data(single)
    assert data.budgets == () and data.rungs.empty
    page = render_html(data, "single")
    assert 'id="rungs"' not in page and "sec-rungs" not in page and "report_rungs.csv" not in page
    assert 'id="hypervolume"' in page
    write_report(single, tmp_path / "single", data=data)
    assert not (tmp_path / "single" / "report_rungs.csv").exists()
