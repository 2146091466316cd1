"""Study results as pandas frames (data only; drawing lives in the figure modules).

``trials_frame`` flattens every trial (values, architecture, figures, failure
reasons); ``pareto_frame`` keeps the accuracy/throughput front plus the paper
references and says which reference each front member dominates. The
report's own frames (``report_trials_frame``, ``front_table_frame``,
``status_frame``) build on them; each figure's frame lives beside its figure.

Both objectives (proxy accuracy, measured images/s) are maximized.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd

from .. import attrs
from ..files import atomic_write

__all__ = [
    "OBJECTIVES",
    "dominates",
    "empty_message",
    "front_numbers",
    "front_table_frame",
    "pareto_frame",
    "report_trials_frame",
    "status_frame",
    "trials_frame",
    "write_csv",
]

OBJECTIVES = ("accuracy", "throughput")

# Trial user attrs copied into columns of the same name.
_ATTR_COLUMNS = (
    attrs.REFERENCE, attrs.ARCH, attrs.SPEC_HASH, attrs.PARAMS, attrs.MACS, attrs.LATENCY_MS, attrs.FUSION_ERROR,
    attrs.TRAIN_SECONDS, attrs.TRAIN_IMAGES_PER_S, attrs.MEASURE_CACHED, attrs.DEVICE, attrs.FAIL_REASON,
    attrs.PRUNE_REASON, attrs.RETRY_OF, attrs.DUPLICATE_OF, attrs.PARENT_TRIAL, attrs.PRUNED_RATIO, attrs.SPEEDUP,
)
STATUS_COLUMNS = ("state", "count", "reasons")

# ---------------------------------------------------------------------------
# trials and the front
# ---------------------------------------------------------------------------


def dominates(a: pd.Series | dict, b: pd.Series | dict) -> bool:
    """True when ``a`` is at least as good in both objectives and better in one."""
    ge = all(a[k] >= b[k] for k in OBJECTIVES)
    gt = any(a[k] > b[k] for k in OBJECTIVES)
    return ge and gt


def front_numbers(study: optuna.Study) -> set[int]:
    """Trial numbers on the (feasible) Pareto front of a two-objective study."""
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return set()
    return {t.number for t in study.best_trials}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, objectives, architecture, figures and reasons (surplus trials left out)."""
    front = front_numbers(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if ua.get(attrs.SURPLUS):  # a worker's extra trial that found every slot taken: never run
            continue
        row = {
            "number": t.number,
            "state": t.state.name,
            "accuracy": t.values[0] if t.values else None,
            "throughput": t.values[1] if t.values else None,
            "on_front": t.number in front,
        }
        for k in _ATTR_COLUMNS:
            row[k] = ua.get(k)
        row["params_m"] = ua[attrs.PARAMS] / 1e6 if ua.get(attrs.PARAMS) is not None else None
        row["gmacs"] = ua[attrs.MACS] / 1e9 if ua.get(attrs.MACS) is not None else None
        spec = ua.get(attrs.SPEC) or {}
        row["depths"] = "-".join(map(str, spec["depths"])) if spec.get("depths") else None
        for k in ("a", "b", "groupwise", "g"):
            row[k] = ua.get(attrs.arch_key(k))
        for k, v in (ua.get(attrs.PHASE_SECONDS) or {}).items():
            row[f"t_{k}"] = v
        row["duration_s"] = t.duration.total_seconds() if t.duration is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Front members and references, with the references each front member dominates."""
    if trials.empty:
        return trials.assign(dominates=[])
    done = trials[trials["state"] == "COMPLETE"]
    refs = done[done["reference"].notna()]
    keep = done[done["on_front"] | done["reference"].notna()].copy()
    keep["dominates"] = [
        ", ".join(str(r["reference"]) for _, r in refs.iterrows() if dominates(row, r))
        for _, row in keep.iterrows()
    ]
    return keep.sort_values("throughput", ascending=False).reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Atomic CSV write (a reader never sees half a file)."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


# ---------------------------------------------------------------------------
# the report's view of the trials
# ---------------------------------------------------------------------------


def _constraint_values(t: optuna.trial.FrozenTrial) -> list[float]:
    """Constraint values of a trial (<= 0 is feasible), from Optuna 5 or 4 storage."""
    c = getattr(t, "constraints", None)
    if c is None:
        c = t.system_attrs.get("constraints")
    if isinstance(c, dict):
        return [float(v) for v in c.values()]
    return [float(v) for v in (c or ())]


def report_trials_frame(study: optuna.Study) -> pd.DataFrame:
    """:func:`trials_frame` plus what the report draws.

    Adds ``groupwise_layers`` (layer indices with groups > 1, from the stored
    spec), ``parent_trial``/``pruned_ratio`` (a channel-pruned variant points at
    the trial it was pruned from), ``feasible`` (all constraints <= 0) and
    ``kind`` (``reference``, ``pruned`` or ``trial``).
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
        })
    extra_frame = pd.DataFrame(extra)
    # trials_frame may carry some of these already: ours (normalized) win.
    base = base.drop(columns=[c for c in extra_frame.columns if c != "number" and c in base.columns])
    out = base.merge(extra_frame, on="number", how="left")
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


def front_table_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Front members and references, their role and the references each front member dominates.

    Built on :func:`pareto_frame` (same rows, same ``dominates`` text) with a
    ``role`` column for the table and a ``dominated_by`` column for
    references (which front members beat them).
    """
    table = pareto_frame(trials)
    if table.empty:
        return table.assign(role=[], dominated_by=[])
    front = table[table["on_front"]].sort_values("number")
    roles, beaten_by = [], []
    for _, row in table.iterrows():
        ref = isinstance(row["reference"], str) and bool(row["reference"])
        roles.append("front + reference" if ref and row["on_front"] else ("reference" if ref else "front"))
        beaten_by.append(
            ", ".join(str(int(f["number"])) for _, f in front.iterrows() if dominates(f, row)) if ref else ""
        )
    return table.assign(role=roles, dominated_by=beaten_by)


def status_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per state, with the distinct failure or prune reasons and their counts."""
    if trials.empty:
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    rows = []
    for state, group in trials.groupby("state", sort=True):
        reasons: Counter[str] = Counter()
        for col in (attrs.FAIL_REASON, attrs.PRUNE_REASON):
            if col in group:
                reasons.update(str(v) for v in group[col] if isinstance(v, str) and v)
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
