"""The report's view of a study (data only; drawing lives in the figure modules).

:func:`report_trials_frame` adds what the report draws to the search's
trials frame (:func:`repvgg_nas.study_frames.trials_frame`, which marks the front);
:func:`front_table_frame` turns the front frame
(:func:`repvgg_nas.stats.pareto_frame`, with each front member's claims)
into the report's table; :func:`status_frame` counts trials per state with
their reasons. Each figure's frame lives beside its figure.
"""

from __future__ import annotations

from collections import Counter

import optuna
import pandas as pd

from .. import attrs, lifecycle
from ..stats import completed, pareto_frame
from ..storage import constraint_values
from ..study_frames import trials_frame

__all__ = [
    "empty_message",
    "front_table_frame",
    "report_trials_frame",
    "status_frame",
]

STATUS_COLUMNS = ("state", "count", "reasons")


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
            "feasible": all(v <= 0 for v in constraint_values(t)),
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
