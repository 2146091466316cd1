"""Parameter importance per objective: which architecture dimensions explain accuracy and throughput.

The dimensions are the architecture's (stage depths, ``a``, ``b``, groupwise
placement, ``g``, block), read from each trial's spec and ``arch_*`` attrs,
not the trial's sampler params: a pooled study suggests only a pool rank,
which says nothing a user can act on.

Data: :func:`importance_frame` (Optuna's importance evaluators, chosen by name
from :data:`IMPORTANCE_EVALUATORS`); drawing: :func:`importance_figure`; from
a study in one call: :func:`plot_importance`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial
import pandas as pd
import plotly.graph_objects as go

from .. import attrs
from ..errors import ConfigError
from ..registry import Registry
from ..study_frames import study_objectives
from .style import BLUE, GREEN, ORANGE, TEMPLATE, esc

__all__ = [
    "IMPORTANCE_EVALUATORS", "ImportanceResult",
    "importance_figure", "importance_frame", "plot_importance",
]

TrialState = optuna.trial.TrialState

# A CSV always has its header, even when the frame is empty.
IMPORTANCE_COLUMNS = ("objective", "param", "importance", "evaluator")


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


def empty_importance() -> pd.DataFrame:
    """The importance frame of a study with nothing to rank (it still has its columns)."""
    return pd.DataFrame(columns=list(IMPORTANCE_COLUMNS))


def _dimensions(t: FrozenTrial) -> dict[str, Any]:
    """A trial's architecture dimensions: ``depth1``.. from its spec, the ``arch_*`` attrs by name."""
    out: dict[str, Any] = {}
    spec = t.user_attrs.get(attrs.SPEC)
    if isinstance(spec, dict):
        out.update({f"depth{i}": int(d) for i, d in enumerate(spec.get("depths") or []) if i > 0})
    for dim in attrs.ARCH_DIMENSIONS:
        value = t.user_attrs.get(attrs.arch_key(dim))
        if value is not None:
            out[dim] = value
    return out


def architecture_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Copies of ``trials`` whose params are their architecture dimensions (each a categorical of the values
    seen; a dimension that never varies, or that some trial lacks, is left out, and so is a trial that records
    no architecture, as one added by hand)."""
    kept = [(t, d) for t, d in ((t, _dimensions(t)) for t in trials) if d]  # a trial with no record is left out
    names = set.intersection(*(set(d) for _, d in kept)) if kept else set()
    seen = {n: sorted({str(d[n]) for _, d in kept}) for n in names}
    varying = sorted(n for n in names if len(seen[n]) > 1)
    dist = {n: optuna.distributions.CategoricalDistribution(seen[n]) for n in varying}
    return [optuna.trial.create_trial(values=t.values, params={n: str(d[n]) for n in varying}, distributions=dist)
            for t, d in kept]


def importance_frame(study: optuna.Study, evaluator: str = "ped-anova") -> ImportanceResult:
    """Optuna's parameter importance for each objective, or a note saying why there is none.

    Pruned variants are left out (their figures come from pruning, not from
    their parameters), and so are seed repeats and long re-trainings. Targets are negated because PED-ANOVA ranks what it
    takes to reach *low* values and a maximized objective is negated (a minimized one, as peak memory, is not); the other
    evaluators measure variance, which the sign does not change.
    """
    make = IMPORTANCE_EVALUATORS.get(evaluator)
    name = IMPORTANCE_EVALUATORS.canonical(evaluator)
    searched = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(attrs.PARENT_TRIAL) is None and t.user_attrs.get(attrs.REPEAT_OF) is None
    ]
    empty = empty_importance()
    if len(searched) < 2:
        return ImportanceResult(empty, [f"parameter importance needs at least 2 completed trials; this study has {len(searched)}"])
    arch = architecture_trials(searched)
    if len(arch) < 2 or not arch[0].params:
        return ImportanceResult(empty, ["parameter importance: the trained nets differ in no architecture dimension"])
    # A private in-memory copy holding only searched trials, so the evaluator sees nothing else.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        sub = optuna.create_study(directions=study.directions, study_name="importance")
    finally:
        optuna.logging.set_verbosity(verbosity)
    sub.add_trials(arch)
    rows, notes = [], []
    for i, o in enumerate(study_objectives(study)):
        objective = o.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    sub, evaluator=make(), target=lambda t, i=i, s=o.sign: -s * t.values[i]
                )
        except ConfigError:
            raise
        except Exception as e:  # too few distinct values, degenerate targets, ...
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            notes.append(f"parameter importance for {objective} could not be computed: {first}")
            continue
        rows += [{"objective": objective, "param": p, "importance": float(v), "evaluator": name} for p, v in imp.items()]
    return ImportanceResult(pd.DataFrame(rows, columns=list(IMPORTANCE_COLUMNS)), notes)


def importance_figure(imp: pd.DataFrame) -> go.Figure | None:
    """Grouped bars: how much each search dimension explains each objective (None when there is no data)."""
    if imp.empty:
        return None
    order = imp.groupby("param")["importance"].max().sort_values().index.tolist()
    fig = go.Figure()
    for objective, color in zip(dict.fromkeys(imp["objective"]), (BLUE, ORANGE, GREEN)):
        part = imp[imp["objective"] == objective].set_index("param").reindex(order)
        if part["importance"].notna().any():
            fig.add_trace(go.Bar(
                y=[esc(p) for p in order], x=part["importance"].fillna(0).tolist(), name=objective,
                orientation="h", marker_color=color,
                hovertemplate=f"{objective}: %{{y}} %{{x:.3f}}<extra></extra>",
            ))
    evaluator = esc(imp["evaluator"].iloc[0])
    fig.update_layout(
        template=TEMPLATE, barmode="group", height=max(260, 60 + 40 * len(order)),
        margin=dict(l=110, r=20, t=40, b=50),
        xaxis=dict(title=dict(text=f"importance ({evaluator}, normalized per objective)")),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def plot_importance(study: optuna.Study, evaluator: str = "ped-anova") -> go.Figure | None:
    """The importance figure of a study (None when importance cannot be computed)."""
    return importance_figure(importance_frame(study, evaluator).frame)
