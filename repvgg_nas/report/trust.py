"""How far the front can be trusted: per-architecture statistics, claims beyond the noise, fidelity.

Data only (the figures draw it elsewhere). Every function takes the trials
frame (:func:`repvgg_nas.report.frames.trials_frame` rows, before the front
is marked) and returns a frame or a small NamedTuple the tests assert on.

- :func:`architecture_stats`: one row per architecture (spec hash) with the
  mean, standard deviation, count and standard error of its proxy accuracy
  over seeds, its throughput and spread, and its long-budget accuracy; the
  front is taken on *mean* accuracy.
- :func:`claims_frame`: one verdict per (front member, reference) pair.
- :func:`fidelity`: Kendall tau between proxy and long-budget accuracy.
- :func:`accuracy_floor`: the hypervolume reference accuracy.

The standard error of an architecture's mean accuracy ``p`` over ``n`` seeds::

    se = sqrt(s**2 / n + p * (1 - p) / n_val)

``s`` is the seed-to-seed standard deviation (the architecture's own when
``n >= 2``, else the study's pooled within-architecture value, else -- when
no architecture has two seeds -- the prior ``[trust] prior_seed_std``) and
``p(1-p)/n_val`` the binomial error of counting accuracy on ``n_val``
validation images, which extra seeds do not shrink (the validation set is the
same for every run). Two architectures' errors are combined as
``sqrt(se_a**2 + se_b**2)``: conservative, since runs on one validation set
err together.

The prior, :data:`PRIOR_SEED_STD` = 0.012, is the pooled seed standard
deviation of the a_family front's 3-seed repeats quoted in issue 13 (RepVGG-A0
0.693/0.699/0.703, trial 11 0.717/0.704/0.706, trial 8 0.726/0.693/0.726:
``sqrt(sum((n-1) s**2) / sum(n-1))`` = 0.0121). Without it one run per
architecture would carry no seed term at all, and a single lucky seed (the
winner's curse) would be claimed as a result; once seeds are measured, the
measured pooled value replaces it.

The claim rule (:func:`verdict`): a front member *dominates* a reference only
when its mean accuracy exceeds the reference's by more than ``sigmas``
combined standard errors and its throughput ratio minus its spread exceeds 1;
it is *as accurate, N.Nx faster* when only the speed gap is beyond the noise,
*more accurate, as fast* when only the accuracy gap is, a *trade-off* when one
is beyond the noise in its favour and the other against it, *worse* when it
loses beyond the noise without winning anything, and otherwise it *ties*.
The throughput spread of a net is the IQR of its timed repeats; a ratio
uses the lockstep re-measurement when both nets have one, else both search
figures (never one of each: they come from different stretches of time); its spread is
``ratio * sqrt((iqr_a/a)**2 + (iqr_b/b)**2)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "CLAIM_COLUMNS", "STATS_COLUMNS", "DOMINATES", "PRIOR_SEED_STD", "TIES",
    "Fidelity", "accuracy_floor", "architecture_stats", "claim_text", "claims_frame", "fidelity",
    "pareto_mask", "standard_error", "verdict",
]

DOMINATES = "dominates"
TIES = "ties"
# Seed-to-seed std of proxy accuracy assumed while no architecture has two seeds (module doc).
PRIOR_SEED_STD = 0.012

STATS_COLUMNS = (
    "spec_hash", "number", "reference", "kind", "arch", "n", "seeds", "accuracy_mean", "accuracy_std",
    "accuracy_se", "val_size", "throughput", "throughput_iqr", "throughput_source", "contended",
    "lockstep_throughput", "lockstep_iqr", "long_accuracy", "long_n", "long_epochs", "feasible", "on_front",
    "on_long_front",
)
CLAIM_COLUMNS = (
    "budget", "front", "reference", "reference_trial", "accuracy_diff", "accuracy_diff_se", "sigmas",
    "speed_ratio", "speed_ratio_spread", "verdict",
)


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v is not pd.NA


def _flag(v: Any) -> bool:
    """A recorded boolean (Python or numpy) that is set."""
    return _present(v) and bool(v)


def standard_error(mean: float, seed_sd: float, n: int, val_size: float | None) -> float:
    """``sqrt(seed_sd**2 / n + mean*(1-mean)/val_size)`` (no binomial term without a validation size)."""
    var = (seed_sd ** 2) / max(n, 1)
    if _present(val_size) and val_size and 0.0 <= mean <= 1.0:
        var += mean * (1.0 - mean) / float(val_size)
    return math.sqrt(var)


def pareto_mask(x: Any, y: Any) -> np.ndarray:
    """Which points are not dominated (both coordinates maximized; equal points both stay)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        better = (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        keep[i] = not better.any()
    return keep


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _current_long(rows: pd.DataFrame, epochs: Any) -> pd.DataFrame:
    """The long re-trainings at one budget: the study's current ``long_epochs`` when it has runs at
    it, else the longest budget run (a resume that changed ``long_epochs`` must not average budgets)."""
    if rows.empty:
        return rows
    budgets = rows["train_epochs"].astype(int)
    keep = int(epochs) if _present(epochs) and int(epochs) in set(budgets) else int(budgets.max())
    return rows[budgets == keep]


def architecture_stats(
    trials: pd.DataFrame, val_size: int | None = None, prior_seed_std: float | None = None,
) -> pd.DataFrame:
    """One row per architecture of the completed trials (see the module doc for the formulas).

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
    seeds. Both default to what :func:`~repvgg_nas.report.frames.trials_frame`
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
    done["spec_hash"] = [h if _present(h) else f"trial-{n}" for h, n in zip(_col(done, "spec_hash"), done["number"])]
    epochs = _col(done, "train_epochs")
    long_rows = _current_long(done[epochs.map(_present)], trials.attrs.get("long_epochs"))
    proxy = done[~epochs.map(_present)]
    samples = proxy[~_col(proxy, "duplicate_of").map(_present)].sort_values("number")
    # One sample per (architecture, seed): two workers that trained the same net at the same seed at once
    # (neither saw the other finish, so neither is a duplicate_of) ran one experiment, not two seeds.
    seed = _col(samples, "train_seed").map(lambda v: int(v) if _present(v) else -1)
    samples = samples[~samples.assign(_seed=seed).duplicated(subset=["spec_hash", "_seed"])]

    rows: list[dict[str, Any]] = []
    for h, group in proxy.groupby("spec_hash", sort=False):
        first = group.sort_values("number")
        own = first[~_col(first, "repeat_of").map(_present)]
        rep = (own if not own.empty else first).iloc[0]
        refs = [r for r in _col(group, "reference") if isinstance(r, str) and r]
        s = samples[samples["spec_hash"] == h]
        accs = s["accuracy"].astype(float).tolist() or [float(rep["accuracy"])]
        seeds = [int(v) if _present(v) else None for v in _col(s, "train_seed")]
        clean = group[~_col(group, "measure_contended").map(_flag)]
        pick = clean if not clean.empty else group
        thr = pick["throughput"].astype(float)
        at = (thr - thr.median()).abs().idxmin()
        iqr = _col(pick, "throughput_iqr").get(at)
        vs = [v for v in _col(group, "val_size") if _present(v)]
        lks = [(t, i, c) for t, i, c in zip(_col(group, "lockstep_throughput"), _col(group, "lockstep_iqr"),
                                            _col(group, "lockstep_contended")) if _present(t)]
        lk = {"images_per_s": lks[0][0], "images_per_s_iqr": lks[0][1], "contended": lks[0][2]} if lks else None
        lg = long_rows[long_rows["spec_hash"] == h]
        parent = rep.get("parent_trial") if "parent_trial" in rep else None
        rows.append({
            "spec_hash": h, "number": int(rep["number"]), "reference": refs[0] if refs else None,
            "kind": "reference" if refs else ("pruned" if _present(parent) else "trial"),
            "arch": rep.get("arch"), "n": len(accs),
            "seeds": ",".join("base" if v is None else str(v) for v in seeds) if seeds else "base",
            "accuracy_mean": float(np.mean(accs)),
            "accuracy_std": float(np.std(accs, ddof=1)) if len(accs) >= 2 else float("nan"),
            "accuracy_se": float("nan"), "val_size": max(vs) if vs else val_size,
            "throughput": float(thr.median()), "throughput_iqr": float(iqr) if _present(iqr) else float("nan"),
            "throughput_source": "search", "contended": clean.empty,
            "lockstep_throughput": float(lk["images_per_s"]) if lk else float("nan"),
            "lockstep_iqr": float(lk["images_per_s_iqr"]) if lk and _present(lk["images_per_s_iqr"]) else float("nan"),
            "long_accuracy": float(lg["accuracy"].astype(float).mean()) if not lg.empty else float("nan"),
            "long_n": len(lg), "long_epochs": int(lg["train_epochs"].iloc[0]) if not lg.empty else None,
        })
        rows[-1]["feasible"] = all(not _present(v) or bool(v) for v in _col(group, "feasible"))
        if lk:
            rows[-1]["throughput_source"] = "lockstep"
            rows[-1]["contended"] = _flag(lk["contended"])
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
    on_front[ok] = pareto_mask(stats.loc[ok, "accuracy_mean"], stats.loc[ok, "throughput"])
    stats["on_front"] = on_front
    has_long = stats["long_accuracy"].notna()
    on_long = np.zeros(len(stats), dtype=bool)
    has_long &= stats["feasible"].astype(bool)
    if has_long.any():
        on_long[has_long.to_numpy()] = pareto_mask(stats.loc[has_long, "long_accuracy"],
                                                   stats.loc[has_long, "throughput"])
    stats["on_long_front"] = on_long
    stats.attrs["pooled_seed_std"] = pooled
    stats.attrs["seed_std_source"] = "measured" if measured else "prior"
    return stats[list(STATS_COLUMNS)].sort_values("number").reset_index(drop=True)


def verdict(acc_diff: float, acc_se: float, ratio: float, ratio_spread: float, sigmas: float) -> str:
    """The claim a front member may make against a reference (the rule in the module doc)."""
    acc = 1 if acc_diff > sigmas * acc_se else (-1 if acc_diff < -sigmas * acc_se else 0)
    fast = 1 if ratio - ratio_spread > 1.0 else (-1 if ratio + ratio_spread < 1.0 else 0)
    if acc == 1 and fast == 1:
        return DOMINATES
    if acc == 0 and fast == 1:
        return f"as accurate, {ratio:.1f}x faster"
    if acc == 1 and fast == 0:
        return "more accurate, as fast"
    if acc * fast == -1:
        return "trade-off"
    if acc == -1 or fast == -1:
        return "worse"
    return TIES


def _has_lockstep(row: pd.Series) -> bool:
    return _present(row.get("lockstep_throughput")) and row["lockstep_throughput"] > 0


def _speed(row: pd.Series, lockstep: bool) -> tuple[float, float]:
    """(images/s, IQR) used for ratios: the lockstep figure when ``lockstep``, else the search's."""
    if lockstep:
        return float(row["lockstep_throughput"]), float(row["lockstep_iqr"]) if _present(row["lockstep_iqr"]) else 0.0
    return float(row["throughput"]), float(row["throughput_iqr"]) if _present(row["throughput_iqr"]) else 0.0


def claims_frame(stats: pd.DataFrame, sigmas: float = 2.0, budget: str = "proxy") -> pd.DataFrame:
    """One row per (front member, reference) pair with the accuracy gap +- its standard error,
    the throughput ratio +- its spread, and the :func:`verdict`.

    ``budget="long"`` compares long-budget accuracies on the long-budget front
    (the proxy's seed spread stands in for the long runs' own).
    """
    if stats.empty:
        return pd.DataFrame(columns=list(CLAIM_COLUMNS))
    long = budget == "long"
    acc_col, front_col = ("long_accuracy", "on_long_front") if long else ("accuracy_mean", "on_front")
    usable = stats[stats[acc_col].notna()]
    refs = usable[usable["reference"].map(lambda r: isinstance(r, str) and bool(r))]
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
                "verdict": verdict(diff, se, ratio, spread if _present(spread) else 0.0, sigmas),
            })
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def _seed_sd(row: pd.Series, stats: pd.DataFrame) -> float:
    if row["n"] >= 2 and _present(row["accuracy_std"]):
        return float(row["accuracy_std"])
    return float(stats.attrs.get("pooled_seed_std", 0.0))


def claim_text(c: pd.Series | Mapping[str, Any]) -> str:
    """``A0: dominates (+1.7 ± 0.8 pts, 1.31x ± 0.04x)`` (± one combined standard error / the ratio's spread)."""
    spread = c["speed_ratio_spread"]
    sp = f" ± {spread:.2f}x" if _present(spread) else ""
    return (f"{c['reference']}: {c['verdict']} ({100 * c['accuracy_diff']:+.1f} ± {100 * c['accuracy_diff_se']:.1f} pts, "
            f"{c['speed_ratio']:.2f}x{sp})")


class Fidelity(NamedTuple):
    """Kendall tau between proxy (mean) and long-budget accuracy over ``n`` architectures."""

    tau: float
    p_value: float
    n: int


def fidelity(stats: pd.DataFrame) -> Fidelity:
    """Rank agreement of the proxy with the long budget (``scipy.stats.kendalltau``, tau-b).

    NaN with fewer than two architectures trained at both budgets.
    """
    both = stats[stats["long_accuracy"].notna()] if not stats.empty else stats
    if len(both) < 2:
        return Fidelity(float("nan"), float("nan"), len(both))
    from scipy.stats import kendalltau

    res = kendalltau(both["accuracy_mean"].astype(float), both["long_accuracy"].astype(float))
    return Fidelity(float(res.statistic), float(res.pvalue), len(both))


def accuracy_floor(stats: pd.DataFrame, sigmas: float = 2.0, configured: float | None = None) -> tuple[float, str]:
    """The hypervolume reference accuracy and a sentence saying where it came from.

    The study's ``[trust] accuracy_floor`` when set; else the lowest
    reference's mean accuracy minus ``sigmas`` standard errors (a net below
    it is beyond the noise worse than every paper config); else 0.
    """
    if configured is not None:
        return float(configured), f"accuracy {configured:.4f} ([trust] accuracy_floor), 0 images/s"
    refs = stats[stats["reference"].map(lambda r: isinstance(r, str) and bool(r))] if not stats.empty else stats
    if refs.empty:
        return 0.0, "accuracy 0, 0 images/s (no reference trained)"
    low = refs.sort_values("accuracy_mean").iloc[0]
    floor = max(0.0, float(low["accuracy_mean"]) - sigmas * float(low["accuracy_se"]))
    return floor, (f"accuracy {floor:.4f} (lowest reference {low['reference']}: mean "
                   f"{low['accuracy_mean']:.4f} - {sigmas:g} x SE {low['accuracy_se']:.4f}), 0 images/s")
