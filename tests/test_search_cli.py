"""The search CLI's pieces: the console's budget bar, the ``--workers N`` parent, and who registers the report page."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import optuna
import pytest

from repvgg_nas.lifecycle import Outcome
from repvgg_nas.search import (
    StudyStarted, Waiting, WorkersResult, hide_url, load_study_config, open_study, plan_workers,
)
from repvgg_nas.search.console import Console, workers_ended_lines, workers_started_text
from repvgg_nas.stats import PredictionCheck

from .helpers import write_tiny_study

STARTED = StudyStarted("quick", "all", 0, 12, 12, "synthetic", "cpu", "sqlite:///reports/quick/study.db")


def test_the_budget_bar_shows_the_whole_budget_left_from_its_first_tick(capsys):
    """tqdm's own estimate divides by the rate seen so far: at the first tick it read "0/900 s [00:00<85:06:15]"."""
    console = Console(progress=True, budget=900)
    console(STARTED)
    first = capsys.readouterr().err.splitlines()[-1]
    assert first.endswith("0/900 s [00:00<15:00, 0/12 trials]"), first
    console(Waiting(running=1, done=0, target=12))  # an event moves the bar to the seconds spent
    assert str(console.bar).endswith("0/900 s [00:00<15:00, 0/12 trials]")
    console.bar.start_t -= 300  # five minutes on, with no second counted yet: a rate-based estimate has nothing
    assert str(console.bar).endswith("[05:00<10:00, 0/12 trials]")
    console.bar.start_t -= 900  # past the budget: nothing left, never a negative time
    assert str(console.bar).endswith("[20:00<00:00, 0/12 trials]")
    console.close()


def test_a_latency_table_is_off_once_its_median_ratio_is_a_quarter_off():
    assert not PredictionCheck(3, 1.25, 1.0, 1.3).drifted and not PredictionCheck(3, 0.75, 0.7, 1.0).drifted
    assert PredictionCheck(3, 1.26, 1.0, 1.3).drifted and PredictionCheck(3, 0.74, 0.7, 1.0).drifted


def test_the_storage_url_is_shown_without_its_password():
    url, shown = "postgresql://me:secret@db/x", "postgresql://me:***@db/x"
    cmd = ["python", "--storage", url, "--storage=" + url, "--data=" + url, "--x", "secret"]
    assert hide_url(cmd, url, shown) == ["python", "--storage", shown, "--storage=" + shown, "--data=" + shown,
                                         "--x", "secret"]
    assert hide_url(["-s=" + url], url, shown) == ["-s=" + url]  # only long flags are read as flag=value


@pytest.mark.parametrize("codes, interrupted, code, lines", [
    ((0, 0), False, 0, []),
    ((0, -9, 3), False, 1, ["worker 1 was killed by SIGKILL", "worker 2 exited with code 3"]),
    ((130, 0, 130), False, 130, ["worker 0 exited with code 130", "worker 2 exited with code 130"]),
    ((), True, 130, ["interrupted: workers stopped"]),
])
def test_how_the_workers_ended(codes, interrupted, code, lines):
    result = WorkersResult(codes, interrupted)
    assert result.exit_code == code
    shown = workers_ended_lines(result)
    assert [line.split(";")[0] for line in shown] == lines


def test_the_workers_parent_prepares_the_study_once_and_plans_one_command_each(tmp_path):
    """The parent creates the study and re-queues an earlier Ctrl-C'd trial before any worker starts."""
    cfg = load_study_config(write_tiny_study(tmp_path, 4))
    url = f"journal:{tmp_path / 'r' / 'tiny' / 'journal.log'}"
    study = open_study(cfg, url)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"x": 1}, distributions={"x": optuna.distributions.IntDistribution(0, 9)},
        user_attrs={"fail_reason": "interrupted: Ctrl-C", "outcome": Outcome.INTERRUPTED.value}))
    argv = ["--study", str(cfg.path), "--storage", url, "--workers", "2", "--no-progress"]
    plan = plan_workers(cfg, argv, 2, url, tmp_path / "r", "cpu", heartbeat_interval=None)
    assert [c[-2:] for c in plan.commands] == [("--worker-index", "0"), ("--worker-index", "1")]
    assert all("--workers" not in c and c[1:3] == ("-m", "repvgg_nas.search") for c in plan.commands)
    assert plan.shown_command == plan.commands[0][:-2] and plan.gpus == () and plan.storage == url
    assert len(plan.envs) == 2
    again = [t for t in open_study(cfg, url).trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(again) == 1 and again[0].user_attrs["retry_of"] == 0  # queued again, once
    assert again[0].system_attrs["fixed_params"] == {"x": 1}
    assert workers_started_text(plan).startswith(f"starting 2 workers on {url}: ")


def test_the_report_page_is_written_for_the_cli_and_only_for_who_registers_it(tmp_path):
    """Importing the report registers nothing; the search CLI registers it, so its run writes the page."""
    study = write_tiny_study(tmp_path, 1)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import repvgg_nas, repvgg_nas.report, repvgg_nas.search
        from repvgg_nas.outputs import STUDY_OUTPUTS
        assert "report" not in STUDY_OUTPUTS, list(STUDY_OUTPUTS)
        repvgg_nas.search.run_search(repvgg_nas.search.load_study_config({str(study)!r}),
                                     reports_dir={str(tmp_path / 'lib')!r}, progress=False)
        assert not Path({str(tmp_path / 'lib' / 'tiny' / 'index.html')!r}).exists()
        assert Path({str(tmp_path / 'lib' / 'tiny' / 'trials.csv')!r}).is_file()
        from repvgg_nas.search.__main__ import main
        sys.exit(main(["--study", {str(study)!r}, "--reports-dir", {str(tmp_path / 'cli')!r}, "--no-progress"]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "cli" / "tiny" / "index.html").is_file()
    assert f"report: {tmp_path / 'cli' / 'tiny' / 'index.html'}" in r.stdout
