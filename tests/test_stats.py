"""The stats core: claims that say what was tested (the equivalence test, every cell of the verdict
table), the Pareto mask and the hypervolume in 2 and 3 objectives, and the study's
``[trust] equivalence_points`` carried into the front frame."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna
import pytest

from repvgg_nas import ConfigError
from repvgg_nas.search import load_study_config
from repvgg_nas.stats import (
    CLAIM_COLUMNS, DEFAULT_EQUIVALENCE_POINTS, EQUIVALENCE, accuracy_equivalent, architecture_stats, claim_text,
    claims_frame, dominates, equivalence_sigmas, hypervolume, hypervolume_2d, pareto_frame, pareto_mask, verdict,
)
from repvgg_nas.study_frames import study_equivalence, trials_frame

from .helpers import write_tiny_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------
# claims: the equivalence test and the verdict table
# ---------------------------------------------------------------------------


def test_a_large_gap_inside_the_noise_is_inconclusive_not_as_accurate():
    # The main job's A0 claim: 3.8 points worse with too little power to tell, 2.3x faster.
    said = verdict(-0.038, 0.023, 2.3, 0.05, 2.0)
    assert said == "inconclusive on accuracy (-3.8 ± 2.3 pts), 2.3x faster"
    row = {"reference": "RepVGG-A0", "verdict": said, "accuracy_diff": -0.038, "accuracy_diff_se": 0.023,
           "speed_ratio": 2.31, "speed_ratio_spread": 0.05}
    # The gap is said once, in the verdict; the parentheses then give the ratio alone.
    assert claim_text(row) == "RepVGG-A0: inconclusive on accuracy (-3.8 ± 2.3 pts), 2.3x faster (2.31x ± 0.05x)"


def test_a_small_gap_with_a_tight_interval_is_as_accurate():
    # 0.3 ± 0.4 pts: two one-sided tests at the error rate of the 2-SE difference test use 1.69 SE,
    # [-0.38, 0.98] lies inside ± 1 point.
    said = verdict(0.003, 0.004, 2.3, 0.05, 2.0)
    assert said == "as accurate, 2.3x faster"
    row = {"reference": "A0", "verdict": said, "accuracy_diff": 0.003, "accuracy_diff_se": 0.004,
           "speed_ratio": 2.3, "speed_ratio_spread": float("nan")}
    assert claim_text(row) == "A0: as accurate, 2.3x faster (+0.3 ± 0.4 pts, 2.30x)"
    # A wider interval is not shown equivalent: 0.3 ± 0.5 reaches 1.15 points.
    assert verdict(0.003, 0.005, 2.3, 0.05, 2.0) == "inconclusive on accuracy (+0.3 ± 0.5 pts), 2.3x faster"


@pytest.mark.parametrize(("sigmas", "z"), [(0.0, 0.0), (1.0, 0.4752), (2.0, 1.6901), (3.0, 2.7822)])
def test_equivalence_uses_the_difference_tests_error_rate(sigmas, z):
    assert equivalence_sigmas(sigmas) == pytest.approx(z, abs=1e-4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize(("nudge", "same"), [(0.0, True), (1e-9, True), (-1e-9, False)])
def test_the_equivalence_boundary_is_inclusive_on_both_sides(sign, nudge, same):
    margin = 0.25 + equivalence_sigmas(2.0) * 0.125 + nudge  # the interval's far end, exactly
    assert accuracy_equivalent(sign * 0.25, 0.125, 2.0, margin) is same
    said = verdict(sign * 0.25, 0.125, 3.0, 0.5, 2.0, margin)
    assert said == ("as accurate, 3.0x faster" if same
                    else f"inconclusive on accuracy ({sign * 25:+.1f} ± 12.5 pts), 3.0x faster")
    assert verdict(sign * 0.25, 0.125, 1.0, 0.5, 2.0, margin) == ("ties" if same else "inconclusive")


@pytest.mark.parametrize(("diff", "se", "sigmas", "margin", "same"), [
    (0.0, 0.0, 2.0, 0.0, True),                   # a zero margin admits only a gap known to be exactly zero
    (0.0, 0.001, 2.0, 0.0, False),
    (0.004, 0.0, 0.0, EQUIVALENCE, True),         # claim_sigmas 0: the bare gap against the margin
    (0.011, 0.0, 0.0, EQUIVALENCE, False),
    (0.0, float("nan"), 2.0, EQUIVALENCE, False),  # an unknown error is never equivalent
])
def test_accuracy_equivalent_edges(diff, se, sigmas, margin, same):
    assert accuracy_equivalent(diff, se, sigmas, margin) is same


# (accuracy gap, its SE) for each accuracy row of the table, at 2 SE and a 1-point margin.
_ACC = {
    "more": (0.05, 0.01),           # beyond the noise, outside the margin
    "more_inside": (0.004, 0.001),  # beyond the noise and inside the margin: "more accurate" wins
    "same": (0.002, 0.003),         # interval [-0.4, 0.8] pts: equivalent
    "unknown": (0.015, 0.01),       # neither test passes
    "less": (-0.05, 0.01),
}
# (ratio, spread) for each speed column.
_SPEED = {"faster": (1.5, 0.1), "within": (1.05, 0.1), "slower": (0.7, 0.1)}
_TABLE = {
    ("more", "faster"): "dominates", ("more", "within"): "more accurate, as fast", ("more", "slower"): "trade-off",
    ("more_inside", "faster"): "dominates", ("more_inside", "within"): "more accurate, as fast",
    ("more_inside", "slower"): "trade-off",
    ("same", "faster"): "as accurate, 1.5x faster", ("same", "within"): "ties", ("same", "slower"): "worse",
    ("unknown", "faster"): "inconclusive on accuracy (+1.5 ± 1.0 pts), 1.5x faster",
    ("unknown", "within"): "inconclusive", ("unknown", "slower"): "worse",
    ("less", "faster"): "trade-off", ("less", "within"): "worse", ("less", "slower"): "worse",
}


@pytest.mark.parametrize(("acc", "speed"), list(itertools.product(_ACC, _SPEED)))
def test_every_cell_of_the_verdict_table(acc, speed):
    assert verdict(*_ACC[acc], *_SPEED[speed], 2.0) == _TABLE[acc, speed]


# ---------------------------------------------------------------------------
# the study's [trust] equivalence_points reaches the claims
# ---------------------------------------------------------------------------


def _study(points: list[tuple[str, str | None, float, float]], trust: dict[str, Any] | None = None) -> optuna.Study:
    """One run per architecture: (spec hash, reference, accuracy, images/s); 2000 val images."""
    s = optuna.create_study(directions=["maximize", "maximize"])
    for h, ref, acc, thr in points:
        ua: dict[str, Any] = {"spec_hash": h, "arch": h, "val_size": 2000, "throughput_iqr": thr * 0.02,
                              "measure_contended": False}
        if ref:
            ua["reference"] = ref
        s.add_trial(optuna.trial.create_trial(values=[acc, thr], user_attrs=ua))
    if trust is not None:
        s.set_user_attr("trust", trust)
    return s


def test_the_studys_equivalence_points_set_the_claims():
    # One seed each: the prior seed spread gives a combined SE of about 2.2 points, so a 1-point margin
    # cannot show equivalence, a 5-point one can.
    points = [("ref", "A0", 0.700, 100.0), ("fast", None, 0.702, 200.0)]
    default = _study(points)
    assert study_equivalence(default) == pytest.approx(DEFAULT_EQUIVALENCE_POINTS / 100)
    pareto = pareto_frame(trials_frame(default)).set_index("number")
    assert pareto.loc[1, "claims"].startswith("A0: inconclusive on accuracy (+0.2 ± 2.2 pts), 2.0x faster (2.00x")
    wide = _study(points, {"equivalence_points": 5.0})
    trials = trials_frame(wide)
    assert trials.attrs["equivalence"] == pytest.approx(0.05)
    pareto = pareto_frame(trials).set_index("number")
    assert pareto.loc[1, "claims"].startswith("A0: as accurate, 2.0x faster (+0.2 ± 2.2 pts, 2.00x")
    claims = claims_frame(architecture_stats(trials), 2.0, "proxy", 0.05)
    assert list(claims.columns) == list(CLAIM_COLUMNS)
    assert claims.iloc[0]["equivalent"] and claims.iloc[0]["equivalence"] == pytest.approx(0.05)
    # An explicit margin wins over the frame's.
    assert pareto_frame(trials, equivalence=0.01).set_index("number").loc[1, "claims"].startswith(
        "A0: inconclusive on accuracy")


def test_trust_equivalence_points_is_validated(tmp_path):
    cfg = load_study_config(write_tiny_study(tmp_path))
    assert cfg.trust.equivalence_points == DEFAULT_EQUIVALENCE_POINTS == 1.0
    assert cfg.to_dict()["trust"]["equivalence_points"] == 1.0
    two = load_study_config(write_tiny_study(tmp_path / "two", tail="[trust]\nequivalence_points = 2\n"))
    assert two.trust.equivalence_points == 2.0
    with pytest.raises(ConfigError, match="trust.equivalence_points: -0.5 is out of range"):
        load_study_config(write_tiny_study(tmp_path / "bad", tail="[trust]\nequivalence_points = -0.5\n"))


# ---------------------------------------------------------------------------
# Pareto mask and hypervolume in 2 and 3 objectives
# ---------------------------------------------------------------------------


def test_pareto_mask_in_two_and_three_objectives():
    x, y = [1.0, 2.0, 1.0, 0.5], [2.0, 1.0, 1.0, 2.0]
    assert pareto_mask(x, y).tolist() == [True, True, False, False]
    # A third coordinate rescues (1, 1) and (0.5, 2); equal points both stay.
    z = [0.0, 0.0, 3.0, 1.0]
    assert pareto_mask(x, y, z).tolist() == [True, True, True, True]
    pts = np.array([[1, 1, 1], [1, 1, 1], [2, 2, 2], [3, 0, 0], [0, 0, 4]], dtype=float)
    assert pareto_mask(pts).tolist() == [False, False, True, True, True]
    assert pareto_mask(pts[:2]).tolist() == [True, True]
    assert pareto_mask([], []).tolist() == []


def test_dominates_takes_the_objectives_it_is_given():
    a, b = {"accuracy": 0.7, "throughput": 200.0, "memory": -5.0}, {"accuracy": 0.7, "throughput": 100.0, "memory": -4.0}
    assert dominates(a, b)
    assert not dominates(a, b, ("accuracy", "throughput", "memory"))


def test_hypervolume_3d_against_a_hand_computed_value():
    # Boxes from the origin to (1,2,3), (3,1,1), (2,2,2): 6 + 3 + 8 - (1 + 4 + 2) + 1 = 11 by inclusion-exclusion.
    pts = [(1, 2, 3), (3, 1, 1), (2, 2, 2)]
    assert hypervolume(pts, (0, 0, 0)) == pytest.approx(11.0)
    # Dominated, repeated and below-reference points add nothing; the reference shifts every box.
    assert hypervolume(pts + [(1, 1, 1), (2, 2, 2), (5, 5, -1)], (0, 0, 0)) == pytest.approx(11.0)
    # From (0.5, 0.5, 0.5): 1.875 + 0.625 + 3.375 - (0.125 + 1.125 + 0.375) + 0.125.
    assert hypervolume(pts, (0.5, 0.5, 0.5)) == pytest.approx(4.375)
    assert hypervolume([], (0, 0, 0)) == 0.0
    with pytest.raises(ValueError, match="3 coordinates"):
        hypervolume([(1, 2)], (0, 0, 0))


@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_3d_counts_the_dominated_unit_cells(seed):
    # Integer points: the volume is the number of unit cells whose far corner some point dominates.
    rng = np.random.default_rng(seed)
    pts = rng.integers(1, 6, size=(8, 3))
    cells = sum(
        1 for c in itertools.product(range(5), repeat=3)
        if any((p >= np.array(c) + 1).all() for p in pts)
    )
    assert hypervolume(pts.tolist(), (0, 0, 0)) == pytest.approx(cells)


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_in_two_objectives_is_the_sweep(seed):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0.0, 1.0, size=(12, 2)).tolist()
    assert hypervolume(pts, (0.1, 0.2)) == pytest.approx(hypervolume_2d(pts, (0.1, 0.2)))
    assert hypervolume([(0.5,), (0.8,)], (0.3,)) == pytest.approx(0.5)
    assert math.isclose(hypervolume_2d([(1.0, 1.0)]), 1.0)


def test_stats_imports_nothing_above_it():
    import ast
    from pathlib import Path

    import repvgg_nas.stats as stats

    allowed = {"attrs", "files", "errors", "objectives", "lifecycle", "storage"}  # plumbing, the objective table
    for path in Path(stats.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:  # from .. or from ..x
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                assert set(names) <= allowed, (path.name, names)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.startswith("repvgg_nas") for m in mods), (path.name, mods)


# ---- a third objective: peak memory (minimized) ---------------------------------------------------------------
def _three_objective_frame():
    import pandas as pd

    rows = [  # (number, reference, accuracy, images/s, peak MB)
        (0, "A0", 0.70, 100.0, 50.0),
        (1, None, 0.69, 90.0, 20.0),   # dominated on accuracy and speed, but the leanest: on the 3-D front
        (2, None, 0.68, 80.0, 60.0),   # dominated in every coordinate by trial 0
        (3, None, 0.72, 120.0, 70.0),
    ]
    frame = pd.DataFrame([{"number": n, "state": "COMPLETE", "reference": r, "accuracy": a, "throughput": t,
                           "peak_memory_mb": m, "spec_hash": f"h{n}", "feasible": True, "val_size": 2000}
                          for n, r, a, t, m in rows])
    frame.attrs["extra_objectives"] = ("peak_memory_mb",)
    return frame


def test_the_front_takes_a_minimized_third_objective():
    frame = _three_objective_frame()
    stats = architecture_stats(frame)
    assert set(stats.loc[stats["on_front"], "number"]) == {0, 1, 3}
    assert list(stats["peak_memory_mb"]) == [50.0, 20.0, 60.0, 70.0]
    frame.attrs["extra_objectives"] = ()
    two = architecture_stats(frame)
    assert set(two.loc[two["on_front"], "number"]) == {3}
    assert "peak_memory_mb" not in two


def test_hypervolume_history_in_three_objectives():
    from repvgg_nas.stats import hypervolume_frame, hypervolume_reference

    frame = _three_objective_frame()
    ref, text = hypervolume_reference(frame, floor=0.6)
    assert ref == (0.6, 0.0, -70.0) and "70.0 MB" in text
    hv = hypervolume_frame(frame, ref)
    # References only: A0 spans (0.1 accuracy) x (100 img/s) x (70 - 50 MB).
    assert hv["references_hypervolume"].iloc[0] == pytest.approx(0.1 * 100 * 20)
    final = hypervolume([(0.70, 100, -50), (0.69, 90, -20), (0.72, 120, -70)], ref)
    assert hv["hypervolume"].iloc[-1] == pytest.approx(final)
    assert list(hv["front_size"]) == [1, 2, 2, 3]


def test_prediction_check_compares_each_architecture_once():
    import pandas as pd

    from repvgg_nas.attrs import PREDICTED_IMAGES_PER_S, SPEC_HASH
    from repvgg_nas.stats import prediction_check

    frame = pd.DataFrame({
        SPEC_HASH: ["a", "a", "b", "c", "ref"],
        PREDICTED_IMAGES_PER_S: [110.0, 110.0, 80.0, 300.0, None],  # a reference is measured, never predicted
        "throughput": [100.0, 50.0, 100.0, None, 60.0],  # c stopped before it was measured
    })
    check = prediction_check(frame)
    assert check.nets == 2 and check.median == pytest.approx(0.95)
    assert (check.low, check.high) == pytest.approx((0.8, 1.1))  # a's first measured trial, not its repeat
    assert prediction_check(frame.drop(columns=[PREDICTED_IMAGES_PER_S])) is None
    assert prediction_check(frame.iloc[4:]) is None
