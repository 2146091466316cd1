"""Study -> frames: an Optuna study read into the plain frames :mod:`repvgg_nas.stats` judges, and the
study settings stored with it that the judgement needs.

This module is the adapter between the storage and the statistics: it reads
trials (their values, user attrs, outcome and constraints) and the study's
stored config (``[trust]``, ``[data]``, ``[objectives]``), so that
:mod:`repvgg_nas.stats` works on frames and arrays only and never sees
Optuna. The search writes its ``trials.csv``/``pareto.csv`` from these frames
and the report draws from them.

:func:`trials_frame` flattens every trial and marks the front, taken per
architecture on mean accuracy over seeds (:func:`repvgg_nas.stats.architecture_stats`);
:func:`front_numbers` is that front as trial numbers. The study's ``[trust]``
table sets the claim rule's numbers (:func:`study_sigmas`,
:func:`study_equivalence`); :func:`study_objectives` is its objective table.
"""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd

from . import attrs, lifecycle
from .objectives import Objective, objectives_for
from .stats import DEFAULT_EQUIVALENCE_POINTS, architecture_stats, hypervolume_reference
from .storage import constraint_values

__all__ = [
    "front_numbers", "study_equivalence", "study_hypervolume_reference", "study_objectives", "study_sigmas",
    "trials_frame",
]

# Trial user attrs copied into columns of the same name.
_ATTR_COLUMNS = (
    attrs.REFERENCE, attrs.ARCH, attrs.SPEC_HASH, attrs.PARAMS, attrs.MACS, attrs.LATENCY_MS, attrs.FUSION_ERROR,
    attrs.TRAIN_SECONDS, attrs.TRAIN_IMAGES_PER_S, attrs.MEASURE_CACHED, attrs.DEVICE, attrs.FAIL_REASON,
    attrs.PRUNE_REASON, attrs.RETRY_OF, attrs.DUPLICATE_OF, attrs.PARENT_TRIAL, attrs.PRUNED_RATIO, attrs.SPEEDUP,
    attrs.REPEAT_OF, attrs.TRAIN_SEED, attrs.TRAIN_EPOCHS, attrs.VAL_SIZE, attrs.THROUGHPUT_IQR, attrs.THROUGHPUT_CV,
    attrs.MEASURE_CONTENDED, attrs.OTHER_LOAD, attrs.RUNG, attrs.PREDICTED_IMAGES_PER_S, attrs.PREDICTED_ACCURACY,
    attrs.PREDICTED_ACCURACY_SD, attrs.EXPECTED_GAIN,
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


def study_hypervolume_reference(study: optuna.Study, trials: pd.DataFrame | None = None) -> tuple[tuple[float, ...], str]:
    """The study's hypervolume reference point and where it comes from (its ``[trust]`` claim sigmas and
    accuracy floor): the one the report draws and the pool sampler maximizes."""
    frame = trials if trials is not None else trials_frame(study)
    return hypervolume_reference(frame, study_sigmas(study), _number(_study_trust(study).get("accuracy_floor")))


def study_equivalence(study: optuna.Study) -> float:
    """The "as accurate" margin as an accuracy difference: the study's ``[trust] equivalence_points`` / 100
    (default :data:`repvgg_nas.stats.DEFAULT_EQUIVALENCE_POINTS`; a study stored without the key gets it too)."""
    value = _number(_study_trust(study).get("equivalence_points"))
    return (value if value is not None else DEFAULT_EQUIVALENCE_POINTS) / 100.0


def _study_prior_seed_std(study: optuna.Study) -> float | None:
    """The study's ``[trust] prior_seed_std`` (None: the default, :data:`repvgg_nas.stats.PRIOR_SEED_STD`)."""
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


def _trial_row(t: optuna.trial.FrozenTrial, table: tuple[Objective, ...], by_arch: Any) -> dict[str, Any]:
    """One trial as a row: its objective values, copied attrs, lockstep figures, sizes and timings."""
    ua = t.user_attrs
    how = lifecycle.outcome(t)
    row: dict[str, Any] = {"number": t.number, "state": t.state.name, "role": lifecycle.role(t).value,
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
    return row


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, objectives, architecture, figures and reasons (lost trials, which never ran, left out).

    ``on_front``/``on_long_front`` mark the trial naming an architecture on the
    front of mean proxy accuracy (long-budget accuracy) vs throughput;
    ``lockstep_*`` carry the end-of-study lockstep re-measurement of its
    architecture, when there is one. ``frame.attrs`` carries the study's
    ``val_size``, ``prior_seed_std`` and ``long_epochs``, which
    :func:`repvgg_nas.stats.architecture_stats` falls back on, and the claim
    rule's ``equivalence`` margin (:func:`study_equivalence`), which
    :func:`repvgg_nas.stats.pareto_frame` uses.
    """
    lockstep = study.user_attrs.get(attrs.STUDY_LOCKSTEP) or {}
    by_arch = lockstep.get("archs", {}) if isinstance(lockstep, dict) else {}
    table = study_objectives(study)
    # A lost trial was created, found its slot taken and never ran.
    rows = [_trial_row(t, table, by_arch) for t in study.get_trials(deepcopy=False) if not lifecycle.lost(t)]
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
