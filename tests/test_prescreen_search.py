"""The search with a pre-screened pool and with references trained once (the pieces: test_prescreen,
test_latency, test_refcache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from repvgg_nas import ConfigError
from repvgg_nas.layout import user_cache_dir
from repvgg_nas.search import POOL_RANK, load_study_config, run_search, stored_pool
from repvgg_nas.report import register_report
from repvgg_nas.search.console import prediction_text
from repvgg_nas.stats import PredictionCheck, prediction_check

from .helpers import write_tiny_study

ROOT = Path(__file__).resolve().parents[1]
PRESCREEN = "[prescreen]\nenabled = true\nn = 200\nmin_pool_size = 4\n"


def _run(path: Path, tmp_path: Path, **kw):
    return run_search(load_study_config(path), reports_dir=tmp_path / "reports", progress=False, **kw)


def test_candidates_come_from_the_pool_and_the_pool_stays_with_the_study(tmp_path):
    register_report()  # the page and its pool CSV are checked below
    events = []
    path = write_tiny_study(tmp_path, 3, tail=PRESCREEN)
    res = _run(path, tmp_path, on_event=events.append)
    pool = stored_pool(res.study)
    assert pool is not None and len(pool) >= 4
    assert [m.throughput for m in pool.members] == sorted(m.throughput for m in pool.members)  # rank = speed
    hashes = {m.spec_hash for m in pool.members}
    for t in res.study.trials:
        assert POOL_RANK in t.params and t.user_attrs["spec_hash"] in hashes
        member = pool.members[t.params[POOL_RANK]]
        assert t.user_attrs["predicted_images_per_s"] == member.throughput
    assert list((user_cache_dir() / "latency").glob("*.json"))  # the table is kept for the next study
    out = tmp_path / "reports" / "tiny"
    import pandas as pd

    trials_csv = pd.read_csv(out / "trials.csv")  # a predicted speed sits beside the measured one, named so
    assert trials_csv["predicted_images_per_s"].notna().sum() >= 1
    check = prediction_check(res.trials)
    assert check is not None and check.nets >= 1 and check.low <= check.median <= check.high
    shown = pd.read_csv(out / "report_pool.csv")  # the report's faint cloud: what was considered
    assert len(shown) == len(pool) and shown["trained"].sum() >= 1
    assert "pre-screened pool (predicted)" in (out / "index.html").read_text()
    ready = [e for e in events if type(e).__name__ == "PoolReady"]
    assert len(ready) == 1 and ready[0].made is not None and ready[0].made.scored >= 1
    # A resumed run draws from the same pool (not a new one), and may not switch the pre-screen off.
    more = run_search(load_study_config(path), n_trials=4, reports_dir=tmp_path / "reports", progress=False)
    assert stored_pool(more.study) == pool and all(POOL_RANK in t.params for t in more.study.trials)
    with pytest.raises(ConfigError, match="prescreen.enabled.*--prescreen"):
        _run(write_tiny_study(tmp_path, 3), tmp_path)


def test_the_search_says_when_the_table_is_off(tmp_path):
    cfg = load_study_config(write_tiny_study(tmp_path, 2, tail=PRESCREEN))
    fine = prediction_text(PredictionCheck(3, 1.04, 0.97, 1.1), cfg)
    assert "median 1.04" in fine and "\n" not in fine
    off = prediction_text(PredictionCheck(3, 0.5, 0.45, 0.6), cfg).splitlines()
    assert len(off) == 2 and "--latency-table --remeasure" in off[1] and f"--space {cfg.space.name}" in off[1]


def test_a_blind_search_has_no_pool(tmp_path):
    res = _run(write_tiny_study(tmp_path, 2), tmp_path)
    assert stored_pool(res.study) is None and all(POOL_RANK not in t.params for t in res.study.trials)


def test_a_named_latency_table_must_cover_the_space(tmp_path):
    path = write_tiny_study(tmp_path, 2, tail=PRESCREEN + f'latency_table = "{tmp_path / "nope.json"}"\n')
    with pytest.raises(ConfigError, match="nope.json"):
        _run(path, tmp_path)
    assert not (tmp_path / "reports" / "tiny" / "trials.csv").exists()


def _reference_study(tmp_path: Path, name: str, epochs: int = 1) -> Path:
    space = (ROOT / "search_spaces" / "a_family.toml").read_text()
    return write_tiny_study(tmp_path / name, 1, space=space, head='references = ["A0"]\n', name=name, epochs=epochs)


def test_a_reference_trains_once_across_studies(tmp_path):
    first = _run(_reference_study(tmp_path, "one"), tmp_path).study.trials[0]
    assert "reference_cached" not in first.user_attrs
    again = _run(_reference_study(tmp_path, "two"), tmp_path).study.trials[0]
    assert again.user_attrs["reference_cached"].endswith(".pt")
    assert again.values[0] == pytest.approx(first.values[0])  # the same trained net, scored again
    assert again.user_attrs["train_seconds"] == pytest.approx(first.user_attrs["train_seconds"])
    assert again.user_attrs["phase_seconds"]["train"] < 0.5 * first.user_attrs["phase_seconds"]["train"]
    longer = _run(_reference_study(tmp_path, "three", epochs=2), tmp_path).study.trials[0]
    assert "reference_cached" not in longer.user_attrs  # another budget: trained
    forced = _run(_reference_study(tmp_path, "four"), tmp_path, retrain_references=True).study.trials[0]
    assert "reference_cached" not in forced.user_attrs


def test_bad_pre_screen_input_is_one_line_and_exit_2(tmp_path, capsys):
    from repvgg_nas.cli import run_cli
    from repvgg_nas.search.__main__ import main

    path = write_tiny_study(tmp_path, 2)
    (tmp_path / "bad.json").write_text("{not json")
    argv = ["--study", str(path), "--reports-dir", str(tmp_path / "r"), "--no-progress", "--prescreen", "on",
            "--latency-table", str(tmp_path / "bad.json")]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and err[0].startswith("error:")
    assert not (tmp_path / "r" / "tiny").exists()
    assert run_cli(main, [*argv[:-4], "--prescreen", "maybe"]) == 2
    assert "on or off" in capsys.readouterr().err


def test_a_space_with_no_net_faster_than_the_slowest_reference_is_refused(tmp_path, monkeypatch):
    from repvgg_nas.measure import LatencyTable

    # Every net predicted as fast as the reference: none can extend the front.
    monkeypatch.setattr(LatencyTable, "predict_throughput", lambda self, spec: 100.0)
    space = (ROOT / "search_spaces" / "a_family.toml").read_text()
    path = write_tiny_study(tmp_path, 2, space=space, head='references = ["A0"]\n', tail=PRESCREEN)
    with pytest.raises(ConfigError, match="no net is predicted faster than the slowest reference"):
        _run(path, tmp_path)
    assert not (tmp_path / "reports" / "tiny" / "trials.csv").exists()
