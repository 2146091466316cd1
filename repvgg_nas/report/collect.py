"""Every frame of the report from one read of the study, and the report's header.

Each figure of ``python -m repvgg_nas.report`` is drawn from one frame
(DESIGN convention 5), so tests assert on numbers, not pixels, and every
frame is exported as CSV next to the page.
"""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
import pandas as pd

from .. import attrs
from ..errors import ConfigError
from ..measure import RUNTIMES, ThroughputCache
from ..measure.runtimes import DEFAULT_RUNTIME
from ..storage import redact_url
from .architecture import architecture_frame
from .pool import pool_frame
from .fidelity import fidelity_frame
from ..stats import (
    CLAIM_COLUMNS, Fidelity, architecture_stats, claims_frame, completed, fidelity, hypervolume_frame,
    hypervolume_time_frame, is_reference, equivalence_sigmas,
)
from ..study_frames import study_equivalence, study_hypervolume_reference, study_objectives, study_sigmas
from .frames import empty_message, front_table_frame, report_trials_frame, status_frame
from .importance import empty_importance, importance_frame
from .rungs import rungs_frame, study_budgets
from .scatter import pruned_links_frame

__all__ = ["ReportData", "collect_report_data", "summary_frame"]

SUMMARY_COLUMNS = ("section", "field", "value")


def _versions() -> str:
    out = [f"python {platform.python_version()}"]
    for dist in ("repvgg-nas", "optuna", "torch", "pandas", "plotly"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def _measured_with(cache_path: Path | None) -> str | None:
    """Software and hardware the throughputs were measured with, read from the search's cache."""
    if cache_path is None or not cache_path.is_file():
        return None
    try:
        measurements = ThroughputCache(cache_path).measurements()
    except (ConfigError, TypeError, ValueError):  # unreadable, another format or a foreign entry
        return None
    seen = []
    for m in measurements:
        env = m.env
        if not isinstance(env, dict) or not env:
            continue
        text = (f"{env.get('device_name')}: torch {env.get('torch')}"
                + (f", CUDA {env.get('cuda')}" if env.get("device") not in (None, "cpu") and env.get("cuda") else "")
                + (f", onnxruntime {env['onnxruntime']}" if env.get("onnxruntime") else "")
                + f", python {env.get('python')}, {env.get('threads')} threads, {env.get('platform')}")
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or None


def _runtime(measure: dict[str, Any]) -> str:
    """``runtime, precision`` of the throughput (and, when quantized, of the accuracy objective)."""
    name = measure.get("runtime", DEFAULT_RUNTIME)
    if name not in RUNTIMES:
        return f"{name} (unknown runtime)"
    rt = RUNTIMES.get(name)
    text = f"{rt.name}, {rt.precision or measure.get('dtype', 'fp32')}"
    if rt.quantized:
        text += f" (accuracy is the {rt.precision} net's; the fp32 net's is in {attrs.FLOAT_ACCURACY})"
    return text


def _kv(d: Any) -> str:
    if isinstance(d, dict):
        return ", ".join(f"{k}={_kv(v)}" for k, v in d.items())
    if isinstance(d, (list, tuple)):
        return "[" + ", ".join(_kv(v) for v in d) + "]"
    return str(d)


def _trust_rows(study: optuna.Study, trials: pd.DataFrame) -> list[tuple[str, str, Any]]:
    """The report header's ``trust`` section: repeats, claim rule, lockstep re-measurement, fidelity."""
    ua = study.user_attrs
    trust = ua.get(attrs.STUDY_TRUST) or {}
    sigmas = study_sigmas(study)
    stats = architecture_stats(trials)
    rows: list[tuple[str, str, Any]] = [
        ("trust", "seeds per architecture", f"{trust.get('seeds', 1)} (front and references; the front is taken "
         f"on mean accuracy)"),
        ("trust", "claim rule", f"dominates = accuracy gap > {sigmas:g} combined standard errors and speed ratio "
         f"beyond its measured spread; as accurate = the gap ± {equivalence_sigmas(sigmas):.2f} combined standard errors (two one-sided tests "
         f"at the same error rate) inside "
         f"± {100 * study_equivalence(study):g} pts ([trust] equivalence_points), else inconclusive on accuracy"),
    ]
    if not stats.empty:
        src = " (prior: no architecture has two seeds; [trust] prior_seed_std)" \
            if stats.attrs.get("seed_std_source") == "prior" else ""
        rows.append(("trust", "pooled seed std", f"{stats.attrs.get('pooled_seed_std', 0.0):.4f}{src}"))
        flagged = trials[trials["measure_contended"].map(lambda v: isinstance(v, (bool, np.bool_)) and bool(v))] \
            if "measure_contended" in trials else trials.iloc[0:0]
        bad = stats[stats["contended"].astype(bool)]
        rows.append(("trust", "contended measurements", (
            ", ".join(f"trial {int(n)}" for n in flagged["number"]) or "none")
            + (f" (no clean figure for trial(s) {', '.join(str(int(n)) for n in bad['number'])})" if len(bad) else "")))
    lock = ua.get(attrs.STUDY_LOCKSTEP)
    if isinstance(lock, dict) and lock.get("at"):
        load = lock.get("other_load")
        rows.append(("trust", "lockstep re-measurement", (
            f"{len(lock.get('archs', {}))} nets at {lock['at']}, other load "
            f"{'unknown' if load is None else f'{float(load):.0%}'}"
            + ("; CONTENDED: ratios are suspect" if lock.get("contended") else ""))))
    else:
        rows.append(("trust", "lockstep re-measurement", "not done (ratios use the search's own measurements)"))
    if trust.get("long_epochs"):
        fid = fidelity(stats) if not stats.empty else Fidelity(float("nan"), float("nan"), 0)
        rows.append(("trust", "proxy fidelity", f"Kendall tau {fid.tau:+.3f} (p {fid.p_value:.2g}) between proxy and "
                     f"{trust['long_epochs']}-epoch accuracy over {fid.n} architectures" if fid.n >= 2
                     else "fewer than 2 architectures re-trained at the long budget yet"))
    point = study_hypervolume_reference(study, trials)[1]
    rows.append(("trust", "hypervolume reference point", point))
    return rows


def _fidelity_rows(study: optuna.Study) -> list[tuple[str, str, Any]]:
    """The header's multi-fidelity row (none for a single-fidelity study)."""
    budgets = study_budgets(study)
    if not budgets:
        return []
    fid = study.user_attrs.get(attrs.STUDY_FIDELITY) or {}
    how = ", ".join(f"{k} {fid[k]}" for k in ("reduction_factor", "mode", "stop_sigmas") if fid.get(k))  # 0: unset
    return [("proxy task", "multi-fidelity", f"{len(budgets)} rungs of {', '.join(map(str, budgets))} epochs"
             + (f" ({how})" if how else "") + "; a candidate climbs while no result at its rung dominates it (and, with a time budget, while its "
             "next rung fits in it)")]


def _resolution(side: Any, meaning: str) -> str:
    return f"{side}x{side} px ({meaning})" if side else "not recorded"


def summary_frame(
    study: optuna.Study,
    trials: pd.DataFrame,
    *,
    storage: str | None = None,
    cache_path: Path | None = None,
    made_at: _dt.datetime | None = None,
) -> pd.DataFrame:
    """The report header as (section, field, value) rows: what was searched, how, on what.

    Everything comes from the study's own user attrs (the study config stored
    at creation) and its trials, so any Optuna storage is enough to rebuild it.
    Values are plain text; the page escapes them.
    """
    ua = study.user_attrs
    made_at = made_at or _dt.datetime.now(_dt.timezone.utc)
    devices = sorted({str(d) for d in trials.get("device", pd.Series(dtype=object)) if isinstance(d, str) and d})
    counts = status_frame(trials)
    space = ua.get(attrs.STUDY_SPACE)
    stored = ua.get(attrs.STUDY_OBJECTIVES)
    limits = {k: v for k, v in stored.items() if k != "extra"} if isinstance(stored, dict) else {}
    rows = [
        ("study", "name", study.study_name),
        ("study", "description", ua.get(attrs.STUDY_DESCRIPTION) or ""),
        ("study", "storage", redact_url(storage) if storage else ""),
        ("study", "trials", ", ".join(f"{r['count']} {str(r['state']).lower()}" for _, r in counts.iterrows()) or "none"),
        ("study", "target trials", ua.get(attrs.STUDY_N_TRIALS, "")),
        ("study", "search space", f"{ua.get(attrs.STUDY_SPACE, '?')} (hash {ua.get(attrs.STUDY_SPACE_HASH, '?')})" if space else ""),
        ("study", "sampler", f"{_kv(ua.get(attrs.STUDY_SAMPLER, {}))}, seed={ua.get(attrs.STUDY_SEED, '?')}" if ua.get(attrs.STUDY_SAMPLER) else ""),
        ("study", "objectives", ", ".join(f"{o.direction} {o.name}" for o in study_objectives(study)) + (
            f"; limits: {_kv(limits)}" if limits else "")),
        ("study", "references", ", ".join(map(str, ua.get(attrs.STUDY_REFERENCES) or [])) or "none"),
        ("measurement", "device", ", ".join(devices) or "unknown"),
        ("measurement", "runtime", _runtime(ua.get(attrs.STUDY_MEASURE) or {})),
        ("measurement", "settings", _kv(ua.get(attrs.STUDY_MEASURE, {}))),
        ("measurement", "deployment resolution", _resolution((ua.get(attrs.STUDY_MEASURE) or {}).get("resolution"),
                                                             "throughput, params and MACs are at this input size")),
        ("measurement", "measured with", _measured_with(cache_path) or "not recorded"),
        ("proxy task", "dataset", _kv(ua.get(attrs.STUDY_DATA, {}))),
        ("proxy task", "training resolution", _resolution((ua.get(attrs.STUDY_DATA) or {}).get("resolution"),
                                                          "images are resized to it for training and accuracy")),
        ("proxy task", "training budget", _kv(ua.get(attrs.STUDY_TRAIN, {}))),
        *_fidelity_rows(study),
        *_trust_rows(study, trials),
        ("report", "software", _versions()),
        ("report", "made at", made_at.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")),
    ]
    return pd.DataFrame([dict(zip(SUMMARY_COLUMNS, (s, f, str(v)))) for s, f, v in rows], columns=list(SUMMARY_COLUMNS))


class ReportData(NamedTuple):
    """Every frame the report draws; ``message`` is set when there is nothing to plot.

    ``budgets``: epochs of each rung of a multi-fidelity study (empty: single-fidelity, no rung figure).
    """

    summary: pd.DataFrame
    status: pd.DataFrame
    trials: pd.DataFrame
    front: pd.DataFrame
    links: pd.DataFrame
    hypervolume: pd.DataFrame
    hypervolume_time: pd.DataFrame
    importance: pd.DataFrame
    architecture: pd.DataFrame
    claims: pd.DataFrame
    fidelity: pd.DataFrame
    rungs: pd.DataFrame
    budgets: tuple[int, ...]
    notes: list[str]
    message: str | None
    pool: pd.DataFrame | None = None  # the pre-screened pool (None or empty: a blind search)

    def frames(self) -> dict[str, pd.DataFrame]:
        """The frames by CSV name (``report_<name>.csv``)."""
        return {
            "summary": self.summary, "status": self.status, "trials": self.trials, "front": self.front,
            "pruned_links": self.links, "hypervolume": self.hypervolume, "hypervolume_time": self.hypervolume_time,
            "importance": self.importance, "architecture": self.architecture, "claims": self.claims,
            "fidelity": self.fidelity, **({"rungs": self.rungs} if self.budgets else {}),
            **({"pool": self.pool} if self.pool is not None and not self.pool.empty else {}),
        }


def collect_report_data(
    study: optuna.Study,
    *,
    storage: str | None = None,
    importance: str = "ped-anova",
    cache_path: Path | None = None,
    made_at: _dt.datetime | None = None,
) -> ReportData:
    """Build every frame of the report from one read of the study."""
    trials = report_trials_frame(study)
    message = empty_message(trials)
    sigmas = study_sigmas(study)
    stats = architecture_stats(trials)
    equivalence = study_equivalence(study)
    claims = pd.concat([claims_frame(stats, sigmas, b, equivalence) for b in ("proxy", "long")], ignore_index=True) \
        if not stats.empty else pd.DataFrame(columns=list(CLAIM_COLUMNS))
    notes: list[str] = []
    budgets = study_budgets(study)
    rungs = rungs_frame(study, budgets)
    point = study_hypervolume_reference(study, trials)[0]
    if message is None:
        imp = importance_frame(study, importance)
        notes += imp.notes
        imp_frame = imp.frame
        if not is_reference(completed(trials)).any():
            notes.append("no paper reference trial has completed: the hypervolume plot has no baseline")
        if budgets and rungs.empty:
            notes.append("no candidate has finished a rung yet: the rung figure is empty")
    else:
        imp_frame = empty_importance()
    return ReportData(
        summary=summary_frame(study, trials, storage=storage, cache_path=cache_path, made_at=made_at),
        status=status_frame(trials),
        trials=trials,
        front=front_table_frame(trials, sigmas),
        links=pruned_links_frame(trials),
        hypervolume=hypervolume_frame(trials, point),
        hypervolume_time=hypervolume_time_frame(trials, point),
        importance=imp_frame,
        architecture=architecture_frame(trials),
        claims=claims,
        fidelity=fidelity_frame(trials),
        rungs=rungs,
        budgets=budgets,
        notes=notes,
        message=message,
        pool=pool_frame(study, trials),
    )
