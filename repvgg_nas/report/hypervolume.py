"""Hypervolume over trials and over wall time, beside the references-only front: is the search beating the paper?

Data: :func:`repvgg_nas.stats.hypervolume_frame` (in trial-number order) and
:func:`repvgg_nas.stats.hypervolume_time_frame` (in completion order, against
the seconds the study has run: a multi-fidelity run and a single-fidelity one
compare at equal time, not at equal trial count); drawing:
:func:`hypervolume_figure` (buttons switch between the two x axes); from a
study in one call: :func:`plot_hypervolume` (cf.
``optuna.visualization.plot_hypervolume_history``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from ..stats import hypervolume_frame, hypervolume_time_frame
from ..study_frames import study_hypervolume_reference
from .frames import report_trials_frame
from .style import BLUE, ORANGE, TEMPLATE

__all__ = ["REFERENCE_HV", "SEARCH_HV", "hypervolume_figure", "plot_hypervolume"]

# Plotly trace names (the legend).
SEARCH_HV = "search front"
REFERENCE_HV = "references-only front"

# Button labels of the figure's two x axes.
BY_TRIAL = "by trial"
BY_TIME = "by wall time"


def _time_unit(seconds: float) -> tuple[str, float]:
    """A readable unit for an axis running to ``seconds``."""
    if seconds <= 180:
        return "s", 1.0
    if seconds <= 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def hypervolume_figure(hv: pd.DataFrame, hv_time: pd.DataFrame | None = None) -> go.Figure:
    """Hypervolume of the front after each trial, with the references-only front as the bar to clear.

    With ``hv_time`` (:func:`hypervolume_time_frame`), two buttons switch the
    x axis between trial number and the study's running time (:func:`elapsed_seconds`).
    """
    floor = float(hv["reference_accuracy"].iloc[0]) if len(hv) and "reference_accuracy" in hv else 0.0
    return _hypervolume_figure(hv, floor, hv_time)


def _traces(hv: pd.DataFrame, x: list[float], hover: str, visible: bool) -> list[go.Scatter]:
    out = [go.Scatter(
        x=x, y=hv["hypervolume"].tolist(), name=SEARCH_HV, mode="lines+markers", visible=visible,
        line=dict(color=BLUE, shape="hv"), customdata=hv["number"].tolist(), hovertemplate=hover,
    )]
    base = hv["references_hypervolume"].dropna()
    if len(base) and x:
        out.append(go.Scatter(
            x=[min(x), max(x)], y=[base.iloc[0]] * 2, name=REFERENCE_HV, visible=visible,
            mode="lines", line=dict(color=ORANGE, dash="dash"),
            hovertemplate="references only: %{y:.4g}<extra></extra>",
        ))
    return out


def _hypervolume_figure(hv: pd.DataFrame, floor: float, hv_time: pd.DataFrame | None = None) -> go.Figure:
    """Hypervolume of the front after each trial (and, when given, over wall time)."""
    by_trial = _traces(hv, hv["number"].tolist(), "after trial %{x}: %{y:.4g}<extra></extra>", True)
    fig = go.Figure(by_trial)
    trial_axis = "trial number"
    menus: list[dict[str, Any]] = []
    if hv_time is not None and len(hv_time):
        unit, scale = _time_unit(float(hv_time["elapsed_s"].max()))
        x = [float(s) / scale for s in hv_time["elapsed_s"]]
        by_time = _traces(hv_time, x, f"after trial %{{customdata}}, %{{x:.1f}} {unit}: %{{y:.4g}}<extra></extra>",
                          False)
        fig.add_traces(by_time)
        time_axis = f"time the study has run, idle time between runs left out ({unit})"
        n, m = len(by_trial), len(by_time)
        menus = [dict(
            type="buttons", direction="right", showactive=True, active=0,
            x=1.0, xanchor="right", y=1.02, yanchor="bottom", pad=dict(t=0, r=0),
            buttons=[
                dict(label=BY_TRIAL, method="update", args=[{"visible": [True] * n + [False] * m}, {
                    "xaxis.title.text": trial_axis, "xaxis.rangemode": "normal", "xaxis.autorange": True}]),
                dict(label=BY_TIME, method="update", args=[{"visible": [False] * n + [True] * m}, {
                    "xaxis.title.text": time_axis, "xaxis.rangemode": "tozero", "xaxis.autorange": True}]),
            ],
        )]
    fig.update_layout(
        template=TEMPLATE, height=380, margin=dict(l=60, r=20, t=70 if menus else 40, b=50),
        xaxis=dict(title=dict(text=trial_axis)),
        yaxis=dict(title=dict(text=f"hypervolume (accuracy × images/s above ({floor:.3f}, 0))"), rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        updatemenus=menus,
    )
    return fig


def plot_hypervolume(study: optuna.Study, reference: Sequence[float] | None = None) -> go.Figure:
    """The hypervolume figure of a study (reference point: the study's, :func:`repvgg_nas.study_frames.study_hypervolume_reference`, by default)."""
    trials = report_trials_frame(study)
    if reference is None:
        reference = study_hypervolume_reference(study, trials)[0]
    return hypervolume_figure(hypervolume_frame(trials, reference), hypervolume_time_frame(trials, reference))
