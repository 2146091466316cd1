"""Hypervolume over trials, beside the references-only front: is the search beating the paper?

Data: :func:`hypervolume_frame` (built on the exact :func:`hypervolume_2d`);
drawing: :func:`hypervolume_figure`; from a study in one call:
:func:`plot_hypervolume` (cf. ``optuna.visualization.plot_hypervolume_history``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from ..attrs import STUDY_TRUST
from .frames import completed, dominates, is_reference, report_trials_frame, study_sigmas
from .style import BLUE, ORANGE, TEMPLATE
from .trust import accuracy_floor, architecture_stats

__all__ = [
    "REFERENCE_HV", "SEARCH_HV",
    "hypervolume_2d", "hypervolume_figure", "hypervolume_frame", "hypervolume_reference", "plot_hypervolume",
]

# Plotly trace names (the legend).
SEARCH_HV = "search front"
REFERENCE_HV = "references-only front"

# A CSV always has its header, even when the frame is empty.
HYPERVOLUME_COLUMNS = (
    "number", "hypervolume", "references_hypervolume", "ratio", "front_size", "reference_accuracy",
)


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


def hypervolume_reference(
    trials: pd.DataFrame, sigmas: float = 2.0, floor: float | None = None,
) -> tuple[tuple[float, float], str]:
    """The reference point (accuracy floor, 0 images/s) and a sentence naming where the floor comes from.

    With (0, 0) the fastest net dominated the area whatever its accuracy; the
    floor (:func:`.trust.accuracy_floor`: the study's ``[trust]
    accuracy_floor``, else the lowest reference's mean accuracy minus
    ``sigmas`` standard errors) counts only nets that are not worse, beyond
    the noise, than every paper config.
    """
    value, text = accuracy_floor(architecture_stats(trials), sigmas, floor)
    return (value, 0.0), text


def _search_rows(done: pd.DataFrame) -> pd.DataFrame:
    """Search and pruned trials: seed repeats and long re-trainings are not steps of the search."""
    linked = pd.Series(False, index=done.index)
    for c in ("repeat_of", "train_epochs"):
        if c in done:
            linked |= done[c].notna()
    return done[~linked]


def hypervolume_frame(trials: pd.DataFrame, reference: Sequence[float] | None = None) -> pd.DataFrame:
    """Hypervolume of the front after each completed trial, beside the references-only front.

    Like ``optuna.visualization.plot_hypervolume_history``: completed search
    trials in number order; an infeasible trial repeats the previous value.
    The reference point (default: :func:`hypervolume_reference`, in the
    ``reference_accuracy`` column) is the same for the search and the
    references. ``references_hypervolume`` is the area of the paper
    references' own front: the baseline a search has to beat; ``ratio`` is
    the search's area over it.
    """
    done = _search_rows(completed(trials))
    if done.empty:
        return pd.DataFrame(columns=list(HYPERVOLUME_COLUMNS))
    if reference is None:
        reference = hypervolume_reference(trials)[0]
    done = done.sort_values("number")
    feasible = done["feasible"] if "feasible" in done else pd.Series(True, index=done.index)
    refs = done[is_reference(done) & feasible]
    ref_hv = hypervolume_2d(zip(refs["accuracy"], refs["throughput"]), reference) if len(refs) else float("nan")
    rows: list[dict[str, Any]] = []
    front: list[dict[str, float]] = []  # distinct non-dominated points so far
    for (_, r), ok in zip(done.iterrows(), feasible):
        p = {"accuracy": float(r["accuracy"]), "throughput": float(r["throughput"])}
        if ok and not any(q == p or dominates(q, p) for q in front):
            front = [q for q in front if not dominates(p, q)] + [p]
        hv = hypervolume_2d(((q["accuracy"], q["throughput"]) for q in front), reference)
        rows.append({
            "number": int(r["number"]), "hypervolume": hv, "references_hypervolume": ref_hv,
            "ratio": hv / ref_hv if ref_hv and ref_hv == ref_hv else float("nan"), "front_size": len(front),
            "reference_accuracy": float(reference[0]),
        })
    return pd.DataFrame(rows, columns=list(HYPERVOLUME_COLUMNS))


def hypervolume_figure(hv: pd.DataFrame) -> go.Figure:
    """Hypervolume of the front after each trial, with the references-only front as the bar to clear."""
    floor = float(hv["reference_accuracy"].iloc[0]) if len(hv) and "reference_accuracy" in hv else 0.0
    return _hypervolume_figure(hv, floor)


def _hypervolume_figure(hv: pd.DataFrame, floor: float) -> go.Figure:
    """Hypervolume of the front after each trial, with the references-only front as the bar to clear."""
    fig = go.Figure(go.Scatter(
        x=hv["number"].tolist(), y=hv["hypervolume"].tolist(), name=SEARCH_HV, mode="lines+markers",
        line=dict(color=BLUE, shape="hv"),
        hovertemplate="after trial %{x}: %{y:.4g}<extra></extra>",
    ))
    base = hv["references_hypervolume"].dropna()
    if len(base):
        fig.add_trace(go.Scatter(
            x=[hv["number"].min(), hv["number"].max()], y=[base.iloc[0]] * 2, name=REFERENCE_HV,
            mode="lines", line=dict(color=ORANGE, dash="dash"),
            hovertemplate="references only: %{y:.4g}<extra></extra>",
        ))
    fig.update_layout(
        template=TEMPLATE, height=380, margin=dict(l=60, r=20, t=40, b=50),
        xaxis=dict(title=dict(text="trial number")),
        yaxis=dict(title=dict(text=f"hypervolume (accuracy × images/s above ({floor:.3f}, 0))"), rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def plot_hypervolume(study: optuna.Study, reference: Sequence[float] | None = None) -> go.Figure:
    """The hypervolume figure of a study (reference point: :func:`hypervolume_reference` by default)."""
    trials = report_trials_frame(study)
    if reference is None:
        trust = study.user_attrs.get(STUDY_TRUST) or {}
        reference = hypervolume_reference(trials, study_sigmas(study), trust.get("accuracy_floor"))[0]
    return hypervolume_figure(hypervolume_frame(trials, reference))
