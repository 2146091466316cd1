"""One row per architecture: its mean accuracy over seeds and standard error, its throughput and spread,
its long-budget accuracy, and whether it stands on the front.

The front is taken on *mean* accuracy over seeds (:func:`architecture_stats`);
the standard errors are :mod:`.noise`'s.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ._values import column, flag, present
from .noise import PRIOR_SEED_STD, standard_error
from .pareto import extra_objectives, pareto_mask

__all__ = ["STATS_COLUMNS", "architecture_stats"]

STATS_COLUMNS = (
    "spec_hash", "number", "reference", "kind", "arch", "n", "seeds", "accuracy_mean", "accuracy_std",
    "accuracy_se", "val_size", "throughput", "throughput_iqr", "throughput_source", "contended",
    "lockstep_throughput", "lockstep_iqr", "long_accuracy", "long_n", "long_epochs", "feasible", "on_front",
    "on_long_front",
)


def _current_long(rows: pd.DataFrame, epochs: Any) -> pd.DataFrame:
    """The long re-trainings at one budget: the study's current ``long_epochs`` when it has runs at
    it, else the longest budget run (a resume that changed ``long_epochs`` must not average budgets)."""
    if rows.empty:
        return rows
    budgets = rows["train_epochs"].astype(int)
    keep = int(epochs) if present(epochs) and int(epochs) in set(budgets) else int(budgets.max())
    return rows[budgets == keep]


def architecture_stats(
    trials: pd.DataFrame, val_size: int | None = None, prior_seed_std: float | None = None,
) -> pd.DataFrame:
    """One row per architecture of the completed trials (the standard errors: :mod:`.noise`).

    Proxy-budget samples are completed trials without ``train_epochs``, less
    copies of an earlier trial (``duplicate_of``) and repeats of a seed an
    architecture already has; long-budget ones carry ``train_epochs`` (only
    those at the study's current ``long_epochs``, ``trials.attrs``, count). ``number`` is the architecture's first search (or
    pruned) trial, the one the front, tables and checkpoints name.
    ``throughput`` is the median of its clean (not contended) search figures;
    ``lockstep_*`` come from the end-of-study re-measurement (the trials
    frame's ``lockstep_throughput``/``lockstep_iqr``/``lockstep_contended``
    columns, filled from the study attr by spec hash). ``val_size`` is the
    fallback validation size for trials that did not record theirs;
    ``prior_seed_std`` the seed spread assumed while no architecture has two
    seeds. Both default to what :func:`~repvgg_nas.study_frames.trials_frame`
    put in ``trials.attrs`` (the study's), then to none / :data:`PRIOR_SEED_STD`.
    The used spread and its source are ``stats.attrs["pooled_seed_std"]`` and
    ``["seed_std_source"]`` (``"measured"`` or ``"prior"``).
    """
    if val_size is None:
        val_size = trials.attrs.get("val_size")
    if prior_seed_std is None:
        prior_seed_std = trials.attrs.get("prior_seed_std", PRIOR_SEED_STD)
    if trials.empty or "state" not in trials:
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    done = trials[(trials["state"] == "COMPLETE") & trials["accuracy"].notna()].copy()
    if done.empty:
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    done["spec_hash"] = [h if present(h) else f"trial-{n}" for h, n in zip(column(done, "spec_hash"), done["number"])]
    epochs = column(done, "train_epochs")
    long_rows = _current_long(done[epochs.map(present)], trials.attrs.get("long_epochs"))
    proxy = done[~epochs.map(present)]
    samples = proxy[~column(proxy, "duplicate_of").map(present)].sort_values("number")
    # One sample per (architecture, seed): two workers that trained the same net at the same seed at once
    # (neither saw the other finish, so neither is a duplicate_of) ran one experiment, not two seeds.
    seed = column(samples, "train_seed").map(lambda v: int(v) if present(v) else -1)
    samples = samples[~samples.assign(_seed=seed).duplicated(subset=["spec_hash", "_seed"])]

    extra = extra_objectives(trials)
    rows: list[dict[str, Any]] = []
    for h, group in proxy.groupby("spec_hash", sort=False):
        first = group.sort_values("number")
        own = first[~column(first, "repeat_of").map(present)]
        rep = (own if not own.empty else first).iloc[0]
        refs = [r for r in column(group, "reference") if isinstance(r, str) and r]
        s = samples[samples["spec_hash"] == h]
        accs = s["accuracy"].astype(float).tolist() or [float(rep["accuracy"])]
        seeds = [int(v) if present(v) else None for v in column(s, "train_seed")]
        clean = group[~column(group, "measure_contended").map(flag)]
        pick = clean if not clean.empty else group
        thr = pick["throughput"].astype(float)
        at = (thr - thr.median()).abs().idxmin()
        iqr = column(pick, "throughput_iqr").get(at)
        vs = [v for v in column(group, "val_size") if present(v)]
        lks = [(t, i, c) for t, i, c in zip(column(group, "lockstep_throughput"), column(group, "lockstep_iqr"),
                                            column(group, "lockstep_contended")) if present(t)]
        lk = {"images_per_s": lks[0][0], "images_per_s_iqr": lks[0][1], "contended": lks[0][2]} if lks else None
        lg = long_rows[long_rows["spec_hash"] == h]
        parent = rep.get("parent_trial") if "parent_trial" in rep else None
        rows.append({
            "spec_hash": h, "number": int(rep["number"]), "reference": refs[0] if refs else None,
            "kind": "reference" if refs else ("pruned" if present(parent) else "trial"),
            "arch": rep.get("arch"), "n": len(accs),
            "seeds": ",".join("base" if v is None else str(v) for v in seeds) if seeds else "base",
            "accuracy_mean": float(np.mean(accs)),
            "accuracy_std": float(np.std(accs, ddof=1)) if len(accs) >= 2 else float("nan"),
            "accuracy_se": float("nan"), "val_size": max(vs) if vs else val_size,
            "throughput": float(thr.median()), "throughput_iqr": float(iqr) if present(iqr) else float("nan"),
            "throughput_source": "search", "contended": clean.empty,
            "lockstep_throughput": float(lk["images_per_s"]) if lk else float("nan"),
            "lockstep_iqr": float(lk["images_per_s_iqr"]) if lk and present(lk["images_per_s_iqr"]) else float("nan"),
            "long_accuracy": float(lg["accuracy"].astype(float).mean()) if not lg.empty else float("nan"),
            "long_n": len(lg), "long_epochs": int(lg["train_epochs"].iloc[0]) if not lg.empty else None,
        })
        for o in extra:  # deterministic per net (peak memory): the median of its runs is its value
            vals = [float(v) for v in column(group, o.column) if present(v)]
            rows[-1][o.column] = float(np.median(vals)) if vals else float("nan")
        rows[-1]["feasible"] = all(not present(v) or bool(v) for v in column(group, "feasible"))
        if lk:
            rows[-1]["throughput_source"] = "lockstep"
            rows[-1]["contended"] = flag(lk["contended"])
    stats = pd.DataFrame(rows)
    multi = stats[stats["n"] >= 2]
    dof = float((multi["n"] - 1).sum())
    measured = dof > 0
    pooled = (math.sqrt(float(((multi["n"] - 1) * multi["accuracy_std"] ** 2).sum()) / dof) if measured
              else float(prior_seed_std if prior_seed_std is not None else PRIOR_SEED_STD))
    stats["accuracy_se"] = [
        standard_error(m, sd if n >= 2 else pooled, n, v)
        for m, sd, n, v in zip(stats["accuracy_mean"], stats["accuracy_std"], stats["n"], stats["val_size"])
    ]
    ok = stats["feasible"].to_numpy(dtype=bool)
    on_front = np.zeros(len(stats), dtype=bool)
    others = [o.sign * stats[o.column].astype(float) for o in extra]  # every coordinate maximized
    on_front[ok] = pareto_mask(stats.loc[ok, "accuracy_mean"], stats.loc[ok, "throughput"], *[c[ok] for c in others])
    stats["on_front"] = on_front
    has_long = stats["long_accuracy"].notna()
    on_long = np.zeros(len(stats), dtype=bool)
    has_long &= stats["feasible"].astype(bool)
    if has_long.any():
        on_long[has_long.to_numpy()] = pareto_mask(stats.loc[has_long, "long_accuracy"],
                                                   stats.loc[has_long, "throughput"], *[c[has_long] for c in others])
    stats["on_long_front"] = on_long
    stats.attrs["pooled_seed_std"] = pooled
    stats.attrs["seed_std_source"] = "measured" if measured else "prior"
    return stats[[*STATS_COLUMNS, *(o.column for o in extra)]].sort_values("number").reset_index(drop=True)
