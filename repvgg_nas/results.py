"""Study results as pandas frames (data only; drawing lives elsewhere).

``trials_frame`` flattens every trial (values, architecture, figures, failure
reasons); ``pareto_frame`` keeps the accuracy/throughput front plus the paper
references and says which reference each front member dominates.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pandas as pd

from .checkpoint import atomic_write

__all__ = ["trials_frame", "pareto_frame", "dominates", "write_csv", "front_numbers"]

OBJECTIVES = ("accuracy", "throughput")

_ATTR_COLUMNS = (
    "reference", "arch", "spec_hash", "params", "macs", "latency_ms", "fusion_error",
    "train_seconds", "train_images_per_s", "measure_cached", "device", "fail_reason",
    "prune_reason", "retry_of", "duplicate_of", "parent_trial", "pruned_ratio", "speedup",
)


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
        if ua.get("surplus"):  # a worker's extra trial that found every slot taken: never run
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
        row["params_m"] = ua["params"] / 1e6 if ua.get("params") is not None else None
        row["gmacs"] = ua["macs"] / 1e9 if ua.get("macs") is not None else None
        spec = ua.get("spec") or {}
        row["depths"] = "-".join(map(str, spec["depths"])) if spec.get("depths") else None
        for k in ("a", "b", "groupwise", "g"):
            row[k] = ua.get(f"arch_{k}")
        for k, v in (ua.get("phase_seconds") or {}).items():
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
