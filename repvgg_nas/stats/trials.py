"""The trials frame -> the front frame the search writes (``pareto.csv``), and small questions asked of it.

:func:`pareto_frame` keeps the front plus the paper references and gives
each front member's claim against each reference (:mod:`.claims`), on a
trials frame (one row per trial, the front marked per architecture on mean
accuracy over seeds). Reading a study into that frame is
:mod:`repvgg_nas.study_frames`'s job: this module sees frames only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from .. import attrs
from ..files import atomic_write
from ..objectives import THROUGHPUT
from ._values import is_reference_name
from .architectures import architecture_stats
from .claims import DOMINATES, EQUIVALENCE, claim_text, claims_frame

__all__ = [
    "PREDICTION_DRIFT", "completed", "is_reference", "pareto_frame", "write_csv", "PredictionCheck", "prediction_check",
]

# Per-architecture columns pareto.csv adds to the trial columns (mean accuracy replaces the single run's).
_PARETO_STATS = (
    "n", "seeds", "accuracy_std", "accuracy_se", "contended", "lockstep_throughput", "lockstep_iqr",
    "long_accuracy", "long_epochs", "throughput_source",
)


# A table whose predictions are this far off the measured speeds (either way) is worth measuring again.
PREDICTION_DRIFT = 0.25


class PredictionCheck(NamedTuple):
    """The latency table's predicted speeds over the measured ones, across the trained nets that have both."""

    nets: int
    median: float
    low: float
    high: float

    @property
    def drifted(self) -> bool:
        """The median ratio is off by more than :data:`PREDICTION_DRIFT`: the table no longer fits this machine."""
        return abs(self.median - 1) > PREDICTION_DRIFT


def prediction_check(trials: pd.DataFrame) -> PredictionCheck | None:
    """Predicted / measured throughput per architecture (its first measured trial); None when no net has both."""
    column = attrs.PREDICTED_IMAGES_PER_S
    measured = THROUGHPUT.column
    if trials.empty or column not in trials or measured not in trials:
        return None
    both = trials[pd.to_numeric(trials[column], errors="coerce").gt(0)
                  & pd.to_numeric(trials[measured], errors="coerce").gt(0)]
    if both.empty:
        return None
    ratios = (both[column].astype(float) / both[measured].astype(float)).groupby(both[attrs.SPEC_HASH]).first()
    return PredictionCheck(len(ratios), float(ratios.median()), float(ratios.min()), float(ratios.max()))


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """The completed trials of a frame (an empty frame when there are none)."""
    if trials.empty or "state" not in trials:
        return trials.iloc[0:0]
    return trials[trials["state"] == "COMPLETE"]


def is_reference(trials: pd.DataFrame) -> pd.Series:
    """Which rows are paper reference trials."""
    return trials["reference"].map(is_reference_name)


def pareto_frame(
    trials: pd.DataFrame, sigmas: float = 2.0, val_size: int | None = None, equivalence: float | None = None,
) -> pd.DataFrame:
    """Front members and references (one row per architecture), with their claims.

    ``accuracy`` is the architecture's mean over seeds (``n``, ``accuracy_std``,
    ``accuracy_se``), ``run_accuracy`` the single run of the trial that names
    it. ``claims`` gives, for each reference, the verdict with the accuracy
    gap +- one combined standard error and the throughput ratio +- its spread
    (:func:`.claims.claim_text`); ``dominates`` lists the references dominated
    beyond the noise (``sigmas`` combined standard errors and the speed
    spread); ``long_claims``/``long_dominates`` the same at the long budget.
    ``val_size``: the study's validation size, for trials that did not record
    theirs; ``equivalence``: the "as accurate" margin as an accuracy
    difference (both default to what :func:`repvgg_nas.study_frames.trials_frame`
    noted in ``trials.attrs``, then to none / :data:`.claims.EQUIVALENCE`).
    """
    empty_cols = dict(dominates=[], claims=[], long_dominates=[], long_claims=[])
    if trials.empty:
        return trials.assign(**empty_cols)
    if equivalence is None:
        equivalence = trials.attrs.get("equivalence", EQUIVALENCE)
    done = trials[trials["state"] == "COMPLETE"]
    stats = architecture_stats(trials, val_size=val_size if val_size is not None else trials.attrs.get("val_size"))
    if done.empty or stats.empty:
        return done.assign(**empty_cols)
    keep = done[done["on_front"] | (done["number"].isin(stats["number"]) & is_reference(done))].copy()
    by_number = stats.set_index("number")
    keep["run_accuracy"] = keep["accuracy"]
    keep["accuracy"] = [by_number.loc[n, "accuracy_mean"] for n in keep["number"]]
    for c in _PARETO_STATS:
        keep[c] = [by_number.loc[n, c] for n in keep["number"]]
    for budget, prefix in (("proxy", ""), ("long", "long_")):
        claims = claims_frame(stats, sigmas, budget, equivalence)
        keep[f"{prefix}claims"] = [
            "; ".join(claim_text(c) for _, c in claims[claims["front"] == n].iterrows()) for n in keep["number"]
        ]
        keep[f"{prefix}dominates"] = [
            ", ".join(str(c["reference"]) for _, c in claims[(claims["front"] == n) & (claims["verdict"] == DOMINATES)].iterrows())
            for n in keep["number"]
        ]
    return keep.sort_values("throughput", ascending=False).reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Atomic CSV write (a reader never sees half a file)."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
