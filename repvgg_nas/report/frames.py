"""The report's view of a study (data only; drawing lives in the figure modules).

:func:`report_trials_frame` adds what the report draws to the search's
trials frame (:func:`repvgg_nas.study_frames.trials_frame`, which marks the front);
:func:`front_table_frame` turns the front frame
(:func:`repvgg_nas.stats.pareto_frame`, with each front member's claims)
into the report's table; :func:`status_frame` counts trials per state with
their reasons, grouped by each trial's stored outcome and rung records (never
by parsing a reason). Each figure's frame lives beside its figure.
"""

from __future__ import annotations

from collections import Counter

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from .. import attrs, lifecycle
from ..lifecycle import Outcome
from ..stats import completed, pareto_frame
from ..storage import constraint_values
from ..study_frames import trials_frame
from ..records import rung_records, stop_record
from .rungs import rung_label, study_budgets

__all__ = [
    "empty_message",
    "front_table_frame",
    "report_trials_frame",
    "status_frame",
]

STATUS_COLUMNS = ("state", "count", "reasons")

# How the status table counts a pause by the time budget, whatever its rung and seconds.
PAUSED_GROUP = "paused by the time budget"


def _status_group(t: FrozenTrial, n_rungs: int) -> str | None:
    """How the status table counts the trial's end, from its outcome and rung records: a pause as one kind, a
    rung stop by its rung without the trial that dominated it (a stop by the time budget counted apart).
    None: the reason itself is the kind."""
    how = lifecycle.outcome(t)
    if how == Outcome.PAUSED:
        return PAUSED_GROUP
    if how not in (Outcome.STOPPED, Outcome.OUT_OF_TIME):
        return None
    stop = stop_record(rung_records(t.user_attrs))
    head = "stopped at " + (rung_label(stop.rung, n_rungs, stop.epochs) if stop else "a rung")
    return f"{head}: out of time" if how == Outcome.OUT_OF_TIME else head


def _n_rungs(study: optuna.Study, trials: list[FrozenTrial]) -> int:
    """The study's number of rungs (its stored budgets, else the highest rung any trial recorded)."""
    budgets = study_budgets(study)
    if budgets:
        return len(budgets)
    recorded = [r.rung for t in trials for r in rung_records(t.user_attrs)]
    return max(recorded) + 1 if recorded else 0


def report_trials_frame(study: optuna.Study) -> pd.DataFrame:
    """:func:`trials_frame` plus what the report draws.

    Adds ``groupwise_layers`` (layer indices with groups > 1, from the stored
    spec), ``parent_trial``/``pruned_ratio`` (a channel-pruned variant points at
    the trial it was pruned from), ``feasible`` (all constraints <= 0),
    ``datetime_start``/``datetime_complete`` (for the hypervolume over wall
    time), ``status_group`` (how :func:`status_frame` counts its end; None:
    by its reason) and ``kind`` (``reference``, ``pruned`` or ``trial``).
    """
    base = trials_frame(study)
    if base.empty:
        return base
    extra = []
    trials = study.get_trials(deepcopy=False)
    n_rungs = _n_rungs(study, trials)
    for t in trials:
        ua = t.user_attrs
        groups = (ua.get(attrs.SPEC) or {}).get("groups") or []
        parent = ua.get(attrs.PARENT_TRIAL)
        extra.append({
            "number": t.number,
            "groupwise_layers": ",".join(f"{i}:g{g}" for i, g in enumerate(groups) if g > 1) or "none",
            "parent_trial": int(parent) if isinstance(parent, (int, float)) and not isinstance(parent, bool) else None,
            "pruned_ratio": ua.get(attrs.PRUNED_RATIO),
            "feasible": all(v <= 0 for v in constraint_values(t)),
            "datetime_start": t.datetime_start,
            "datetime_complete": t.datetime_complete,
            "status_group": _status_group(t, n_rungs),
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


def status_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per state, with the distinct failure or prune reasons and their counts.

    ``trials``: :func:`report_trials_frame`'s, whose ``status_group`` counts
    pauses and rung stops by kind; a trial without one is counted by its reason.
    """
    if trials.empty:
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    rows = []
    for state, group in trials.groupby("state", sort=True):
        reasons: Counter[str] = Counter()
        kinds = group["status_group"] if "status_group" in group else [None] * len(group)
        for col in (attrs.FAIL_REASON, attrs.PRUNE_REASON):
            if col in group:
                reasons.update(k if isinstance(k, str) else v for v, k in zip(group[col], kinds)
                               if isinstance(v, str) and v)
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
