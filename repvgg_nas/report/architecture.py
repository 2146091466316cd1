"""Architecture dimensions: one band per searched trial across depths, widths and groups.

Data: :func:`architecture_frame`; drawing: :func:`architecture_figure`; from
a study in one call: :func:`plot_architecture`.
"""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from ..stats import completed
from .frames import report_trials_frame
from .style import TEMPLATE, esc, present

__all__ = ["architecture_figure", "architecture_frame", "plot_architecture"]


def architecture_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Architecture dimensions of every completed searched trial (pruned variants left out).

    One ``depth<i>`` column per stage plus ``a``, ``b``, ``g``, the groupwise
    pattern and how many layers it makes groupwise. Pruned variants are left
    out: their per-layer widths are not points of the search space.
    """
    done = completed(trials)
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


def _category(v: Any) -> str:
    """A parallel-categories label: 2.0 reads as 2 (a column with a gap turns ints into floats)."""
    if not present(v):
        return "n/a"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return esc(v)


def architecture_figure(arch: pd.DataFrame, color_by: str = "accuracy") -> go.Figure | None:
    """Parallel categories over depths, a, b and groups, one band per trial, coloured by an objective.

    Parallel categories is drawn in SVG (parallel coordinates needs WebGL,
    which headless and remote browsers often lack). Dimensions that never
    vary are dropped unless nothing varies.
    """
    if arch.empty:
        return None
    cols = [c for c in arch.columns if c.startswith("depth")] + ["a", "b", "groupwise", "g", "n_groupwise_layers"]
    cols = [c for c in cols if c in arch]
    varying = [c for c in cols if arch[c].astype(str).nunique() > 1] or cols
    labels = {"groupwise": "groupwise pattern", "g": "groups", "n_groupwise_layers": "groupwise layers"}
    dims = [dict(label=esc(labels.get(c, c)), values=[_category(v) for v in arch[c]]) for c in varying]
    dims.append(dict(label="on front", values=["yes" if f else "no" for f in arch["on_front"]]))
    colors = arch[color_by].astype(float).tolist()
    fig = go.Figure(go.Parcats(
        dimensions=dims,
        line=dict(color=colors, colorscale="Viridis", showscale=True, shape="hspline",
                  colorbar=dict(title=dict(text=esc(color_by)))),
        hoveron="color", hoverinfo="count+probability", arrangement="freeform",
    ))
    fig.update_layout(template=TEMPLATE, height=440, margin=dict(l=60, r=60, t=50, b=30))
    return fig


def plot_architecture(study: optuna.Study, color_by: str = "accuracy") -> go.Figure | None:
    """The architecture figure of a study (None when no searched trial completed)."""
    return architecture_figure(architecture_frame(report_trials_frame(study)), color_by)
