"""Proxy vs long-budget accuracy: does the brief proxy rank architectures as a longer training does?

Data: :func:`fidelity_frame` (one row per architecture trained at both
budgets) and :func:`repvgg_nas.stats.fidelity` (Kendall tau); drawing:
:func:`fidelity_figure`; from a study in one call: :func:`plot_fidelity`.
"""

from __future__ import annotations

import math

import optuna
import pandas as pd
import plotly.graph_objects as go

from ..stats import Fidelity, architecture_stats, fidelity
from .frames import report_trials_frame
from .style import BLUE, ORANGE, TEMPLATE, esc

__all__ = ["FIDELITY_COLUMNS", "fidelity_figure", "fidelity_frame", "plot_fidelity"]

FIDELITY_COLUMNS = (
    "number", "reference", "arch", "n", "proxy_accuracy", "proxy_se", "long_accuracy", "long_epochs",
    "on_front", "on_long_front",
)


def fidelity_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Architectures with a long re-training: proxy mean accuracy (+- SE) beside the long-budget accuracy."""
    stats = architecture_stats(trials)
    if stats.empty:
        return pd.DataFrame(columns=list(FIDELITY_COLUMNS))
    both = stats[stats["long_accuracy"].notna()]
    out = pd.DataFrame({
        "number": both["number"], "reference": both["reference"], "arch": both["arch"], "n": both["n"],
        "proxy_accuracy": both["accuracy_mean"], "proxy_se": both["accuracy_se"],
        "long_accuracy": both["long_accuracy"], "long_epochs": both["long_epochs"],
        "on_front": both["on_front"], "on_long_front": both["on_long_front"],
    })
    return out[list(FIDELITY_COLUMNS)].reset_index(drop=True)


def fidelity_figure(frame: pd.DataFrame, fid: Fidelity | None = None) -> go.Figure:
    """Long-budget vs proxy accuracy, references as diamonds, Kendall tau in the title."""
    if fid is None:
        fid = fidelity(frame.rename(columns={"proxy_accuracy": "accuracy_mean"})) if len(frame) else Fidelity(
            float("nan"), float("nan"), 0)
    refs = frame["reference"].map(lambda r: isinstance(r, str) and bool(r)) if len(frame) else pd.Series(dtype=bool)
    fig = go.Figure()
    for sel, name, color, symbol in ((~refs, "searched", BLUE, "circle"), (refs, "paper references", ORANGE, "diamond")):
        part = frame[sel] if len(frame) else frame
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["proxy_accuracy"].tolist(), y=part["long_accuracy"].tolist(), name=name,
            mode="markers+text" if name != "searched" else "markers",
            text=[esc(r) if isinstance(r, str) else f"trial {int(n)}" for r, n in zip(part["reference"], part["number"])],
            textposition="top center",
            error_x=dict(type="data", array=part["proxy_se"].astype(float).tolist(), thickness=1, width=3),
            marker=dict(color=color, size=11, symbol=symbol, line=dict(color="black", width=1)),
            customdata=part["number"].tolist(),
            hovertemplate="trial %{customdata}: proxy %{x:.4f}, long %{y:.4f}<extra></extra>",
        ))
    tau = "n/a" if math.isnan(fid.tau) else f"{fid.tau:+.2f} (p = {fid.p_value:.2g})"
    epochs = frame["long_epochs"].dropna()
    long_text = f"{int(epochs.iloc[0])}-epoch" if len(epochs) else "long-budget"
    fig.update_layout(
        template=TEMPLATE, height=420, margin=dict(l=60, r=20, t=50, b=50),
        title=dict(text=f"Kendall tau {tau} over {fid.n} architectures", font=dict(size=13)),
        xaxis=dict(title=dict(text="proxy accuracy (mean over seeds ± SE)")),
        yaxis=dict(title=dict(text=f"{long_text} accuracy")),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0.6),
    )
    return fig


def plot_fidelity(study: optuna.Study) -> go.Figure:
    """The proxy-vs-long figure of a study."""
    trials = report_trials_frame(study)
    return fidelity_figure(fidelity_frame(trials), fidelity(architecture_stats(trials)))
