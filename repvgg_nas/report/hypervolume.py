"""Hypervolume over trials and over wall time, beside the references-only front: is the search beating the paper?

Data: :func:`hypervolume_frame` (in trial-number order) and
:func:`hypervolume_time_frame` (in completion order, against the seconds
the study has run (:func:`elapsed_seconds`): a multi-fidelity run and a
single-fidelity one compare at equal time, not at equal trial count), both
built on the exact :func:`hypervolume_2d`; drawing: :func:`hypervolume_figure`
(buttons switch between the two x axes); from a study in one call:
:func:`plot_hypervolume` (cf. ``optuna.visualization.plot_hypervolume_history``).
"""

from __future__ import annotations

import bisect
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
    "HYPERVOLUME_COLUMNS", "REFERENCE_HV", "SEARCH_HV",
    "elapsed_seconds", "hypervolume_2d", "hypervolume_figure", "hypervolume_frame", "hypervolume_reference",
    "hypervolume_time_frame", "plot_hypervolume",
]

# Plotly trace names (the legend).
SEARCH_HV = "search front"
REFERENCE_HV = "references-only front"

# Button labels of the figure's two x axes.
BY_TRIAL = "by trial"
BY_TIME = "by wall time"

# A CSV always has its header, even when the frame is empty.
HYPERVOLUME_COLUMNS = (
    "number", "hypervolume", "references_hypervolume", "ratio", "front_size", "reference_accuracy", "elapsed_s",
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


def elapsed_seconds(trials: pd.DataFrame) -> pd.Series:
    """Seconds of study time up to each trial's completion (NaN: not finished).

    The clock of the wall-time view: it runs while any trial of the study
    runs (any state: failed, stopped and re-training trials cost time too;
    one still running runs to the latest completion), from the first start.
    The idle time between two runs of a resumed study does not count, so a
    study searched in two 15-minute runs reads 30 minutes, as one 30-minute
    run would, and two studies compare at equal cost.
    """
    nan = pd.Series(float("nan"), index=trials.index, dtype=float)
    if trials.empty or "datetime_start" not in trials or "datetime_complete" not in trials:
        return nan
    start = pd.to_datetime(trials["datetime_start"])
    end = pd.to_datetime(trials["datetime_complete"])
    if start.isna().all():
        return nan
    # Merge the trials' [start, end] spans into busy blocks; a block's clock starts where the previous stopped.
    last = end.max() if end.notna().any() else start.max()
    spans = sorted((s, max(s, e) if pd.notna(e) else max(s, last)) for s, e in zip(start, end) if pd.notna(s))
    blocks: list[list[pd.Timestamp]] = []
    for s, e in spans:
        if blocks and s <= blocks[-1][1]:
            blocks[-1][1] = max(blocks[-1][1], e)
        else:
            blocks.append([s, e])
    offsets, busy = [], 0.0
    for s, e in blocks:
        offsets.append(busy)
        busy += (e - s).total_seconds()

    starts = [s for s, _ in blocks]

    def clock(t: pd.Timestamp) -> float:
        if pd.isna(t):
            return float("nan")
        k = bisect.bisect_right(starts, t) - 1  # the block holding t (a trial's end lies in its own span's)
        return 0.0 if k < 0 else offsets[k] + (min(t, blocks[k][1]) - blocks[k][0]).total_seconds()

    return pd.Series([clock(t) for t in end], index=trials.index, dtype=float)


def _history(trials: pd.DataFrame, reference: Sequence[float] | None, by_time: bool) -> pd.DataFrame:
    """The hypervolume after each completed search trial, in number or completion order."""
    done = _search_rows(completed(trials))
    if done.empty:
        return pd.DataFrame(columns=list(HYPERVOLUME_COLUMNS))
    if reference is None:
        reference = hypervolume_reference(trials)[0]
    done = done.assign(elapsed_s=elapsed_seconds(trials).loc[done.index])
    if by_time:
        done = done[done["elapsed_s"].notna()].sort_values(["elapsed_s", "number"], kind="stable")
        if done.empty:
            return pd.DataFrame(columns=list(HYPERVOLUME_COLUMNS))
    else:
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
            "reference_accuracy": float(reference[0]), "elapsed_s": float(r["elapsed_s"]),
        })
    return pd.DataFrame(rows, columns=list(HYPERVOLUME_COLUMNS))


def hypervolume_frame(trials: pd.DataFrame, reference: Sequence[float] | None = None) -> pd.DataFrame:
    """Hypervolume of the front after each completed trial, beside the references-only front.

    Like ``optuna.visualization.plot_hypervolume_history``: completed search
    trials in number order; an infeasible trial repeats the previous value.
    The reference point (default: :func:`hypervolume_reference`, in the
    ``reference_accuracy`` column) is the same for the search and the
    references. ``references_hypervolume`` is the area of the paper
    references' own front: the baseline a search has to beat; ``ratio`` is
    the search's area over it; ``elapsed_s`` when the trial completed
    (:func:`elapsed_seconds`; NaN when the frame has no datetimes).
    """
    return _history(trials, reference, by_time=False)


def hypervolume_time_frame(trials: pd.DataFrame, reference: Sequence[float] | None = None) -> pd.DataFrame:
    """The same history in completion order: row ``i`` is the area of every search trial complete by its ``elapsed_s``.

    With parallel workers trials do not complete in number order, so the
    area against wall time is taken over what had finished by then, not over
    the lower-numbered trials. Trials without a completion time are left out.
    """
    return _history(trials, reference, by_time=True)


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
    """The hypervolume figure of a study (reference point: :func:`hypervolume_reference` by default)."""
    trials = report_trials_frame(study)
    if reference is None:
        trust = study.user_attrs.get(STUDY_TRUST) or {}
        reference = hypervolume_reference(trials, study_sigmas(study), trust.get("accuracy_floor"))[0]
    return hypervolume_figure(hypervolume_frame(trials, reference), hypervolume_time_frame(trials, reference))
