"""Rungs of a multi-fidelity search: which candidates were stopped where, and by whom.

Every candidate of a study with a ``[fidelity]`` table climbs the rungs of
the training budget while no result at its rung dominates it
(:mod:`repvgg_nas.search.rungs`); its ``rungs`` attr records each rung it
finished. Data: :func:`rungs_frame` (one row per candidate and rung) and
:func:`rung_counts` (candidates reaching and stopped at each rung); caption:
:func:`rungs_caption`; drawing: :func:`rungs_figure`; from a study in one
call: :func:`plot_rungs`. A single-fidelity study has no rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial
from plotly.colors import sample_colorscale

from .. import attrs, lifecycle
from ..lifecycle import taken_over
from ..records import RungRecord, rung_records, stop_record
from .style import GREY, TEMPLATE, esc, num, present, throughput_axis

__all__ = [
    "CLIMBED", "RUNG_COLUMNS", "RUNG_COUNT_COLUMNS", "RUNG_LINKS",
    "plot_rungs", "rung_counts", "rung_label", "rungs_caption", "rungs_figure", "rungs_frame", "stop_record",
    "study_budgets", "taken_over",
]

# final_state of a candidate that reached the full budget.
CLIMBED = "climbed to top"
# Plotly trace name of the lines joining one candidate's rungs.
RUNG_LINKS = "one candidate's climb"

RUNG_COLUMNS = (
    "number", "reference", "rung", "epochs", "accuracy", "throughput", "train_seconds", "promoted",
    "dominated_by", "out_of_time", "stopped", "final_state", "state", "arch", "outcome",
)
RUNG_COUNT_COLUMNS = ("rung", "epochs", "reached", "stopped")


def study_budgets(study: optuna.Study) -> tuple[int, ...]:
    """Epochs of each rung, lowest first, from the study's ``fidelity`` attr (empty: single-fidelity)."""
    fid = study.user_attrs.get(attrs.STUDY_FIDELITY)
    if not isinstance(fid, dict):
        return ()
    rungs = fid.get("rungs")
    if isinstance(rungs, int) and not isinstance(rungs, bool) and rungs <= 1:
        return ()
    budgets = fid.get("budgets")
    if isinstance(budgets, (list, tuple)) and len(budgets) > 1 and all(
            isinstance(b, int) and not isinstance(b, bool) for b in budgets):
        return tuple(budgets)
    return ()


def _epochs_text(epochs: Any) -> str:
    return f"{epochs} epoch{'s' * (epochs != 1)}" if present(epochs) else "? epochs"


def rung_label(rung: int, n_rungs: int, epochs: Any, note: str = "") -> str:
    """How the report names a rung: ``rung k/n (e epochs[, note])``, ``k`` counted from 1 (``rung`` is 0-based)."""
    return f"rung {rung + 1}/{n_rungs} ({_epochs_text(epochs)}{f', {note}' if note else ''})"


def _climbers(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trials whose ``rungs`` attr is their own climb.

    Duplicates copy their twin's attrs, seed repeats and long re-trainings
    never climb, lost trials never ran, and a killed or paused trial's
    decided rungs are carried on by the retry that took it over (:func:`taken_over`).
    """
    trials = list(trials)
    retried = taken_over(trials)
    out = []
    for t in trials:
        ua = t.user_attrs
        if not ua.get(attrs.RUNGS) or lifecycle.lost(t) or t.number in retried:
            continue
        if ua.get(attrs.DUPLICATE_OF) is not None or lifecycle.is_linked(t):
            continue
        out.append(t)
    return out


def _final_state(t: FrozenTrial, records: Sequence[RungRecord], n_rungs: int) -> str:
    """``climbed to top``, ``stopped at rung k/n (e epochs)``, ``paused at rung k/n (e epochs, out of time)``
    (the time budget left its next rung to the next run), or the state after the last finished rung."""
    stop = stop_record(records)
    if stop is not None:
        late = "out of time" if stop.out_of_time else ""
        return f"stopped at {rung_label(stop.rung, n_rungs, stop.epochs, late)}"
    last = records[-1].rung
    if t.state == optuna.trial.TrialState.COMPLETE and last >= n_rungs - 1:
        return CLIMBED
    if lifecycle.paused(t):
        return f"paused at {rung_label(last, n_rungs, records[-1].epochs, 'out of time')}"
    return f"{t.state.name.lower()} after rung {last + 1}/{n_rungs}"


def rungs_frame(source: optuna.Study | Iterable[FrozenTrial], budgets: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (candidate, rung it finished), lowest rung first.

    ``throughput`` is the candidate's measured images/s (taken once, the same
    at every rung); ``train_seconds`` its training time up to that rung;
    ``promoted`` True/False once decided (None at the top rung);
    ``stopped`` marks the rung a candidate was stopped at, ``dominated_by``
    the trial whose result there dominated it, ``out_of_time`` a rung whose
    next one would have ended after the study's time budget (promoted: it waits
    for the next run; not promoted: it needed more than a whole run's budget); ``final_state`` is where its climb ended (:data:`CLIMBED`,
    ``stopped at rung k/n (e epochs)`` with ``k`` counted from 1 as in
    ``prune_reason``, ``paused at rung k/n (e epochs, out of time)``, or
    ``running``/``fail`` ``after rung k/n``). ``rung`` itself is 0-based, as in the attr.
    ``budgets`` (default: the study's, :func:`study_budgets`) gives the
    number of rungs; without it the highest recorded rung does.
    """
    if isinstance(source, optuna.Study):
        if budgets is None:
            budgets = study_budgets(source)
        trials: Iterable[FrozenTrial] = source.get_trials(deepcopy=False)
    else:
        trials = source
    climbers = _climbers(trials)
    recorded = [r.rung for t in climbers for r in rung_records(t.user_attrs)]
    n_rungs = len(budgets) if budgets else (max(recorded) + 1 if recorded else 0)
    rows: list[dict[str, Any]] = []
    for t in sorted(climbers, key=lambda t: t.number):
        records = sorted(rung_records(t.user_attrs), key=lambda r: r.rung)
        if not records:
            continue
        final = _final_state(t, records, n_rungs)
        how = lifecycle.outcome(t)
        ref = t.user_attrs.get(attrs.REFERENCE)
        for r in records:
            rows.append({
                "number": t.number, "reference": ref if isinstance(ref, str) and ref else None,
                "rung": r.rung, "epochs": r.epochs, "accuracy": r.accuracy, "throughput": r.images_per_s,
                "train_seconds": r.train_seconds, "promoted": r.promoted, "dominated_by": r.dominated_by,
                "out_of_time": r.out_of_time, "stopped": r.promoted is False, "final_state": final,
                "state": t.state.name,
                "arch": t.user_attrs.get(attrs.ARCH), "outcome": how.value if how is not None else None,
            })
    frame = pd.DataFrame(rows, columns=list(RUNG_COLUMNS))
    frame["dominated_by"] = frame["dominated_by"].astype("Int64")
    frame["stopped"] = frame["stopped"].astype(bool)
    frame["out_of_time"] = frame["out_of_time"].astype(bool)
    for c in ("accuracy", "throughput", "train_seconds"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    frame.attrs["n_rungs"] = n_rungs
    return frame


def rung_counts(frame: pd.DataFrame, budgets: Sequence[int] = ()) -> pd.DataFrame:
    """Per rung: how many candidates finished it (``reached``) and how many were stopped there."""
    n = len(budgets) or (int(frame["rung"].max()) + 1 if len(frame) else 0)
    rows = []
    for k in range(n):
        at = frame[frame["rung"] == k]
        epochs = budgets[k] if budgets else (at["epochs"].iloc[0] if len(at) else None)
        rows.append({"rung": k, "epochs": epochs, "reached": int(at["number"].nunique()),
                     "stopped": int(at.loc[at["stopped"], "number"].nunique())})
    return pd.DataFrame(rows, columns=list(RUNG_COUNT_COLUMNS))


def rungs_caption(frame: pd.DataFrame, budgets: Sequence[int] = ()) -> str:
    """One sentence: the rung budgets and how many candidates stopped at each rung."""
    counts = rung_counts(frame, budgets)
    if counts.empty:
        return "No candidate has finished a rung yet."
    epochs = [_epochs_text(e) for e in counts["epochs"]]
    parts = [f"{int(c['stopped'])}{' stopped' if i == 0 else ''} at rung {int(c['rung']) + 1} ({e})"
             for i, ((_, c), e) in enumerate(zip(counts.iloc[:-1].iterrows(), epochs))]
    candidates = int(frame["number"].nunique())
    top = int(frame.loc[frame["final_state"] == CLIMBED, "number"].nunique())
    parts.append(f"{top} climbed to the top")
    paused = int(frame.loc[frame["outcome"] == lifecycle.Outcome.PAUSED.value, "number"].nunique())
    if paused:
        parts.append(f"{paused} {'was' if paused == 1 else 'were'} paused by the time budget (the next run "
                     f"continues {'it' if paused == 1 else 'them'})")
    others = candidates - top - paused - int(counts["stopped"].sum())
    if others:
        parts.append(f"{others} {'is' if others == 1 else 'are'} still climbing or failed")
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
    nums = [str(e) if present(e) else "?" for e in counts["epochs"]]
    budget = f"{', '.join(nums[:-1])} and {nums[-1]}" if len(nums) > 1 else nums[0]
    return (f"Rungs train for {budget} epochs; of {candidates} candidate{'s' * (candidates != 1)}, "
            f"{listed}.")


def _rung_colors(n: int) -> list[str]:
    return sample_colorscale("Viridis", [0.85 * k / (n - 1) if n > 1 else 0.0 for k in range(n)])


def _hover(r: pd.Series, n_rungs: int) -> str:
    ref = r.get("reference")
    head = f"<b>trial {int(r['number'])}</b>" + (f" [{esc(ref)}]" if present(ref) else "")
    lines = [
        f"{head} · rung {int(r['rung']) + 1}/{n_rungs} ({_epochs_text(r.get('epochs'))})",
        f"accuracy {num(r['accuracy'], '.4f')} · {num(r['throughput'], ',.1f', ' img/s')}"
        f" · trained {num(r.get('train_seconds'), '.1f', ' s')}",
    ]
    if r["stopped"]:
        by = r.get("dominated_by")
        lines.append(f"<b>stopped</b>: trial {int(by)} dominates it" if present(by) else
                     "<b>stopped</b>: the time budget ran out" if r.get("out_of_time") else "<b>stopped</b>")
    elif r.get("promoted") is True:
        lines.append("promoted; the time budget left its next rung to the next run" if r.get("out_of_time")
                     else "promoted")
    lines.append(esc(r["final_state"]))
    if present(r.get("arch")):
        lines.append(f"<i>{esc(r['arch'])}</i>")
    return "<br>".join(lines)


def rungs_figure(frame: pd.DataFrame, budgets: Sequence[int] = ()) -> go.Figure:
    """Accuracy vs throughput at every rung: one colour per rung, crosses where a candidate was stopped,
    a thin line joining one candidate's rungs (its throughput is measured once, so the line is vertical)."""
    n_rungs = len(budgets) or int(frame.attrs.get("n_rungs") or 0) or (
        int(frame["rung"].max()) + 1 if len(frame) else 0)
    colors = _rung_colors(max(n_rungs, 1))
    fig = go.Figure()
    xs: list[float | None] = []
    ys: list[float | None] = []
    for _, group in frame.groupby("number", sort=True):
        if len(group) > 1:
            g = group.sort_values("rung")
            xs += g["throughput"].tolist() + [None]
            ys += g["accuracy"].tolist() + [None]
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, name=RUNG_LINKS, mode="lines", hoverinfo="skip",
                                 line=dict(color=GREY, width=1)))
    for k in range(n_rungs):
        at = frame[frame["rung"] == k]
        epochs = budgets[k] if budgets else (at["epochs"].iloc[0] if len(at) else None)
        label = f"rung {k + 1}: {_epochs_text(epochs)}" + (" (full budget)" if k == n_rungs - 1 else "")
        parts = ((at[~at["stopped"]], label, "circle"), (at[at["stopped"]], f"stopped at rung {k + 1}", "x"))
        for part, name, symbol in parts:
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part["throughput"].tolist(), y=part["accuracy"].tolist(), name=name, mode="markers",
                legendgroup=f"rung{k}",
                marker=dict(color=colors[k % len(colors)], size=12 if symbol == "x" else 9, symbol=symbol,
                            line=dict(color="white" if symbol == "circle" else colors[k % len(colors)], width=1)),
                customdata=part["number"].tolist(),
                hovertext=[_hover(r, n_rungs) for _, r in part.iterrows()], hoverinfo="text",
            ))
    fig.update_layout(
        template=TEMPLATE, height=480, margin=dict(l=60, r=20, t=40, b=60),
        xaxis=throughput_axis(frame["throughput"]),
        yaxis=dict(title=dict(text="accuracy at the rung's budget")),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        hoverlabel=dict(align="left"),
    )
    return fig


def plot_rungs(study: optuna.Study) -> go.Figure:
    """The rung figure of a multi-fidelity study."""
    budgets = study_budgets(study)
    return rungs_figure(rungs_frame(study, budgets), budgets)
