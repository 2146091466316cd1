"""The HTML report: frame builders (front, dominance, hypervolume, importance), the page
(self-contained, escaped, clear when empty), the CLI, and a real headless Chromium render."""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from repvgg_nas.cli import run_cli
from repvgg_nas.report import (
    DOMINATED, FRONT, PRUNED, PRUNED_LINKS, REFERENCE_HV, REFERENCES, SEARCH_HV, collect_report_data, dominates,
    empty_message, front_table_frame, hypervolume_2d, hypervolume_frame, importance_frame, pruned_links_frame,
    render_html, report_trials_frame, scatter_points_frame, write_report,
)
from repvgg_nas.report.__main__ import main
from repvgg_nas.stats import PRIOR_SEED_STD
from repvgg_nas.search import load_study_config, run_search

from .chromium import CHROMIUM, Chromium
from .helpers import TINY_SPACE, write_tiny_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
DISTS = {"depth3": IntDistribution(1, 3), "a": CategoricalDistribution([0.25, 0.5])}


def _add(study: optuna.Study, acc: float | None, thr: float | None, *, depth3: int = 1, a: float = 0.25,
         state: TrialState = TrialState.COMPLETE, **attrs: Any) -> int:
    """Add one finished trial with the user attrs a search trial carries."""
    depths = [1, 1, 1, depth3, 1]
    groups = [2 if i and i % 2 == 0 else 1 for i in range(sum(depths))]
    ua = {
        "spec": {"depths": depths, "groups": groups}, "arch": f"depths={'-'.join(map(str, depths))}",
        "arch_a": a, "arch_b": 0.5, "arch_groupwise": "even", "arch_g": 2,
        "params": 1_000_000 * depth3, "macs": 2_000_000 * depth3, "latency_ms": 1.5, **attrs,
    }
    values = None if acc is None else [acc, thr]
    study.add_trial(optuna.trial.create_trial(
        state=state, values=values, params={"depth3": depth3, "a": a}, distributions=DISTS, user_attrs=ua))
    return len(study.trials) - 1


def _study(name: str = "synthetic") -> optuna.Study:
    return optuna.create_study(directions=["maximize", "maximize"], study_name=name)


@pytest.fixture
def known() -> optuna.Study:
    """Front {1, 2, 3, 6}; references 0 and 5 are each dominated by 1, 2 and 6; 7 failed."""
    s = _study()
    _add(s, 0.60, 100.0, reference="RepVGG-A0")          # 0: dominated by 1 and 2
    _add(s, 0.70, 150.0, depth3=2, a=0.5)               # 1: front
    _add(s, 0.65, 300.0, depth3=1)                      # 2: front
    _add(s, 0.80, 50.0, depth3=3, a=0.5)                # 3: front
    _add(s, 0.50, 40.0, depth3=3)                       # 4: dominated
    _add(s, 0.55, 120.0, reference="RepVGG-B0")         # 5: dominated by 1 and 2
    _add(s, 0.69, 200.0, parent_trial=1, pruned_ratio=0.3)  # 6: pruned from 1, front
    _add(s, None, None, state=TrialState.FAIL, fail_reason="out of memory: CUDA")  # 7
    return s


# ---------------------------------------------------------------------------
# data level
# ---------------------------------------------------------------------------


def test_hypervolume_2d_is_the_exact_dominated_area():
    assert hypervolume_2d([]) == 0.0
    assert hypervolume_2d([(0.5, 100.0)]) == pytest.approx(50.0)
    # Two boxes overlapping in [0,0.5]x[0,50]: 0.8*50 + 0.5*100 - 0.5*50.
    assert hypervolume_2d([(0.5, 100.0), (0.8, 50.0)]) == pytest.approx(65.0)
    # Dominated, duplicated and below-reference points add nothing.
    assert hypervolume_2d([(0.5, 100.0), (0.8, 50.0), (0.4, 40.0), (0.8, 50.0), (-1.0, 500.0)]) == pytest.approx(65.0)
    assert hypervolume_2d([(0.5, 100.0)], reference=(0.25, 50.0)) == pytest.approx(12.5)


def test_hypervolume_history_matches_optunas_plot():
    rng = random.Random(0)
    s = _study()
    for _ in range(30):
        _add(s, rng.random(), rng.uniform(1, 1000), depth3=rng.randint(1, 3))
    ours = hypervolume_frame(report_trials_frame(s), (0.0, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental API
        theirs = optuna.visualization.plot_hypervolume_history(s, reference_point=[0.0, 0.0]).data[0].y
    assert ours["hypervolume"].tolist() == pytest.approx(list(theirs))
    assert ours["hypervolume"].is_monotonic_increasing


def test_front_membership_and_dominance(known):
    trials = report_trials_frame(known)
    done = trials[trials["state"] == "COMPLETE"]
    assert set(done.loc[done["on_front"], "number"]) == {1, 2, 3, 6}
    # Brute force: on the front <=> dominated by no completed trial.
    for _, r in done.iterrows():
        beaten = any(dominates(o, r) for _, o in done.iterrows())
        assert r["on_front"] == (not beaten)
    assert not dominates({"accuracy": 0.5, "throughput": 9.0}, {"accuracy": 0.5, "throughput": 9.0})
    table = front_table_frame(trials).set_index("number")
    assert set(table.index) == {0, 1, 2, 3, 5, 6}
    assert table.loc[1, "dominates"] == "RepVGG-A0, RepVGG-B0"
    assert table.loc[3, "dominates"] == ""
    assert table.loc[0, "role"] == "reference" and table.loc[1, "role"] == "front"
    assert table.loc[0, "dominated_by"] == "1, 2, 6"
    assert trials.set_index("number").loc[[0, 1, 6], "kind"].tolist() == ["reference", "trial", "pruned"]


def test_hypervolume_baseline_is_the_references_front(known):
    # Default reference point: the lowest reference's mean accuracy minus its noise (one seed, no
    # validation size recorded here: only the prior seed spread).
    floor = 0.55 - 2 * PRIOR_SEED_STD
    assert hypervolume_frame(report_trials_frame(known))["reference_accuracy"].tolist() == pytest.approx([floor] * 7)
    hv = hypervolume_frame(report_trials_frame(known), (0.0, 0.0))
    assert hv["number"].tolist() == [0, 1, 2, 3, 4, 5, 6]  # completed trials only
    refs = hypervolume_2d([(0.60, 100.0), (0.55, 120.0)])
    assert hv["references_hypervolume"].tolist() == pytest.approx([refs] * 7)
    assert hv["hypervolume"].iloc[0] == pytest.approx(60.0)
    front = [(0.70, 150.0), (0.65, 300.0), (0.80, 50.0), (0.69, 200.0)]
    assert hv["hypervolume"].iloc[-1] == pytest.approx(hypervolume_2d(front))
    assert hv["front_size"].tolist() == [1, 1, 2, 3, 3, 3, 4]


def test_infeasible_trials_do_not_move_the_front_area():
    s = _study()
    _add(s, 0.5, 10.0)
    s.add_trial(optuna.trial.create_trial(values=[0.9, 90.0], params={"depth3": 1, "a": 0.25}, distributions=DISTS,
                                          system_attrs={"constraints": [1.0]}))
    hv = hypervolume_frame(report_trials_frame(s), (0.0, 0.0))
    assert hv["hypervolume"].tolist() == pytest.approx([5.0, 5.0])


def test_pruned_variants_link_to_their_parent(known):
    links = pruned_links_frame(report_trials_frame(known))
    assert links[["parent", "child"]].values.tolist() == [[1, 6]]
    row = links.iloc[0]
    assert (row["parent_accuracy"], row["parent_throughput"], row["child_throughput"]) == (0.70, 150.0, 200.0)


def test_importance_per_objective_finds_what_drives_each():
    rng = random.Random(0)
    s = _study()
    for _ in range(24):
        d, a = rng.randint(1, 3), rng.choice([0.25, 0.5])
        _add(s, 0.5 + (0.3 if a == 0.5 else 0.0) + rng.random() * 0.02, 1000 / d + rng.random() * 5, depth3=d, a=a)
    _add(s, 0.99, 9999.0, depth3=1, a=0.25, parent_trial=0, pruned_ratio=0.5)  # left out
    imp = importance_frame(s)
    assert imp.notes == []
    top = imp.frame.sort_values("importance").groupby("objective").tail(1).set_index("objective")["param"]
    assert top.to_dict() == {"accuracy": "a", "throughput": "depth3"}


def test_importance_reads_the_architecture_not_the_pool_rank():
    """A pooled study's only sampler param is the pool rank; the importance names the dimensions behind it."""
    rng = random.Random(1)
    s = _study()
    combos = [(d, a) for d in (1, 2, 3) for a in (0.25, 0.5)] * 4  # balanced: neither dimension follows the other
    for rank, (d, a) in enumerate(combos):
        ua = {"spec": {"depths": [1, 1, 1, d, 1]}, "arch_a": a, "arch_b": 0.5}
        s.add_trial(optuna.trial.create_trial(
            values=[0.5 + (0.3 if a == 0.5 else 0.0) + rng.random() * 0.02, 1000 / d + rng.random() * 5],
            params={"pool_rank": rank}, distributions={"pool_rank": optuna.distributions.IntDistribution(0, 23)},
            user_attrs=ua))
    imp = importance_frame(s)
    assert set(imp.frame["param"]) == {"a", "depth3"}  # b never varies; the rank is not a dimension
    top = imp.frame.sort_values("importance").groupby("objective").tail(1).set_index("objective")["param"]
    assert top.to_dict() == {"accuracy": "a", "throughput": "depth3"}


def test_importance_explains_why_it_is_missing():
    s = _study()
    _add(s, 0.5, 10.0)
    imp = importance_frame(s)
    assert imp.frame.empty and "at least 2 completed trials" in imp.notes[0]


def test_empty_and_failed_only_studies_get_a_message(tmp_path):
    s = _study("nothing")
    assert empty_message(report_trials_frame(s)).startswith("no trials yet")
    assert "no trials yet" in write_report(s, tmp_path / "zero").read_text()
    _add(s, None, None, state=TrialState.FAIL, fail_reason="diverged: non-finite loss")
    _add(s, None, None, state=TrialState.FAIL, fail_reason="diverged: non-finite loss")
    _add(s, None, None, state=TrialState.PRUNED, prune_reason="params 9.00M breaks max_params_m = 1")
    msg = empty_message(report_trials_frame(s))
    assert msg == ("no completed trials yet: 2 fail (diverged: non-finite loss (x2)), "
                   "1 pruned (params 9.00M breaks max_params_m = 1)")
    page = write_report(s, tmp_path).read_text()
    assert 'id="message"' in page and "2 fail (diverged: non-finite loss (x2))" in page
    assert "Plotly.newPlot" not in page  # a message, not empty axes
    assert (tmp_path / "report_status.csv").is_file()


# ---------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------


def _hostile(tmp_path: Path) -> optuna.Study:
    s = _study(f"evil{SCRIPT}")
    for k, v in {"description": SCRIPT, "space": IMG, "measure": {"device": IMG}, "references": [SCRIPT]}.items():
        s.set_user_attr(k, v)
    _add(s, 0.6, 100.0, reference=IMG, device=SCRIPT, arch=IMG)
    _add(s, 0.7, 50.0, depth3=2, a=0.5, arch=SCRIPT)
    _add(s, 0.5, 200.0, depth3=3, parent_trial=0, pruned_ratio=SCRIPT)
    _add(s, None, None, state=TrialState.FAIL, fail_reason=f"RuntimeError: {IMG}")
    return s


def test_strings_from_configs_and_trials_cannot_inject_markup(tmp_path):
    page = write_report(_hostile(tmp_path), tmp_path, storage=f"sqlite:///{SCRIPT}.db").read_text()
    for raw in (SCRIPT, IMG, "<img", "<script>alert"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as text, in our HTML and plotly's JSON
    assert "&lt;img src=x onerror=alert(2)&gt;" in page


def test_page_is_self_contained_with_plotly_embedded_once(known, tmp_path):
    page = write_report(known, tmp_path).read_text()
    assert page.count("Plotly.newPlot") == 4 and page.count("plotly.js v") == 1
    assert "<script src" not in page and "<link" not in page
    ours = _without_plotly_js(page)  # the library itself names plot.ly URLs in its strings
    for remote in ("http://", "https://", "//cdn", "url("):
        assert remote not in ours
    assert "Content-Security-Policy" in page
    for div in ("scatter", "hypervolume", "importance", "architecture", "front-table"):
        assert f'id="{div}"' in page
    assert "optuna-dashboard" in page and "optuna best-trials" in page


def _without_plotly_js(page: str) -> str:
    banner = page.index("plotly.js v")
    start, end = page.rindex("<script", 0, banner), page.index("</script>", banner)
    return page[:start] + page[end:]


def test_csv_exports_hold_the_drawn_frames(known, tmp_path):
    data = collect_report_data(known)
    write_report(known, tmp_path, data=data)
    for name, frame in data.frames().items():
        back = pd.read_csv(tmp_path / f"report_{name}.csv")
        assert list(back.columns) == list(frame.columns) and len(back) == len(frame)
    hv = pd.read_csv(tmp_path / "report_hypervolume.csv")
    assert hv["hypervolume"].tolist() == pytest.approx(data.hypervolume["hypervolume"].tolist())
    assert oct((tmp_path / "index.html").stat().st_mode & 0o044) == oct(0o044)  # readable when shared


def test_render_is_pure_and_shows_notes(known):
    data = collect_report_data(known)
    data = data._replace(notes=[f"note {SCRIPT}"])
    page = render_html(data, "known")
    assert "note &lt;script&gt;" in page and SCRIPT not in page


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def test_cli_missing_study_is_one_line_and_creates_nothing(tmp_path, capsys):
    code = run_cli(main, ["--study", "ghost", "--reports-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not exist" in err and "run the search first" in err
    assert not (tmp_path / "r").exists()
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert run_cli(main, ["--study", "ghost", "--storage", url]) == 2
    assert not (tmp_path / "other.db").exists()


def test_cli_unknown_name_in_storage_lists_what_is_there(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="real", storage=url, directions=["maximize", "maximize"])
    assert run_cli(main, ["--study", "ghost", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "no study 'ghost'" in err and "it holds: real" in err


def test_cli_failed_only_study_writes_the_page_and_prints_why(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = optuna.create_study(study_name="bad", storage=url, directions=["maximize", "maximize"])
    _add(s, None, None, state=TrialState.FAIL, fail_reason="out of memory: CUDA")
    assert run_cli(main, ["--study", "bad", "--storage", url, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "no completed trials yet: 1 fail (out of memory: CUDA)" in out
    assert "no completed trials yet" in (tmp_path / "out" / "index.html").read_text()


def test_cli_bad_importance_evaluator_is_rejected_up_front(tmp_path, capsys):
    assert run_cli(main, ["--study", "x", "--importance", "fanvoa", "--reports-dir", str(tmp_path)]) == 2
    assert "did you mean fanova" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# a real browser
# ---------------------------------------------------------------------------

ARTIFACTS = Path(os.environ.get("REPVGG_ARTIFACTS", Path(__file__).resolve().parents[1] / "reports" / "test-artifacts"))


REPORT_SPACE = TINY_SPACE + 'groupwise = {choices = ["none", "even"]}\ng = 2\n'


def itertools_chain(lists: Any) -> list:
    return [x for part in lists for x in part]


def _real_study(tmp_path: Path) -> tuple[optuna.Study, Path]:
    """A real 4-trial search whose first trial is tagged as a reference, plus added trials: a
    pruned variant, a dominated point, and a reference and a failure carrying hostile strings."""
    cfg_path = write_tiny_study(
        tmp_path, n=4, seed=1, space=REPORT_SPACE,
        head='description = "browser test ' + SCRIPT.replace('"', "'") + '"\n',
        tail='[sampler]\nname = "random"\n',
    )
    reports = tmp_path / "reports"
    (reports / "tiny").mkdir(parents=True)
    url = f"sqlite:///{reports / 'tiny' / 'study.db'}"
    pre = optuna.create_study(study_name="tiny", storage=url, directions=["maximize", "maximize"])
    pre.enqueue_trial({"depth2": 1, "depth3": 1, "a": 0.125, "b": 0.25, "groupwise": "none"},
                      user_attrs={"reference": "RepVGG-tiny"})
    res = run_search(load_study_config(cfg_path), reports_dir=reports, progress=False)
    study = res.study
    parent = next(t for t in study.trials if t.number in {int(n) for n in res.trials.loc[res.trials["on_front"], "number"]})
    keep = ("spec", "arch", "arch_a", "arch_b", "arch_groupwise", "arch_g", "params", "macs", "latency_ms")
    study.add_trial(optuna.trial.create_trial(
        values=[parent.values[0] * 0.9, parent.values[1] * 1.5], params=parent.params,
        distributions=parent.distributions,
        user_attrs={**{k: parent.user_attrs[k] for k in keep if k in parent.user_attrs},
                    "parent_trial": parent.number, "pruned_ratio": 0.3}))
    study.add_trial(optuna.trial.create_trial(  # a certainly dominated searched point
        values=[0.001, 0.1], params=parent.params, distributions=parent.distributions,
        user_attrs={k: parent.user_attrs[k] for k in keep if k in parent.user_attrs}))
    study.add_trial(optuna.trial.create_trial(
        values=[0.01, 0.5], params=parent.params, distributions=parent.distributions,
        user_attrs={"reference": IMG, "arch": SCRIPT}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": IMG}))
    return study, reports / "tiny"


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} not installed (Debian package: chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    study, out = _real_study(tmp_path)
    page = write_report(study, out, storage=f"sqlite:///{out / 'study.db'}")
    browser = Chromium()
    try:
        browser.open(page.as_uri())
        browser.wait_for("[...document.querySelectorAll('.js-plotly-plot')].length === 4 && "
                         "[...document.querySelectorAll('.js-plotly-plot')].every(g => g._fullLayout && g.querySelector('.main-svg'))")
        legend = browser.eval("[...document.querySelectorAll('#scatter .legendtext')].map(e => e.textContent)")
        assert {FRONT, DOMINATED, REFERENCES, PRUNED, PRUNED_LINKS} <= set(legend)
        # Every rendered marker (an SVG path), mapped back to its trial number per trace.
        drawn = browser.eval(
            "(() => { const gd = document.getElementById('scatter'); const out = {};"
            " [...gd.querySelectorAll('.scatterlayer .trace')].forEach((g, i) => {"
            "   out[gd.data[i].name] = [...g.querySelectorAll('.point')].map(p => gd.data[i].customdata[p.__data__.i]); });"
            " return out; })()")
        trials = report_trials_frame(study)
        done = scatter_points_frame(trials)  # one point per architecture (a re-sampled twin is folded in)
        assert set(itertools_chain(drawn.values())) == set(done["number"])
        assert sorted(drawn[FRONT]) == sorted(done.loc[done["on_front"], "number"])
        assert sorted(drawn[REFERENCES]) == sorted(done.loc[done["kind"] == "reference", "number"])
        assert sorted(drawn[PRUNED]) == sorted(done.loc[done["kind"] == "pruned", "number"])
        assert sorted(drawn[DOMINATED]) == sorted(done.loc[(done["kind"] == "trial") & ~done["on_front"], "number"])
        labels = browser.eval("[...document.querySelectorAll('#scatter .textpoint')].map(e => e.textContent)")
        assert "RepVGG-tiny" in labels and IMG in labels  # the hostile label shows as plain text
        assert browser.eval("document.querySelector('#scatter .js-line').getAttribute('d').length") > 0
        # Hover a point: the card shows the spec and figures.
        browser.eval("Plotly.Fx.hover('scatter', [{curveNumber: document.getElementById('scatter').data"
                     ".findIndex(t => t.name === %s), pointNumber: 0}])" % json.dumps(FRONT))
        hover = browser.eval("document.querySelector('#scatter .hoverlayer').textContent")
        assert "depths" in hover and "params" in hover and "img/s" in hover
        hv_legend = browser.eval("[...document.querySelectorAll('#hypervolume .legendtext')].map(e => e.textContent)")
        assert {SEARCH_HV, REFERENCE_HV} <= set(hv_legend)
        assert browser.eval("document.querySelectorAll('#front-table tr').length") >= 3
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = browser.screenshot(tmp_path / "report.png")
        shutil.copy(shot, ARTIFACTS / "report.png")
        assert shot.stat().st_size > 50_000
        # Nothing injected ran, nothing failed, nothing was fetched.
        assert browser.eval("window.__dialogs") == []
        assert browser.eval("document.images.length") == 0
        assert browser.eval("[...document.scripts].every(s => !s.src && "
                            "/Plotly\\.newPlot|plotly\\.js v|PlotlyConfig/.test(s.textContent))")  # ours only
        assert browser.console_errors() == []
        assert [u for u in browser.requests() if not u.startswith(("file:", "data:", "blob:"))] == []
    finally:
        browser.close()


def test_scatter_colours_and_hovers_a_third_objective():
    from repvgg_nas.report.scatter import FRONT, pruned_links_frame, scatter_figure

    from .test_stats import _three_objective_frame

    frame = _three_objective_frame()
    frame["kind"], frame["on_long_front"] = "trial", False
    frame["on_front"] = frame["number"].isin([0, 1, 3])
    fig = scatter_figure(frame, pruned_links_frame(frame))
    front = next(t for t in fig.data if t.name == FRONT)
    assert front.mode == "markers"  # not a staircase: the front lives in three dimensions
    assert list(front.marker.color) == [20.0, 50.0, 70.0] and front.marker.showscale
    assert "peak activation memory 20.0 MB (minimized)" in front.hovertext[0]
    frame.attrs["extra_objectives"] = ()
    two = next(t for t in scatter_figure(frame, pruned_links_frame(frame)).data if t.name == FRONT)
    assert two.mode == "lines+markers" and "peak" not in two.hovertext[0]
