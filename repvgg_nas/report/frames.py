"""Study results as pandas frames (data only; drawing lives in the figure modules).

``trials_frame`` flattens every trial (values, architecture, figures, failure
reasons) and marks the front, taken per architecture on mean accuracy over
seeds (:mod:`.trust`); ``pareto_frame`` keeps the front plus the paper
references and gives each front member's claim against each reference, said
only beyond the measured noise (:func:`.trust.verdict`). The
report's own frames (``report_trials_frame``, ``front_table_frame``,
``status_frame``) build on them; each figure's frame lives beside its figure.

Both objectives (proxy accuracy, measured images/s) are maximized.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from .. import attrs, lifecycle
from ..files import atomic_write
from ..storage import constraint_values
from .trust import DOMINATES, architecture_stats, claim_text, claims_frame

__all__ = [
    "OBJECTIVES",
    "dominates",
    "empty_message",
    "front_numbers",
    "front_table_frame",
    "pareto_frame",
    "report_trials_frame",
    "status_frame",
    "study_sigmas",
    "trials_frame",
    "write_csv",
]

OBJECTIVES = ("accuracy", "throughput")

# Trial user attrs copied into columns of the same name.
_ATTR_COLUMNS = (
    attrs.REFERENCE, attrs.ARCH, attrs.SPEC_HASH, attrs.PARAMS, attrs.MACS, attrs.LATENCY_MS, attrs.FUSION_ERROR,
    attrs.TRAIN_SECONDS, attrs.TRAIN_IMAGES_PER_S, attrs.MEASURE_CACHED, attrs.DEVICE, attrs.FAIL_REASON,
    attrs.PRUNE_REASON, attrs.RETRY_OF, attrs.DUPLICATE_OF, attrs.PARENT_TRIAL, attrs.PRUNED_RATIO, attrs.SPEEDUP,
    attrs.REPEAT_OF, attrs.TRAIN_SEED, attrs.TRAIN_EPOCHS, attrs.VAL_SIZE, attrs.THROUGHPUT_IQR, attrs.THROUGHPUT_CV,
    attrs.MEASURE_CONTENDED, attrs.OTHER_LOAD, attrs.RUNG,
)
STATUS_COLUMNS = ("state", "count", "reasons")

# ---------------------------------------------------------------------------
# trials and the front
# ---------------------------------------------------------------------------


def dominates(a: pd.Series | dict, b: pd.Series | dict) -> bool:
    """True when ``a`` is at least as good in both objectives and better in one (point values, no noise:
    the front's geometry; claims about nets use :func:`.trust.verdict`)."""
    ge = all(a[k] >= b[k] for k in OBJECTIVES)
    gt = any(a[k] > b[k] for k in OBJECTIVES)
    return ge and gt


def front_numbers(study: optuna.Study) -> set[int]:
    """Trial numbers on the Pareto front of a study, per architecture on mean accuracy over seeds.

    Each architecture is named by its first search (or pruned) trial; its
    seed repeats and long re-trainings never stand on the front themselves.
    """
    frame = trials_frame(study)
    if frame.empty:
        return set()
    return {int(n) for n in frame.loc[frame["on_front"], "number"]}


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


def _study_prior_seed_std(study: optuna.Study) -> float | None:
    """The study's ``[trust] prior_seed_std`` (None: the default, :data:`.trust.PRIOR_SEED_STD`)."""
    return _number(_study_trust(study).get("prior_seed_std"))


def _study_val_size(study: optuna.Study) -> int | None:
    data = study.user_attrs.get(attrs.STUDY_DATA) or {}
    v = data.get("val_size") if isinstance(data, dict) else None
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, objectives, architecture, figures and reasons (lost trials, which never ran, left out).

    ``on_front``/``on_long_front`` mark the trial naming an architecture on the
    front of mean proxy accuracy (long-budget accuracy) vs throughput;
    ``lockstep_*`` carry the end-of-study lockstep re-measurement of its
    architecture, when there is one. ``frame.attrs`` carries the study's
    ``val_size`` and ``prior_seed_std``, which :func:`.trust.architecture_stats`
    falls back on.
    """
    lockstep = study.user_attrs.get(attrs.STUDY_LOCKSTEP) or {}
    by_arch = lockstep.get("archs", {}) if isinstance(lockstep, dict) else {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if lifecycle.lost(t):  # created, found its slot taken, never run
            continue
        how = lifecycle.outcome(t)
        row = {
            "number": t.number,
            "state": t.state.name,
            "role": lifecycle.role(t).value,
            "outcome": how.value if how is not None else None,
            "accuracy": t.values[0] if t.values else None,
            "throughput": t.values[1] if t.values else None,
        }
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
        row["feasible"] = all(v <= 0 for v in _constraint_values(t))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    recorded = [int(v) for v in frame[attrs.VAL_SIZE] if isinstance(v, (int, float)) and not isinstance(v, bool)
                and v == v]
    frame.attrs["val_size"] = _study_val_size(study) or (max(recorded) if recorded else None)
    prior = _study_prior_seed_std(study)
    if prior is not None:
        frame.attrs["prior_seed_std"] = prior
    frame.attrs["long_epochs"] = _study_trust(study).get("long_epochs")
    stats = architecture_stats(frame)
    front = set(stats.loc[stats["on_front"].astype(bool), "number"]) if not stats.empty else set()
    long_front = set(stats.loc[stats["on_long_front"].astype(bool), "number"]) if not stats.empty else set()
    frame["on_front"] = frame["number"].isin(front)
    frame["on_long_front"] = frame["number"].isin(long_front)
    return frame


# Per-architecture columns pareto.csv adds to the trial columns (mean accuracy replaces the single run's).
_PARETO_STATS = (
    "n", "seeds", "accuracy_std", "accuracy_se", "contended", "lockstep_throughput", "lockstep_iqr",
    "long_accuracy", "long_epochs", "throughput_source",
)


def pareto_frame(trials: pd.DataFrame, sigmas: float = 2.0, val_size: int | None = None) -> pd.DataFrame:
    """Front members and references (one row per architecture), with their claims.

    ``accuracy`` is the architecture's mean over seeds (``n``, ``accuracy_std``,
    ``accuracy_se``), ``run_accuracy`` the single run of the trial that names
    it. ``claims`` gives, for each reference, the verdict with the accuracy
    gap +- one combined standard error and the throughput ratio +- its spread
    (:func:`.trust.claim_text`); ``dominates`` lists the references dominated
    beyond the noise (``sigmas`` combined standard errors and the speed
    spread); ``long_claims``/``long_dominates`` the same at the long budget.
    ``val_size``: the study's validation size, for trials that did not record
    theirs (default: the one :func:`trials_frame` noted in ``trials.attrs``).
    """
    empty_cols = dict(dominates=[], claims=[], long_dominates=[], long_claims=[])
    if trials.empty:
        return trials.assign(**empty_cols)
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
        claims = claims_frame(stats, sigmas, budget)
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


# ---------------------------------------------------------------------------
# the report's view of the trials
# ---------------------------------------------------------------------------


def _constraint_values(t: optuna.trial.FrozenTrial) -> list[float]:
    """Constraint values of a trial (<= 0 is feasible)."""
    return constraint_values(t)


def report_trials_frame(study: optuna.Study) -> pd.DataFrame:
    """:func:`trials_frame` plus what the report draws.

    Adds ``groupwise_layers`` (layer indices with groups > 1, from the stored
    spec), ``parent_trial``/``pruned_ratio`` (a channel-pruned variant points at
    the trial it was pruned from), ``feasible`` (all constraints <= 0),
    ``datetime_start``/``datetime_complete`` (for the hypervolume over wall
    time) and ``kind`` (``reference``, ``pruned`` or ``trial``).
    """
    base = trials_frame(study)
    if base.empty:
        return base
    extra = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        groups = (ua.get(attrs.SPEC) or {}).get("groups") or []
        parent = ua.get(attrs.PARENT_TRIAL)
        extra.append({
            "number": t.number,
            "groupwise_layers": ",".join(f"{i}:g{g}" for i, g in enumerate(groups) if g > 1) or "none",
            "parent_trial": int(parent) if isinstance(parent, (int, float)) and not isinstance(parent, bool) else None,
            "pruned_ratio": ua.get(attrs.PRUNED_RATIO),
            "feasible": all(v <= 0 for v in _constraint_values(t)),
            "datetime_start": t.datetime_start,
            "datetime_complete": t.datetime_complete,
        })
    extra_frame = pd.DataFrame(extra)
    for c in ("datetime_start", "datetime_complete"):  # NaT, not None, where a trial has none
        extra_frame[c] = pd.to_datetime(extra_frame[c])
    # trials_frame may carry some of these already: ours (normalized) win.
    base = base.drop(columns=[c for c in extra_frame.columns if c != "number" and c in base.columns])
    out = base.merge(extra_frame, on="number", how="left")
    out.attrs.update(base.attrs)  # merge drops them: the study's val_size and prior_seed_std
    out["kind"] = [
        "reference" if isinstance(r, str) and r else ("pruned" if p is not None and not pd.isna(p) else "trial")
        for r, p in zip(out["reference"], out["parent_trial"])
    ]
    return out


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """The completed trials of a frame (an empty frame when there are none)."""
    if trials.empty or "state" not in trials:
        return trials.iloc[0:0]
    return trials[trials["state"] == "COMPLETE"]


def is_reference(trials: pd.DataFrame) -> pd.Series:
    """Which rows are paper reference trials."""
    return trials["reference"].map(lambda r: isinstance(r, str) and bool(r))


def front_table_frame(trials: pd.DataFrame, sigmas: float = 2.0) -> pd.DataFrame:
    """Front members and references, their role and the references each front member dominates.

    Built on :func:`pareto_frame` (same rows, same ``dominates`` and
    ``claims`` text) with a ``role`` column for the table and a
    ``dominated_by`` column for references (which front members beat them
    beyond the noise).
    """
    table = pareto_frame(trials, sigmas)
    if table.empty:
        return table.assign(role=[], dominated_by=[])
    front = table[table["on_front"]].sort_values("number")
    roles, beaten_by = [], []
    for _, row in table.iterrows():
        ref = isinstance(row["reference"], str) and bool(row["reference"])
        roles.append("front + reference" if ref and row["on_front"] else ("reference" if ref else "front"))
        beaten_by.append(
            ", ".join(str(int(f["number"])) for _, f in front.iterrows()
                      if str(row["reference"]) in str(f["dominates"]).split(", ")) if ref else ""
        )
    return table.assign(role=roles, dominated_by=beaten_by)


def _reason_kind(reason: str, outcome: object = None) -> str:
    """A reason as counted in the status table (:func:`repvgg_nas.lifecycle.status_reason`): by the trial's
    outcome, a rung stop without the trial that dominated it (a stop by the time budget counted apart), a
    pause by the time budget without its rung and seconds."""
    return lifecycle.status_reason(outcome, reason)


def status_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per state, with the distinct failure or prune reasons and their counts."""
    if trials.empty:
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    rows = []
    for state, group in trials.groupby("state", sort=True):
        reasons: Counter[str] = Counter()
        outcomes = group["outcome"] if "outcome" in group else [None] * len(group)
        for col in (attrs.FAIL_REASON, attrs.PRUNE_REASON):
            if col in group:
                reasons.update(_reason_kind(v, how) for v, how in zip(group[col], outcomes) if isinstance(v, str) and v)
        text = "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in reasons.most_common())
        rows.append({"state": state, "count": len(group), "reasons": text})
    return pd.DataFrame(rows, columns=list(STATUS_COLUMNS))


def empty_message(trials: pd.DataFrame) -> str | None:
    """A sentence for a study with nothing to plot (None when some trial completed)."""
    if not completed(trials).empty:
        return None
    if trials.empty:
        return "no trials yet: run the search first (python -m repvgg_nas.search --study NAME)"
    status = status_frame(trials)
    parts = []
    for _, r in status.iterrows():
        part = f"{r['count']} {str(r['state']).lower()}"
        parts.append(f"{part} ({r['reasons']})" if r["reasons"] else part)
    return "no completed trials yet: " + ", ".join(parts)
