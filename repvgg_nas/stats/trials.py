"""Study -> the trials frame and the front frame the search writes (``trials.csv``, ``pareto.csv``).

:func:`trials_frame` flattens every trial (values, architecture, figures,
failure reasons) and marks the front, taken per architecture on mean
accuracy over seeds (:mod:`.architectures`); :func:`pareto_frame` keeps the
front plus the paper references and gives each front member's claim against
each reference (:mod:`.claims`). The study's ``[trust]`` table, stored on
the study, sets the claim rule's numbers (:func:`study_sigmas`,
:func:`study_equivalence`).

The objective columns come from the study's objective table
(:func:`study_objectives`): accuracy, throughput and any ``[objectives] extra``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import pandas as pd

from .. import attrs, lifecycle
from ..files import atomic_write
from ..storage import constraint_values
from ..objectives import THROUGHPUT, Objective, objectives_for
from ._values import is_reference_name
from .architectures import architecture_stats
from .claims import DEFAULT_EQUIVALENCE_POINTS, DOMINATES, EQUIVALENCE, claim_text, claims_frame

__all__ = [
    "completed", "constraint_values", "study_objectives", "front_numbers", "is_reference", "pareto_frame", "study_equivalence",
    "study_sigmas", "trials_frame", "write_csv", "PredictionCheck", "prediction_check",
]

# Trial user attrs copied into columns of the same name.
_ATTR_COLUMNS = (
    attrs.REFERENCE, attrs.ARCH, attrs.SPEC_HASH, attrs.PARAMS, attrs.MACS, attrs.LATENCY_MS, attrs.FUSION_ERROR,
    attrs.TRAIN_SECONDS, attrs.TRAIN_IMAGES_PER_S, attrs.MEASURE_CACHED, attrs.DEVICE, attrs.FAIL_REASON,
    attrs.PRUNE_REASON, attrs.RETRY_OF, attrs.DUPLICATE_OF, attrs.PARENT_TRIAL, attrs.PRUNED_RATIO, attrs.SPEEDUP,
    attrs.REPEAT_OF, attrs.TRAIN_SEED, attrs.TRAIN_EPOCHS, attrs.VAL_SIZE, attrs.THROUGHPUT_IQR, attrs.THROUGHPUT_CV,
    attrs.MEASURE_CONTENDED, attrs.OTHER_LOAD, attrs.RUNG, attrs.PREDICTED_IMAGES_PER_S,
)

# Per-architecture columns pareto.csv adds to the trial columns (mean accuracy replaces the single run's).
_PARETO_STATS = (
    "n", "seeds", "accuracy_std", "accuracy_se", "contended", "lockstep_throughput", "lockstep_iqr",
    "long_accuracy", "long_epochs", "throughput_source",
)


def _study_trust(study: optuna.Study) -> dict:
    """The latest run's ``[trust]`` table as stored on the study (empty when none)."""
    trust = study.user_attrs.get(attrs.STUDY_TRUST)
    return trust if isinstance(trust, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def study_sigmas(study: optuna.Study) -> float:
    """The claim rule's number of standard errors (the study's ``[trust] claim_sigmas``, default 2)."""
    value = _number(_study_trust(study).get("claim_sigmas"))
    return value if value is not None else 2.0


def study_equivalence(study: optuna.Study) -> float:
    """The "as accurate" margin as an accuracy difference: the study's ``[trust] equivalence_points`` / 100
    (default :data:`.claims.DEFAULT_EQUIVALENCE_POINTS`; a study stored without the key gets it too)."""
    value = _number(_study_trust(study).get("equivalence_points"))
    return (value if value is not None else DEFAULT_EQUIVALENCE_POINTS) / 100.0


def _study_prior_seed_std(study: optuna.Study) -> float | None:
    """The study's ``[trust] prior_seed_std`` (None: the default, :data:`.noise.PRIOR_SEED_STD`)."""
    return _number(_study_trust(study).get("prior_seed_std"))


def _study_val_size(study: optuna.Study) -> int | None:
    data = study.user_attrs.get(attrs.STUDY_DATA) or {}
    v = data.get("val_size") if isinstance(data, dict) else None
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def study_objectives(study: optuna.Study) -> tuple[Objective, ...]:
    """The study's objective table, in the order of its trials' values (``[objectives] extra`` as stored)."""
    stored = study.user_attrs.get(attrs.STUDY_OBJECTIVES)
    extra = stored.get("extra", []) if isinstance(stored, dict) else []
    return objectives_for(extra if isinstance(extra, list) else [])


def front_numbers(study: optuna.Study) -> set[int]:
    """Trial numbers on the Pareto front of a study, per architecture on mean accuracy over seeds.

    Each architecture is named by its first search (or pruned) trial; its
    seed repeats and long re-trainings never stand on the front themselves.
    """
    frame = trials_frame(study)
    if frame.empty:
        return set()
    return {int(n) for n in frame.loc[frame["on_front"], "number"]}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, objectives, architecture, figures and reasons (lost trials, which never ran, left out).

    ``on_front``/``on_long_front`` mark the trial naming an architecture on the
    front of mean proxy accuracy (long-budget accuracy) vs throughput;
    ``lockstep_*`` carry the end-of-study lockstep re-measurement of its
    architecture, when there is one. ``frame.attrs`` carries the study's
    ``val_size``, ``prior_seed_std`` and ``long_epochs``, which
    :func:`.architectures.architecture_stats` falls back on, and the claim
    rule's ``equivalence`` margin (:func:`study_equivalence`), which
    :func:`pareto_frame` uses.
    """
    lockstep = study.user_attrs.get(attrs.STUDY_LOCKSTEP) or {}
    by_arch = lockstep.get("archs", {}) if isinstance(lockstep, dict) else {}
    table = study_objectives(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if lifecycle.lost(t):  # created, found its slot taken, never run
            continue
        how = lifecycle.outcome(t)
        row = {"number": t.number, "state": t.state.name, "role": lifecycle.role(t).value,
               "outcome": how.value if how is not None else None}
        for i, o in enumerate(table):
            row[o.column] = t.values[i] if t.values and i < len(t.values) else None
        for k in _ATTR_COLUMNS:
            row[k] = ua.get(k)
        lk = by_arch.get(ua.get(attrs.SPEC_HASH)) if isinstance(by_arch, dict) else None
        row["lockstep_throughput"] = lk.get("images_per_s") if isinstance(lk, dict) else None
        row["lockstep_iqr"] = lk.get("images_per_s_iqr") if isinstance(lk, dict) else None
        row["lockstep_contended"] = lk.get("contended") if isinstance(lk, dict) else None
        row["params_m"] = ua[attrs.PARAMS] / 1e6 if ua.get(attrs.PARAMS) is not None else None
        row["gmacs"] = ua[attrs.MACS] / 1e9 if ua.get(attrs.MACS) is not None else None
        spec = ua.get(attrs.SPEC) or {}
        row["depths"] = "-".join(map(str, spec["depths"])) if spec.get("depths") else None
        for k in ("a", "b", "groupwise", "g"):
            row[k] = ua.get(attrs.arch_key(k))
        for k, v in (ua.get(attrs.PHASE_SECONDS) or {}).items():
            row[f"t_{k}"] = v
        row["duration_s"] = t.duration.total_seconds() if t.duration is not None else None
        row["feasible"] = all(v <= 0 for v in constraint_values(t))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame.attrs["extra_objectives"] = tuple(o.name for o in table[2:])
    recorded = [int(v) for v in frame[attrs.VAL_SIZE] if isinstance(v, (int, float)) and not isinstance(v, bool)
                and v == v]
    frame.attrs["val_size"] = _study_val_size(study) or (max(recorded) if recorded else None)
    prior = _study_prior_seed_std(study)
    if prior is not None:
        frame.attrs["prior_seed_std"] = prior
    frame.attrs["long_epochs"] = _study_trust(study).get("long_epochs")
    frame.attrs["equivalence"] = study_equivalence(study)
    stats = architecture_stats(frame)
    front = set(stats.loc[stats["on_front"].astype(bool), "number"]) if not stats.empty else set()
    long_front = set(stats.loc[stats["on_long_front"].astype(bool), "number"]) if not stats.empty else set()
    frame["on_front"] = frame["number"].isin(front)
    frame["on_long_front"] = frame["number"].isin(long_front)
    return frame


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
    difference (both default to what :func:`trials_frame` noted in
    ``trials.attrs``, then to none / :data:`.claims.EQUIVALENCE`).
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
