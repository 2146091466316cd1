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

import optuna
import pandas as pd

from .. import attrs
from ..errors import ConfigError
from ..measure import ThroughputCache
from ..storage import redact_url
from .architecture import architecture_frame
from .frames import (
    completed, empty_message, front_table_frame, is_reference, report_trials_frame, status_frame,
)
from .hypervolume import hypervolume_frame
from .importance import empty_importance, importance_frame
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
                + f", python {env.get('python')}, {env.get('threads')} threads, {env.get('platform')}")
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or None


def _kv(d: Any) -> str:
    if isinstance(d, dict):
        return ", ".join(f"{k}={_kv(v)}" for k, v in d.items())
    if isinstance(d, (list, tuple)):
        return "[" + ", ".join(_kv(v) for v in d) + "]"
    return str(d)


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
    rows = [
        ("study", "name", study.study_name),
        ("study", "description", ua.get("description") or ""),
        ("study", "storage", redact_url(storage) if storage else ""),
        ("study", "trials", ", ".join(f"{r['count']} {str(r['state']).lower()}" for _, r in counts.iterrows()) or "none"),
        ("study", "target trials", ua.get("n_trials", "")),
        ("study", "search space", f"{ua.get(attrs.STUDY_SPACE, '?')} (hash {ua.get(attrs.STUDY_SPACE_HASH, '?')})" if space else ""),
        ("study", "sampler", f"{_kv(ua.get('sampler', {}))}, seed={ua.get('seed', '?')}" if ua.get("sampler") else ""),
        ("study", "objectives", "maximize accuracy, maximize throughput" + (
            f"; limits: {_kv(ua['objectives'])}" if ua.get("objectives") else "")),
        ("study", "references", ", ".join(map(str, ua.get("references") or [])) or "none"),
        ("measurement", "device", ", ".join(devices) or "unknown"),
        ("measurement", "settings", _kv(ua.get("measure", {}))),
        ("measurement", "measured with", _measured_with(cache_path) or "not recorded"),
        ("proxy task", "dataset", _kv(ua.get("data", {}))),
        ("proxy task", "training budget", _kv(ua.get("train", {}))),
        ("report", "software", _versions()),
        ("report", "made at", made_at.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")),
    ]
    return pd.DataFrame([dict(zip(SUMMARY_COLUMNS, (s, f, str(v)))) for s, f, v in rows], columns=list(SUMMARY_COLUMNS))


class ReportData(NamedTuple):
    """Every frame the report draws; ``message`` is set when there is nothing to plot."""

    summary: pd.DataFrame
    status: pd.DataFrame
    trials: pd.DataFrame
    front: pd.DataFrame
    links: pd.DataFrame
    hypervolume: pd.DataFrame
    importance: pd.DataFrame
    architecture: pd.DataFrame
    notes: list[str]
    message: str | None

    def frames(self) -> dict[str, pd.DataFrame]:
        """The frames by CSV name (``report_<name>.csv``)."""
        return {
            "summary": self.summary, "status": self.status, "trials": self.trials, "front": self.front,
            "pruned_links": self.links, "hypervolume": self.hypervolume, "importance": self.importance,
            "architecture": self.architecture,
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
    notes: list[str] = []
    if message is None:
        imp = importance_frame(study, importance)
        notes += imp.notes
        imp_frame = imp.frame
        if not is_reference(completed(trials)).any():
            notes.append("no paper reference trial has completed: the hypervolume plot has no baseline")
    else:
        imp_frame = empty_importance()
    return ReportData(
        summary=summary_frame(study, trials, storage=storage, cache_path=cache_path, made_at=made_at),
        status=status_frame(trials),
        trials=trials,
        front=front_table_frame(trials),
        links=pruned_links_frame(trials),
        hypervolume=hypervolume_frame(trials),
        importance=imp_frame,
        architecture=architecture_frame(trials),
        notes=notes,
        message=message,
    )
