"""The data behind every figure of the HTML report, as pandas frames.

Each figure of ``python -m repvgg_nas.report`` is drawn from one frame built
here (DESIGN convention 5), so tests assert on numbers, not pixels, and every
frame is exported as CSV next to the page. Nothing here imports plotly.

Both objectives (proxy accuracy, measured images/s) are maximized.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import pandas as pd

from .errors import ConfigError
from .registry import Registry
from .results import OBJECTIVES, dominates, pareto_frame, trials_frame

__all__ = [
    "IMPORTANCE_EVALUATORS",
    "ImportanceResult",
    "ReportData",
    "architecture_frame",
    "collect_report_data",
    "empty_message",
    "front_table_frame",
    "hypervolume_2d",
    "hypervolume_frame",
    "importance_frame",
    "pruned_links_frame",
    "report_trials_frame",
    "status_frame",
    "summary_frame",
]

TrialState = optuna.trial.TrialState

# Columns of the frames that may come out empty: a CSV always has its header.
HYPERVOLUME_COLUMNS = ("number", "hypervolume", "references_hypervolume", "front_size")
IMPORTANCE_COLUMNS = ("objective", "param", "importance", "evaluator")
LINK_COLUMNS = (
    "parent", "child", "pruned_ratio", "parent_accuracy", "parent_throughput",
    "child_accuracy", "child_throughput",
)
SUMMARY_COLUMNS = ("section", "field", "value")
STATUS_COLUMNS = ("state", "count", "reasons")

# ---------------------------------------------------------------------------
# trials
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
    """:func:`repvgg_nas.results.trials_frame` plus what the report draws.

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
        groups = (ua.get("spec") or {}).get("groups") or []
        parent = ua.get("parent_trial")
        extra.append({
            "number": t.number,
            "groupwise_layers": ",".join(f"{i}:g{g}" for i, g in enumerate(groups) if g > 1) or "none",
            "parent_trial": int(parent) if isinstance(parent, (int, float)) and not isinstance(parent, bool) else None,
            "pruned_ratio": ua.get("pruned_ratio"),
            "feasible": all(v <= 0 for v in _constraint_values(t)),
        })
    extra_frame = pd.DataFrame(extra)
    # results.trials_frame may carry some of these already: ours (normalized) win.
    base = base.drop(columns=[c for c in extra_frame.columns if c != "number" and c in base.columns])
    out = base.merge(extra_frame, on="number", how="left")
    out["kind"] = [
        "reference" if isinstance(r, str) and r else ("pruned" if p is not None and not pd.isna(p) else "trial")
        for r, p in zip(out["reference"], out["parent_trial"])
    ]
    return out


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    if trials.empty or "state" not in trials:
        return trials.iloc[0:0]
    return trials[trials["state"] == "COMPLETE"]


def _is_reference(trials: pd.DataFrame) -> pd.Series:
    return trials["reference"].map(lambda r: isinstance(r, str) and bool(r))


def front_table_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Front members and references, their role and the references each front member dominates.

    Built on :func:`repvgg_nas.results.pareto_frame` (same rows, same
    ``dominates`` text) with a ``role`` column for the table and a
    ``dominated_by`` column for references (which front members beat them).
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


def pruned_links_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per completed pruned variant whose parent trial completed: the line to draw."""
    done = _completed(trials)
    if done.empty or "parent_trial" not in done:
        return pd.DataFrame(columns=list(LINK_COLUMNS))
    by_number = done.set_index("number")
    rows = []
    for _, child in done[done["parent_trial"].notna()].iterrows():
        parent = int(child["parent_trial"])
        if parent not in by_number.index:
            continue
        p = by_number.loc[parent]
        rows.append({
            "parent": parent, "child": int(child["number"]), "pruned_ratio": child["pruned_ratio"],
            "parent_accuracy": p["accuracy"], "parent_throughput": p["throughput"],
            "child_accuracy": child["accuracy"], "child_throughput": child["throughput"],
        })
    return pd.DataFrame(rows, columns=list(LINK_COLUMNS))


def architecture_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Architecture dimensions of every completed searched trial (pruned variants left out).

    One ``depth<i>`` column per stage plus ``a``, ``b``, ``g``, the groupwise
    pattern and how many layers it makes groupwise. Pruned variants are left
    out: their per-layer widths are not points of the search space.
    """
    done = _completed(trials)
    if "kind" in done:
        done = done[done["kind"] != "pruned"]
    rows = []
    for _, r in done.iterrows():
        row: dict[str, Any] = {"number": int(r["number"])}
        depths = str(r["depths"]).split("-") if isinstance(r.get("depths"), str) else []
        for i, d in enumerate(depths):
            row[f"depth{i}"] = int(d)
        gw = r.get("groupwise_layers")
        row.update({
            "a": r.get("a"), "b": r.get("b"), "groupwise": r.get("groupwise"), "g": r.get("g"),
            "n_groupwise_layers": 0 if gw in (None, "none") or pd.isna(gw) else len(str(gw).split(",")),
            "params_m": r.get("params_m"), "accuracy": r["accuracy"], "throughput": r["throughput"],
            "on_front": bool(r["on_front"]), "reference": r.get("reference"),
        })
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# hypervolume
# ---------------------------------------------------------------------------


def hypervolume_2d(points: Iterable[Sequence[float]], reference: Sequence[float] = (0.0, 0.0)) -> float:
    """Exact area dominated by ``points`` (both coordinates maximized) above ``reference``.

    Optuna 5 has no public hypervolume function (``optuna._hypervolume`` is
    private and may change), and two objectives need only a sweep: sort by the
    first coordinate, descending, and add the strip each point raises the
    second coordinate by.
    """
    rx, ry = float(reference[0]), float(reference[1])
    pts = sorted(((float(x), float(y)) for x, y in points if x > rx and y > ry), reverse=True)
    area, top = 0.0, ry
    for x, y in pts:
        if y > top:
            area += (x - rx) * (y - top)
            top = y
    return area


def hypervolume_frame(trials: pd.DataFrame, reference: Sequence[float] = (0.0, 0.0)) -> pd.DataFrame:
    """Hypervolume of the front after each completed trial, beside the references-only front.

    Like ``optuna.visualization.plot_hypervolume_history``: completed trials in
    number order; an infeasible trial repeats the previous value. The reference
    point (0 accuracy, 0 images/s) is fixed, so values from different runs of
    a study compare. ``references_hypervolume`` is the area of the paper
    references' own front: the baseline a search has to beat.
    """
    done = _completed(trials)
    if done.empty:
        return pd.DataFrame(columns=list(HYPERVOLUME_COLUMNS))
    done = done.sort_values("number")
    feasible = done["feasible"] if "feasible" in done else pd.Series(True, index=done.index)
    refs = done[_is_reference(done) & feasible]
    ref_hv = hypervolume_2d(zip(refs["accuracy"], refs["throughput"]), reference) if len(refs) else float("nan")
    rows: list[dict[str, Any]] = []
    front: list[dict[str, float]] = []  # distinct non-dominated points so far
    for (_, r), ok in zip(done.iterrows(), feasible):
        p = {"accuracy": float(r["accuracy"]), "throughput": float(r["throughput"])}
        if ok and not any(q == p or dominates(q, p) for q in front):
            front = [q for q in front if not dominates(p, q)] + [p]
        rows.append({
            "number": int(r["number"]),
            "hypervolume": hypervolume_2d(((q["accuracy"], q["throughput"]) for q in front), reference),
            "references_hypervolume": ref_hv, "front_size": len(front),
        })
    return pd.DataFrame(rows, columns=list(HYPERVOLUME_COLUMNS))


# ---------------------------------------------------------------------------
# parameter importance
# ---------------------------------------------------------------------------


def _sklearn_evaluator(cls: Callable[..., optuna.importance.BaseImportanceEvaluator]) -> Callable[[], Any]:
    def make() -> optuna.importance.BaseImportanceEvaluator:
        try:
            return cls(seed=0)
        except ImportError:
            raise ConfigError(f"importance evaluator {cls.__name__} needs scikit-learn: pip install scikit-learn") from None

    return make


IMPORTANCE_EVALUATORS: Registry[Callable[[], optuna.importance.BaseImportanceEvaluator]] = Registry(
    "importance evaluator"
)
IMPORTANCE_EVALUATORS.register("ped-anova", optuna.importance.PedAnovaImportanceEvaluator)
IMPORTANCE_EVALUATORS.register("fanova", _sklearn_evaluator(optuna.importance.FanovaImportanceEvaluator))
IMPORTANCE_EVALUATORS.register("mdi", _sklearn_evaluator(optuna.importance.MeanDecreaseImpurityImportanceEvaluator))


class ImportanceResult(NamedTuple):
    """Importances (long format: one row per objective and parameter) and why any are missing."""

    frame: pd.DataFrame
    notes: list[str]


def importance_frame(study: optuna.Study, evaluator: str = "ped-anova") -> ImportanceResult:
    """Optuna's parameter importance for each objective, or a note saying why there is none.

    Pruned variants are left out (their figures come from pruning, not from
    their parameters). Targets are negated because PED-ANOVA ranks what it
    takes to reach *low* values and both objectives are maximized; the other
    evaluators measure variance, which the sign does not change.
    """
    make = IMPORTANCE_EVALUATORS.get(evaluator)
    name = IMPORTANCE_EVALUATORS.canonical(evaluator)
    searched = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("parent_trial") is None
    ]
    empty = pd.DataFrame(columns=list(IMPORTANCE_COLUMNS))
    if len(searched) < 2:
        return ImportanceResult(empty, [f"parameter importance needs at least 2 completed trials; this study has {len(searched)}"])
    if not any(t.params for t in searched):
        return ImportanceResult(empty, ["parameter importance: the search space has no free parameters"])
    # A private in-memory copy holding only searched trials, so the evaluator sees nothing else.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        sub = optuna.create_study(directions=study.directions, study_name="importance")
    finally:
        optuna.logging.set_verbosity(verbosity)
    sub.add_trials(searched)
    rows, notes = [], []
    for i, objective in enumerate(OBJECTIVES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    sub, evaluator=make(), target=lambda t, i=i: -t.values[i]
                )
        except ConfigError:
            raise
        except Exception as e:  # too few distinct values, degenerate targets, ...
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            notes.append(f"parameter importance for {objective} could not be computed: {first}")
            continue
        rows += [{"objective": objective, "param": p, "importance": float(v), "evaluator": name} for p, v in imp.items()]
    return ImportanceResult(pd.DataFrame(rows, columns=list(IMPORTANCE_COLUMNS)), notes)


# ---------------------------------------------------------------------------
# header and status
# ---------------------------------------------------------------------------


def status_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per state, with the distinct failure or prune reasons and their counts."""
    if trials.empty:
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    rows = []
    for state, group in trials.groupby("state", sort=True):
        reasons: Counter[str] = Counter()
        for col in ("fail_reason", "prune_reason"):
            if col in group:
                reasons.update(str(v) for v in group[col] if isinstance(v, str) and v)
        text = "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in reasons.most_common())
        rows.append({"state": state, "count": len(group), "reasons": text})
    return pd.DataFrame(rows, columns=list(STATUS_COLUMNS))


def empty_message(trials: pd.DataFrame) -> str | None:
    """A sentence for a study with nothing to plot (None when some trial completed)."""
    if not _completed(trials).empty:
        return None
    if trials.empty:
        return "no trials yet: run the search first (python -m repvgg_nas.search --study NAME)"
    status = status_frame(trials)
    parts = []
    for _, r in status.iterrows():
        part = f"{r['count']} {str(r['state']).lower()}"
        parts.append(f"{part} ({r['reasons']})" if r["reasons"] else part)
    return "no completed trials yet: " + ", ".join(parts)


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
        entries = json.loads(cache_path.read_text(encoding="utf-8")).get("entries", {})
    except (OSError, ValueError, AttributeError):
        return None
    seen = []
    for e in entries.values() if isinstance(entries, dict) else ():
        env = e.get("env") if isinstance(e, dict) else None
        if not isinstance(env, dict):
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
    rows = [
        ("study", "name", study.study_name),
        ("study", "description", ua.get("description") or ""),
        ("study", "storage", _hide_password(storage) if storage else ""),
        ("study", "trials", ", ".join(f"{r['count']} {str(r['state']).lower()}" for _, r in counts.iterrows()) or "none"),
        ("study", "target trials", ua.get("n_trials", "")),
        ("study", "search space", f"{ua.get('space', '?')} (hash {ua.get('space_hash', '?')})" if ua.get("space") else ""),
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


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (e.g. a journal file): shown as given
        return url


# ---------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------


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
        if not _is_reference(_completed(trials)).any():
            notes.append("no paper reference trial has completed: the hypervolume plot has no baseline")
    else:
        imp_frame = pd.DataFrame(columns=list(IMPORTANCE_COLUMNS))
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
