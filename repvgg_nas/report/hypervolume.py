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

from .frames import completed, dominates, is_reference, report_trials_frame
from .style import BLUE, ORANGE, TEMPLATE

__all__ = [
    "REFERENCE_HV", "SEARCH_HV",
    "hypervolume_2d", "hypervolume_figure", "hypervolume_frame", "plot_hypervolume",
]

# Plotly trace names (the legend).
SEARCH_HV = "search front"
REFERENCE_HV = "references-only front"

# A CSV always has its header, even when the frame is empty.
HYPERVOLUME_COLUMNS = ("number", "hypervolume", "references_hypervolume", "front_size")


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
    done = completed(trials)
    if done.empty:
        return pd.DataFrame(columns=list(HYPERVOLUME_COLUMNS))
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
        rows.append({
            "number": int(r["number"]),
            "hypervolume": hypervolume_2d(((q["accuracy"], q["throughput"]) for q in front), reference),
            "references_hypervolume": ref_hv, "front_size": len(front),
        })
    return pd.DataFrame(rows, columns=list(HYPERVOLUME_COLUMNS))


def hypervolume_figure(hv: pd.DataFrame) -> go.Figure:
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
        yaxis=dict(title=dict(text="hypervolume (accuracy × images/s above (0, 0))"), rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def plot_hypervolume(study: optuna.Study, reference: Sequence[float] = (0.0, 0.0)) -> go.Figure:
    """The hypervolume figure of a study."""
    return hypervolume_figure(hypervolume_frame(report_trials_frame(study), reference))
