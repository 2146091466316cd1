"""Claims a front member may make against a paper reference, each saying what was tested.

Two tests per objective, on the accuracy gap ``d`` (front minus reference,
mean over seeds) with its combined standard error ``se`` (:mod:`.noise`), at
``k`` = ``[trust] claim_sigmas`` and margin ``m`` = ``[trust]
equivalence_points`` / 100:

- *beyond the noise*: ``d > k*se`` (more accurate) or ``d < -k*se`` (less);
- *equivalent*: the interval ``d ± z*se`` lies inside ``[-m, m]``, ends
  included: two one-sided tests at the error rate of the test above
  (``z`` = :func:`equivalence_sigmas` ``(k)``, 1.69 at ``k`` = 2). A gap that is not
  beyond the noise is not thereby "as accurate": with too few seeds or too
  small a validation set neither test passes, and the claim says so.

Speed has one test: the throughput ratio ``r`` with spread ``s`` (the IQRs
of the timed repeats, ``r * sqrt((iqr_a/a)**2 + (iqr_b/b)**2)``) is faster
when ``r - s > 1``, slower when ``r + s < 1``, else within its spread. A
ratio uses the lockstep re-measurement when both nets have one, else both
search figures (never one of each: they come from different stretches of
time).

The verdict (:func:`verdict`), accuracy down, speed across:

======================  =========================================  ======================  =========
accuracy gap            faster                                     within spread           slower
======================  =========================================  ======================  =========
more accurate           dominates                                  more accurate, as fast  trade-off
equivalent              as accurate, N.Nx faster                   ties                    worse
neither (inconclusive)  inconclusive on accuracy (±), N.Nx faster  inconclusive            worse
less accurate           trade-off                                  worse                   worse
======================  =========================================  ======================  =========

"more accurate" wins over "equivalent" when both hold (a gap beyond the
noise but inside the margin). "worse" means it loses beyond the noise and
wins nothing shown: a slower net whose accuracy is inconclusive is worse
too, since no test says it buys anything with the time. The
inconclusive-on-accuracy verdict carries the gap (± one combined standard
error) because that gap is the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import pandas as pd

from ._values import is_reference_name, present
from .noise import standard_error

__all__ = [
    "CLAIM_COLUMNS", "DEFAULT_EQUIVALENCE_POINTS", "DOMINATES", "EQUIVALENCE", "INCONCLUSIVE", "TIES",
    "accuracy_equivalent", "claim_text", "equivalence_sigmas", "claims_frame", "verdict",
]

DOMINATES = "dominates"
TIES = "ties"
INCONCLUSIVE = "inconclusive"
# The default ``[trust] equivalence_points``: a gap whose interval stays within one point reads "as accurate".
DEFAULT_EQUIVALENCE_POINTS = 1.0
# The same margin as an accuracy difference (the unit of the claims' ``accuracy_diff``).
EQUIVALENCE = DEFAULT_EQUIVALENCE_POINTS / 100.0

CLAIM_COLUMNS = (
    "budget", "front", "reference", "reference_trial", "accuracy_diff", "accuracy_diff_se", "sigmas",
    "speed_ratio", "speed_ratio_spread", "verdict", "equivalence", "equivalent",
)


def equivalence_sigmas(sigmas: float) -> float:
    """Standard errors of the equivalence interval that tests at the same error rate as ``sigmas`` does.

    The difference test at ``k`` standard errors errs with probability ``a = 2 * (1 - Phi(k))``; two
    one-sided tests at level ``a`` use the ``1 - 2a`` interval, ``d ± z(1 - a) * se`` (1.69 SE at k = 2).
    """
    if sigmas <= 0:
        return 0.0
    nd = NormalDist()
    return nd.inv_cdf(2 * nd.cdf(sigmas) - 1)


def accuracy_equivalent(acc_diff: float, acc_se: float, sigmas: float, equivalence: float = EQUIVALENCE) -> bool:
    """Whether ``acc_diff ± equivalence_sigmas(sigmas) * acc_se`` lies inside ``±equivalence`` (ends included;
    False when unknown)."""
    reach = abs(acc_diff) + equivalence_sigmas(sigmas) * acc_se
    return bool(reach <= equivalence)  # NaN compares False: an unknown gap is never equivalent


def _gap(acc_diff: float, acc_se: float) -> str:
    return f"{100 * acc_diff:+.1f} ± {100 * acc_se:.1f} pts"


def verdict(
    acc_diff: float, acc_se: float, ratio: float, ratio_spread: float, sigmas: float,
    equivalence: float = EQUIVALENCE,
) -> str:
    """The claim a front member may make against a reference (the table in the module doc).

    ``acc_diff``/``acc_se`` and ``equivalence`` (the margin) are accuracy
    differences (0.01 = one point); ``sigmas`` the number of combined
    standard errors both accuracy tests use.
    """
    acc = 1 if acc_diff > sigmas * acc_se else (-1 if acc_diff < -sigmas * acc_se else 0)
    fast = 1 if ratio - ratio_spread > 1.0 else (-1 if ratio + ratio_spread < 1.0 else 0)
    if acc == 1:
        return {1: DOMINATES, 0: "more accurate, as fast", -1: "trade-off"}[fast]
    if acc == -1:
        return "trade-off" if fast == 1 else "worse"
    if fast == -1:
        return "worse"
    same = accuracy_equivalent(acc_diff, acc_se, sigmas, equivalence)
    if fast == 1:
        return (f"as accurate, {ratio:.1f}x faster" if same
                else f"{INCONCLUSIVE} on accuracy ({_gap(acc_diff, acc_se)}), {ratio:.1f}x faster")
    return TIES if same else INCONCLUSIVE


def _has_lockstep(row: pd.Series) -> bool:
    return present(row.get("lockstep_throughput")) and row["lockstep_throughput"] > 0


def _speed(row: pd.Series, lockstep: bool) -> tuple[float, float]:
    """(images/s, IQR) used for ratios: the lockstep figure when ``lockstep``, else the search's."""
    if lockstep:
        return float(row["lockstep_throughput"]), float(row["lockstep_iqr"]) if present(row["lockstep_iqr"]) else 0.0
    return float(row["throughput"]), float(row["throughput_iqr"]) if present(row["throughput_iqr"]) else 0.0


def _seed_sd(row: pd.Series, stats: pd.DataFrame) -> float:
    if row["n"] >= 2 and present(row["accuracy_std"]):
        return float(row["accuracy_std"])
    return float(stats.attrs.get("pooled_seed_std", 0.0))


def claims_frame(
    stats: pd.DataFrame, sigmas: float = 2.0, budget: str = "proxy", equivalence: float = EQUIVALENCE,
) -> pd.DataFrame:
    """One row per (front member, reference) pair of :func:`.architectures.architecture_stats` rows:
    the accuracy gap +- its standard error, the throughput ratio +- its spread, and the :func:`verdict`.

    ``budget="long"`` compares long-budget accuracies on the long-budget front
    (the proxy's seed spread stands in for the long runs' own).
    ``equivalence`` is the "as accurate" margin as an accuracy difference
    (``[trust] equivalence_points`` / 100); ``equivalent`` says whether the
    gap passed that test.
    """
    if stats.empty:
        return pd.DataFrame(columns=list(CLAIM_COLUMNS))
    long = budget == "long"
    acc_col, front_col = ("long_accuracy", "on_long_front") if long else ("accuracy_mean", "on_front")
    usable = stats[stats[acc_col].notna()]
    refs = usable[usable["reference"].map(is_reference_name)]
    front = usable[usable[front_col].astype(bool)]
    rows = []
    for _, f in front.iterrows():
        for _, r in refs.iterrows():
            if f["spec_hash"] == r["spec_hash"]:
                continue
            if long:  # one long run each: the proxy's seed spread and the binomial error at the long accuracy
                ses = [standard_error(x[acc_col], _seed_sd(x, stats), 1, x["val_size"]) for x in (f, r)]
            else:
                ses = [float(f["accuracy_se"]), float(r["accuracy_se"])]
            se = math.sqrt(ses[0] ** 2 + ses[1] ** 2)
            both = _has_lockstep(f) and _has_lockstep(r)  # a ratio never pairs two measuring sessions
            (a, ia), (b, ib) = _speed(f, both), _speed(r, both)
            ratio = a / b if b > 0 else float("inf")
            spread = ratio * math.sqrt((ia / a) ** 2 + (ib / b) ** 2) if a > 0 and b > 0 else float("nan")
            diff = float(f[acc_col]) - float(r[acc_col])
            rows.append({
                "budget": budget, "front": int(f["number"]), "reference": r["reference"],
                "reference_trial": int(r["number"]), "accuracy_diff": diff, "accuracy_diff_se": se,
                "sigmas": float(sigmas), "speed_ratio": ratio, "speed_ratio_spread": spread,
                "verdict": verdict(diff, se, ratio, spread if present(spread) else 0.0, sigmas, equivalence),
                "equivalence": float(equivalence),
                "equivalent": accuracy_equivalent(diff, se, sigmas, equivalence),
            })
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def claim_text(c: pd.Series | Mapping[str, Any]) -> str:
    """``A0: dominates (+1.7 ± 0.8 pts, 1.31x ± 0.04x)`` (± one combined standard error / the ratio's spread).

    A verdict that already names the gap (inconclusive on accuracy) is followed by the ratio alone:
    ``A0: inconclusive on accuracy (-3.8 ± 2.3 pts), 2.3x faster (2.31x ± 0.05x)``.
    """
    spread = c["speed_ratio_spread"]
    speed = f"{c['speed_ratio']:.2f}x" + (f" ± {spread:.2f}x" if present(spread) else "")
    gap = _gap(c["accuracy_diff"], c["accuracy_diff_se"])
    said = str(c["verdict"])
    return f"{c['reference']}: {said} ({speed})" if gap in said else f"{c['reference']}: {said} ({gap}, {speed})"
