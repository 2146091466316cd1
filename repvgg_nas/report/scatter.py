"""The accuracy/throughput figure: the front, dominated trials, references and pruned variants.

Data: :func:`pruned_links_frame` (the lines from parents to their pruned
variants) beside the report's trials frame; drawing: :func:`scatter_figure`;
from a study in one call: :func:`plot_scatter`.
"""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from ..stats import architecture_stats, completed, extra_objectives, is_reference
from .frames import report_trials_frame
from .style import BLUE, GREEN, GREY, ORANGE, TEMPLATE, esc, num, present, throughput_axis

__all__ = [
    "DOMINATED", "FRONT", "LONG_FRONT", "POOL", "PRUNED", "PRUNED_LINKS", "REFERENCES",
    "plot_scatter", "pruned_links_frame", "scatter_figure", "scatter_points_frame",
]

# Plotly trace names: the page's legend, and what the browser test looks for.
FRONT = "Pareto front"
DOMINATED = "dominated trials"
REFERENCES = "paper references"
PRUNED = "pruned variants"
PRUNED_LINKS = "pruned from parent"
LONG_FRONT = "front at the long budget"
POOL = "pre-screened pool (predicted)"

LINK_COLUMNS = (
    "parent", "child", "pruned_ratio", "parent_accuracy", "parent_throughput",
    "child_accuracy", "child_throughput",
)


def pruned_links_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per completed pruned variant whose parent trial completed: the line to draw."""
    done = completed(trials)
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


def scatter_points_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """The completed trials the figure draws, one per architecture, with error bars.

    Seed repeats and long re-trainings are folded into the trial naming
    their architecture: ``accuracy`` is its mean over seeds, ``accuracy_se``
    the standard error (:mod:`repvgg_nas.stats.noise`), ``throughput_err`` half the IQR of
    its timed repeats; ``long_accuracy`` its long-budget accuracy, if any.
    """
    done = completed(trials)
    if done.empty:
        return done.assign(accuracy_se=[], throughput_err=[], long_accuracy=[], n=[])
    stats = architecture_stats(trials).set_index("number")
    out = done[done["number"].isin(stats.index)].copy()
    out["run_accuracy"] = out["accuracy"]
    for col, src in (("accuracy", "accuracy_mean"), ("accuracy_se", "accuracy_se"), ("n", "n"),
                     ("long_accuracy", "long_accuracy")):
        out[col] = [stats.loc[n, src] for n in out["number"]]
    out["throughput_err"] = [
        float(stats.loc[n, "throughput_iqr"]) / 2 if present(stats.loc[n, "throughput_iqr"]) else 0.0
        for n in out["number"]
    ]
    return out


def _extra_lines(r: pd.Series, extra: tuple) -> list[str]:
    """One hover line per extra objective (``[objectives] extra``), with its direction."""
    return [f"{esc(o.label)} {esc(o.show(r[o.column]))} ({o.direction}d)" for o in extra if present(r.get(o.column))]


def _hover(r: pd.Series, extra: tuple = ()) -> str:
    """One trial's hover card: the spec, its size and its measured figures."""
    ref = r.get("reference")
    head = f"<b>trial {int(r['number'])}</b>" + (f" [{esc(ref)}]" if present(ref) else "")
    if r.get("on_front"):
        head += " · on the front"
    lines = [
        head,
        f"depths {esc(r.get('depths'))} · a {esc(r.get('a'))} · b {esc(r.get('b'))}",
        f"groupwise layers: {esc(r.get('groupwise_layers', 'none'))}",
        f"params {num(r.get('params_m'), '.3f', ' M')} · MACs {num(r.get('gmacs'), '.4f', ' G')}",
        f"accuracy {num(r['accuracy'], '.4f')}"
        + (f" ± {num(r.get('accuracy_se'), '.4f')} (mean of {int(r['n'])} seeds)" if present(r.get("n")) and r["n"] > 1
           else (f" ± {num(r.get('accuracy_se'), '.4f')}" if present(r.get("accuracy_se")) else ""))
        + f" · {num(r['throughput'], ',.1f', ' img/s')}"
        f" · latency {num(r.get('latency_ms'), '.2f', ' ms')}",
    ]
    lines += _extra_lines(r, extra)
    if present(r.get("long_accuracy")):
        lines.append(f"long-budget accuracy {num(r['long_accuracy'], '.4f')}")
    if present(r.get("measure_contended")) and bool(r.get("measure_contended")):
        lines.append("<b>throughput measured under load (contended)</b>")
    if present(r.get("parent_trial")):
        detail = [f"{k} {esc(r.get(k))}" for k in ("pruned_ratio", "speedup") if present(r.get(k))]
        lines.append(f"pruned from trial {int(r['parent_trial'])}" + (f" ({', '.join(detail)})" if detail else ""))
    if present(r.get("arch")):
        lines.append(f"<i>{esc(r['arch'])}</i>")
    return "<br>".join(lines)


def scatter_figure(trials: pd.DataFrame, links: pd.DataFrame, device: str | None = None,
                   pool: pd.DataFrame | None = None) -> go.Figure:
    """Accuracy vs throughput: the front as a staircase, dominated trials faded,
    references as labelled diamonds, pruned variants joined to their parent;
    error bars of one standard error (accuracy) and half the IQR (throughput),
    and the front re-drawn on long-budget accuracy where there is one."""
    done = scatter_points_frame(trials)
    refs = done[is_reference(done)]
    pruned = done[done["kind"] == "pruned"] if "kind" in done else done.iloc[0:0]
    rest = done[~is_reference(done) & ~done.index.isin(pruned.index)]
    dominated = rest[~rest["on_front"].astype(bool)]
    front = done[done["on_front"].astype(bool)].sort_values("throughput")
    fig = go.Figure()
    extra = extra_objectives(trials)
    shade = _shade(done, extra)

    def points(frame: pd.DataFrame, colour: bool = False, **kw: Any) -> go.Scatter:
        bars = dict(thickness=1, width=3, color=kw.get("marker", {}).get("color", GREY))
        if colour and shade is not None:  # a third objective: the marker colour shows it
            kw["marker"] = {**kw.get("marker", {}), **shade(frame, kw["name"] == FRONT)}
        return go.Scatter(
            x=frame["throughput"].tolist(), y=frame["accuracy"].tolist(),
            error_y=dict(type="data", array=[float(v) if present(v) else 0.0 for v in frame["accuracy_se"]], **bars),
            error_x=dict(type="data", array=[float(v) for v in frame["throughput_err"]], **bars),
            hovertext=[_hover(r, extra) for _, r in frame.iterrows()], hoverinfo="text",
            customdata=frame["number"].tolist(), **kw,
        )

    if pool is not None and not pool.empty:  # behind everything: what was considered, not measured
        fig.add_trace(_pool_trace(pool))
    if not dominated.empty:
        fig.add_trace(points(dominated, colour=True, name=DOMINATED, mode="markers",
                             marker=dict(color=GREY, size=8, opacity=0.35, line=dict(width=0))))
    if not links.empty:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for _, lk in links.iterrows():
            xs += [lk["parent_throughput"], lk["child_throughput"], None]
            ys += [lk["parent_accuracy"], lk["child_accuracy"], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, name=PRUNED_LINKS, mode="lines", hoverinfo="skip",
                                 line=dict(color=GREEN, width=1.5, dash="dot")))
    # vh: from a higher-accuracy point, drop to the next point's accuracy, then run right to it.
    # With a third objective the front is not a staircase in this plane: its members are drawn, not joined.
    fig.add_trace(points(front, colour=True, name=FRONT, mode="markers" if extra else "lines+markers",
                         line=dict(color=BLUE, width=2, shape="vh"),
                         marker=dict(color=BLUE, size=11, line=dict(color="white", width=1))))
    if not pruned.empty:
        fig.add_trace(points(pruned, name=PRUNED, mode="markers", marker=dict(
            color=GREEN, size=10, symbol="x",
            opacity=[1.0 if f else 0.45 for f in pruned["on_front"].astype(bool)])))
    if not refs.empty:
        fig.add_trace(points(refs, name=REFERENCES, mode="markers+text", text=[esc(r) for r in refs["reference"]],
                             textposition="top center", textfont=dict(color=ORANGE, size=12),
                             marker=dict(color=ORANGE, size=14, symbol="diamond",
                                         line=dict(color="black", width=1))))
    long = done[done["on_long_front"].astype(bool)].sort_values("throughput") if "on_long_front" in done else done.iloc[0:0]
    if not long.empty:
        fig.add_trace(go.Scatter(
            x=long["throughput"].tolist(), y=long["long_accuracy"].tolist(), name=LONG_FRONT,
            mode="lines+markers", line=dict(color=BLUE, width=1.5, dash="dash", shape="vh"),
            marker=dict(color="white", size=9, line=dict(color=BLUE, width=2)),
            customdata=long["number"].tolist(),
            hovertemplate="trial %{customdata}: long-budget accuracy %{y:.4f}<extra></extra>",
        ))
    where = f", {esc(device)}" if device else ""
    fig.update_layout(
        template=TEMPLATE, height=560, margin=dict(l=60, r=20, t=40, b=60),
        xaxis=throughput_axis(done["throughput"], where),
        yaxis=dict(title=dict(text="accuracy (proxy task)")),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        hoverlabel=dict(align="left"),
    )
    if pool is not None and not pool.empty:
        name = esc(pool["proxy_name"].iloc[0])
        fig.update_layout(yaxis2=dict(title=dict(text=f"pool: zero-cost proxy ({name})"), overlaying="y",
                                      side="right", showgrid=False, type="log"))
    return fig


def _pool_trace(pool: pd.DataFrame) -> go.Scatter:
    """The pre-screened pool as a faint cloud on the right-hand axis; trained members ringed."""
    name = esc(pool["proxy_name"].iloc[0])
    return go.Scatter(
        x=pool["predicted_throughput"].tolist(), y=pool["proxy"].tolist(), yaxis="y2", name=POOL, mode="markers",
        marker=dict(color=GREY, size=6, opacity=0.3,
                    line=dict(color=BLUE, width=[1.5 if t else 0 for t in pool["trained"]])),
        hovertext=[f"pool member {int(r['rank'])}: predicted {r['predicted_throughput']:,.0f} img/s (latency "
                   f"table), {name} {r['proxy']:.4g}" + (" · trained" if r["trained"] else "")
                   for _, r in pool.iterrows()], hoverinfo="text",
    )


def _shade(done: pd.DataFrame, extra: tuple) -> Any:
    """Marker colours for the first extra objective (None without one): one scale for every trace, the
    better end dark, its colour bar on the front's trace."""
    if not extra or extra[0].column not in done or not done[extra[0].column].notna().any():
        return None
    o = extra[0]
    lo, hi = float(done[o.column].min()), float(done[o.column].max())

    def marker(frame: pd.DataFrame, bar: bool) -> dict[str, Any]:
        out: dict[str, Any] = dict(color=frame[o.column].astype(float).tolist(), cmin=lo, cmax=hi,
                                   colorscale="Viridis", reversescale=o.sign > 0, showscale=bar)
        if bar:
            out["colorbar"] = dict(title=dict(text=f"{o.label} ({o.unit})" if o.unit else o.label), len=0.6)
        return out

    return marker


def plot_scatter(study: optuna.Study, device: str | None = None) -> go.Figure:
    """The accuracy/throughput figure of a study (with at least one completed trial)."""
    trials = report_trials_frame(study)
    return scatter_figure(trials, pruned_links_frame(trials), device)
