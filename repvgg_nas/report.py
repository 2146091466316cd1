"""Interactive Pareto report: ``python -m repvgg_nas.report --study NAME``.

Writes ``reports/<study>/index.html``: one self-contained page (plotly.js
embedded once, no network access needed) with the accuracy/throughput front
against the paper references, the hypervolume over trials, parameter
importance per objective, the architecture dimensions and a table of the
front, plus ``report_<frame>.csv`` exports of the data behind every figure.

The frames come from :mod:`repvgg_nas.report_data`; this module only draws
them. Every string that comes from a config or a trial is escaped before it
reaches the page, in our own HTML and in plotly's hover/legend text alike.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from .checkpoint import atomic_write
from .cli import run_cli
from .errors import ConfigError
from .report_data import IMPORTANCE_EVALUATORS, ReportData, collect_report_data
from .results import write_csv

__all__ = [
    "architecture_figure",
    "hypervolume_figure",
    "importance_figure",
    "load_report_study",
    "main",
    "render_html",
    "scatter_figure",
    "write_report",
]

# Plotly trace names: the page's legend, and what the browser test looks for.
FRONT = "Pareto front"
DOMINATED = "dominated trials"
REFERENCES = "paper references"
PRUNED = "pruned variants"
PRUNED_LINKS = "pruned from parent"
SEARCH_HV = "search front"
REFERENCE_HV = "references-only front"

_TEMPLATE = "plotly_white"
_BLUE, _ORANGE, _GREY, _GREEN = "#1f6feb", "#e8590c", "#8c959f", "#2f9e44"

# The page may run inline scripts and styles and nothing else: no fetches, no remote images.
_CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:")


def _esc(value: Any) -> str:
    """Text for plotly labels/hover: ``&``, ``<`` and ``>`` escaped, so no tag is ever parsed.

    Plotly turns ``&lt;`` back into a literal ``<`` in a text node, so the text
    reads as written. Quotes stay as they are (plotly does not decode ``&quot;``).
    """
    return html.escape("" if value is None else str(value), quote=False)


def _h(value: Any) -> str:
    """Text for our own HTML (element content and attribute values); missing values are blank."""
    return html.escape(str(value) if _present(value) else "", quote=True)


def _num(v: Any, fmt: str, unit: str = "") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "?"
    return "?" if math.isnan(f) else f"{f:{fmt}}{unit}"


def _present(v: Any) -> bool:
    """False for None, NaN and the empty string: what a frame holds where a trial has no value."""
    if v is None or (isinstance(v, str) and not v):
        return False
    return not (pd.api.types.is_scalar(v) and pd.isna(v))


def _hover(r: pd.Series) -> str:
    """One trial's hover card: the spec, its size and its measured figures."""
    ref = r.get("reference")
    head = f"<b>trial {int(r['number'])}</b>" + (f" [{_esc(ref)}]" if _present(ref) else "")
    if r.get("on_front"):
        head += " · on the front"
    lines = [
        head,
        f"depths {_esc(r.get('depths'))} · a {_esc(r.get('a'))} · b {_esc(r.get('b'))}",
        f"groupwise layers: {_esc(r.get('groupwise_layers', 'none'))}",
        f"params {_num(r.get('params_m'), '.3f', ' M')} · MACs {_num(r.get('gmacs'), '.4f', ' G')}",
        f"accuracy {_num(r['accuracy'], '.4f')} · {_num(r['throughput'], ',.1f', ' img/s')}"
        f" · latency {_num(r.get('latency_ms'), '.2f', ' ms')}",
    ]
    if _present(r.get("parent_trial")):
        detail = [f"{k} {_esc(r.get(k))}" for k in ("pruned_ratio", "speedup") if _present(r.get(k))]
        lines.append(f"pruned from trial {int(r['parent_trial'])}" + (f" ({', '.join(detail)})" if detail else ""))
    if _present(r.get("arch")):
        lines.append(f"<i>{_esc(r['arch'])}</i>")
    return "<br>".join(lines)


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["state"] == "COMPLETE"] if not trials.empty else trials


def _is_ref(frame: pd.DataFrame) -> pd.Series:
    return frame["reference"].map(lambda v: isinstance(v, str) and bool(v))


def scatter_figure(trials: pd.DataFrame, links: pd.DataFrame, device: str | None = None) -> go.Figure:
    """Accuracy vs throughput: the front as a staircase, dominated trials faded,
    references as labelled diamonds, pruned variants joined to their parent."""
    done = _completed(trials)
    refs = done[_is_ref(done)]
    pruned = done[done["kind"] == "pruned"] if "kind" in done else done.iloc[0:0]
    rest = done[~_is_ref(done) & ~done.index.isin(pruned.index)]
    dominated = rest[~rest["on_front"].astype(bool)]
    front = done[done["on_front"].astype(bool)].sort_values("throughput")
    fig = go.Figure()

    def points(frame: pd.DataFrame, **kw: Any) -> go.Scatter:
        return go.Scatter(
            x=frame["throughput"].tolist(), y=frame["accuracy"].tolist(),
            hovertext=[_hover(r) for _, r in frame.iterrows()], hoverinfo="text",
            customdata=frame["number"].tolist(), **kw,
        )

    if not dominated.empty:
        fig.add_trace(points(dominated, name=DOMINATED, mode="markers",
                             marker=dict(color=_GREY, size=8, opacity=0.35, line=dict(width=0))))
    if not links.empty:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for _, lk in links.iterrows():
            xs += [lk["parent_throughput"], lk["child_throughput"], None]
            ys += [lk["parent_accuracy"], lk["child_accuracy"], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, name=PRUNED_LINKS, mode="lines", hoverinfo="skip",
                                 line=dict(color=_GREEN, width=1.5, dash="dot")))
    # vh: from a higher-accuracy point, drop to the next point's accuracy, then run right to it.
    fig.add_trace(points(front, name=FRONT, mode="lines+markers", line=dict(color=_BLUE, width=2, shape="vh"),
                         marker=dict(color=_BLUE, size=11, line=dict(color="white", width=1))))
    if not pruned.empty:
        fig.add_trace(points(pruned, name=PRUNED, mode="markers", marker=dict(
            color=_GREEN, size=10, symbol="x",
            opacity=[1.0 if f else 0.45 for f in pruned["on_front"].astype(bool)])))
    if not refs.empty:
        fig.add_trace(points(refs, name=REFERENCES, mode="markers+text", text=[_esc(r) for r in refs["reference"]],
                             textposition="top center", textfont=dict(color=_ORANGE, size=12),
                             marker=dict(color=_ORANGE, size=14, symbol="diamond",
                                         line=dict(color="black", width=1))))
    thr = done["throughput"].astype(float)
    log_x = len(thr) > 1 and thr.min() > 0 and thr.max() / thr.min() > 10
    where = f", {_esc(device)}" if device else ""
    fig.update_layout(
        template=_TEMPLATE, height=560, margin=dict(l=60, r=20, t=40, b=60),
        xaxis=dict(title=dict(text=f"throughput (images/s{where}){' · log scale' if log_x else ''}"),
                   type="log" if log_x else "linear"),
        yaxis=dict(title=dict(text="accuracy (proxy task)")),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        hoverlabel=dict(align="left"),
    )
    return fig


def hypervolume_figure(hv: pd.DataFrame) -> go.Figure:
    """Hypervolume of the front after each trial, with the references-only front as the bar to clear."""
    fig = go.Figure(go.Scatter(
        x=hv["number"].tolist(), y=hv["hypervolume"].tolist(), name=SEARCH_HV, mode="lines+markers",
        line=dict(color=_BLUE, shape="hv"),
        hovertemplate="after trial %{x}: %{y:.4g}<extra></extra>",
    ))
    base = hv["references_hypervolume"].dropna()
    if len(base):
        fig.add_trace(go.Scatter(
            x=[hv["number"].min(), hv["number"].max()], y=[base.iloc[0]] * 2, name=REFERENCE_HV,
            mode="lines", line=dict(color=_ORANGE, dash="dash"),
            hovertemplate="references only: %{y:.4g}<extra></extra>",
        ))
    fig.update_layout(
        template=_TEMPLATE, height=380, margin=dict(l=60, r=20, t=40, b=50),
        xaxis=dict(title=dict(text="trial number")),
        yaxis=dict(title=dict(text="hypervolume (accuracy × images/s above (0, 0))"), rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def importance_figure(imp: pd.DataFrame) -> go.Figure | None:
    """Grouped bars: how much each search dimension explains each objective (None when there is no data)."""
    if imp.empty:
        return None
    order = imp.groupby("param")["importance"].max().sort_values().index.tolist()
    fig = go.Figure()
    for objective, color in zip(("accuracy", "throughput"), (_BLUE, _ORANGE)):
        part = imp[imp["objective"] == objective].set_index("param").reindex(order)
        if part["importance"].notna().any():
            fig.add_trace(go.Bar(
                y=[_esc(p) for p in order], x=part["importance"].fillna(0).tolist(), name=objective,
                orientation="h", marker_color=color,
                hovertemplate=f"{objective}: %{{y}} %{{x:.3f}}<extra></extra>",
            ))
    evaluator = _esc(imp["evaluator"].iloc[0])
    fig.update_layout(
        template=_TEMPLATE, barmode="group", height=max(260, 60 + 40 * len(order)),
        margin=dict(l=110, r=20, t=40, b=50),
        xaxis=dict(title=dict(text=f"importance ({evaluator}, normalized per objective)")),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def _category(v: Any) -> str:
    """A parallel-categories label: 2.0 reads as 2 (a column with a gap turns ints into floats)."""
    if not _present(v):
        return "n/a"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return _esc(v)


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
    dims = [dict(label=_esc(labels.get(c, c)), values=[_category(v) for v in arch[c]]) for c in varying]
    dims.append(dict(label="on front", values=["yes" if f else "no" for f in arch["on_front"]]))
    colors = arch[color_by].astype(float).tolist()
    fig = go.Figure(go.Parcats(
        dimensions=dims,
        line=dict(color=colors, colorscale="Viridis", showscale=True, shape="hspline",
                  colorbar=dict(title=dict(text=_esc(color_by)))),
        hoveron="color", hoverinfo="count+probability", arrangement="freeform",
    ))
    fig.update_layout(template=_TEMPLATE, height=440, margin=dict(l=60, r=60, t=50, b=30))
    return fig


# ---------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1280px;margin:0 auto;padding:24px}
header,section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 20px;margin-bottom:18px}
h1{font-size:1.5em;margin:0 0 4px} h2{font-size:1.15em;margin:0 0 8px}
p.lead{color:#57606a;margin:0 0 12px} p.why{color:#57606a;margin:0 0 8px;font-size:.92em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0;font-size:.9em}
dt{color:#57606a} dd{margin:0;word-break:break-word}
h3{font-size:.95em;margin:12px 0 4px;color:#24292f;text-transform:capitalize}
table{border-collapse:collapse;font-size:.88em;width:100%} th,td{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left}
th{background:#f6f8fa} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.front td:first-child{border-left:3px solid #1f6feb} tr.reference td:first-child{border-left:3px solid #e8590c}
.message{background:#fff8c5;border:1px solid #d4a72c;border-radius:8px;padding:14px 18px;margin-bottom:18px;font-size:1.05em}
ul.notes{color:#9a6700;margin:0 0 12px} code,pre{background:#f6f8fa;border-radius:4px;padding:1px 4px;font-size:.9em}
pre{padding:8px 10px;overflow-x:auto}
"""


def _summary_html(summary: pd.DataFrame) -> str:
    parts = []
    for section, group in summary.groupby("section", sort=False):
        items = "".join(f"<dt>{_h(r['field'])}</dt><dd>{_h(r['value'])}</dd>" for _, r in group.iterrows()
                        if r["field"] not in ("name", "description"))
        parts.append(f"<h3>{_h(section)}</h3><dl>{items}</dl>")
    return "".join(parts)


def _front_table_html(front: pd.DataFrame) -> str:
    if front.empty:
        return "<p>no completed front members or references</p>"
    head = ("<tr><th>trial</th><th>role</th><th>reference</th><th>accuracy</th><th>images/s</th>"
            "<th>latency ms</th><th>params M</th><th>GMACs</th><th>depths</th><th>a</th><th>b</th>"
            "<th>groupwise layers</th><th>dominates</th><th>dominated by trials</th></tr>")
    rows = []
    for _, r in front.iterrows():
        cls = "front" if r["on_front"] else "reference"
        rows.append(
            f'<tr class="{cls}"><td class="n">{int(r["number"])}</td><td>{_h(r["role"])}</td><td>{_h(r.get("reference"))}</td>'
            f'<td class="n">{_num(r["accuracy"], ".4f")}</td><td class="n">{_num(r["throughput"], ",.1f")}</td>'
            f'<td class="n">{_num(r.get("latency_ms"), ".2f")}</td><td class="n">{_num(r.get("params_m"), ".3f")}</td>'
            f'<td class="n">{_num(r.get("gmacs"), ".4f")}</td><td>{_h(r.get("depths"))}</td>'
            f'<td class="n">{_h(r.get("a"))}</td><td class="n">{_h(r.get("b"))}</td>'
            f'<td>{_h(r.get("groupwise_layers"))}</td><td>{_h(r.get("dominates"))}</td>'
            f'<td>{_h(r.get("dominated_by"))}</td></tr>'
        )
    return f'<table id="front-table">{head}{"".join(rows)}</table>'


def _status_table_html(status: pd.DataFrame) -> str:
    if status.empty:
        return "<p>no trials</p>"
    rows = "".join(
        f'<tr><td>{_h(str(r["state"]).lower())}</td><td class="n">{int(r["count"])}</td><td>{_h(r["reasons"])}</td></tr>'
        for _, r in status.iterrows()
    )
    return f'<table id="status-table"><tr><th>state</th><th>trials</th><th>reasons</th></tr>{rows}</table>'


def _tools_html(study_name: str, storage: str | None, csv_names: Sequence[str]) -> str:
    """How to open the same study with Optuna's own tools, and the CSV files of every figure."""
    links = " ".join(f'<a href="{_h(n)}">{_h(n)}</a>' for n in csv_names)
    url = _h(shlex.quote(storage)) if storage else "STORAGE_URL"
    name = _h(shlex.quote(study_name))
    return (
        "<section id=\"tools\"><h2>Data and tools</h2>"
        f"<p class=\"why\">CSV of every figure, next to this page: {links}</p>"
        "<p class=\"why\">The study is a standard Optuna study; browse it live with optuna-dashboard "
        "(<code>pip install optuna-dashboard</code>) or query it with the <code>optuna</code> CLI:</p>"
        f"<pre>optuna-dashboard {url}\n"
        f"optuna best-trials --storage {url} --study-name {name}\n"
        f"optuna trials --storage {url} --study-name {name} -f json</pre></section>"
    )


def _figure_html(fig: go.Figure, div_id: str, first: bool) -> str:
    return pio.to_html(
        fig, include_plotlyjs=first, full_html=False, div_id=div_id, include_mathjax=False,
        config={"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png", "filename": div_id, "scale": 2}},
    )


def render_html(data: ReportData, study_name: str, storage: str | None = None) -> str:
    """The whole page as one string; plotly.js is embedded once, in the first figure."""
    summary = data.summary.set_index("field")["value"] if not data.summary.empty else pd.Series(dtype=object)
    description = summary.get("description", "")
    device = summary.get("device") if summary.get("device") not in (None, "unknown") else None
    body: list[str] = []
    if data.message is not None:
        body.append(f'<div class="message" id="message"><b>{_h(data.message)}</b></div>')
        body.append(f'<section id="status"><h2>Trials</h2>{_status_table_html(data.status)}</section>')
    else:
        if data.notes:
            body.append('<ul class="notes">' + "".join(f"<li>{_h(n)}</li>" for n in data.notes) + "</ul>")
        figures = [
            ("scatter", "Accuracy vs throughput",
             "Each point is one trained and measured network. The blue staircase is the Pareto front "
             "(nothing is both more accurate and faster); faded points are dominated; diamonds are the "
             "paper's RepVGG configs trained with the same budget; crosses are pruned variants, joined to "
             "the trial they were pruned from. Hover a point for its spec.",
             scatter_figure(data.trials, data.links, device)),
            ("hypervolume", "Hypervolume over trials",
             "Area dominated by the front after each trial (reference point: 0 accuracy, 0 images/s). "
             "Above the dashed line, the searched front beats the references-only front.",
             hypervolume_figure(data.hypervolume)),
            ("importance", "Parameter importance per objective",
             "Which search dimensions explain accuracy and throughput (Optuna importance evaluator, "
             "pruned variants left out).", importance_figure(data.importance)),
            ("architecture", "Architecture dimensions",
             "One band per searched trial across its depths, width multipliers and groups, coloured by "
             "accuracy; drag a category to reorder, hover for counts.", architecture_figure(data.architecture)),
        ]
        first = True
        for div_id, title, why, fig in figures:
            inner = "<p>not enough data for this figure (see the notes above)</p>"
            if fig is not None:
                inner = _figure_html(fig, div_id, first)
                first = False
            body.append(f'<section id="sec-{div_id}"><h2>{_h(title)}</h2><p class="why">{_h(why)}</p>{inner}</section>')
        body.append(
            '<section id="front"><h2>Front and references</h2><p class="why">Front members and the paper '
            "references, fastest first; <i>dominates</i> names the references a front member beats on both "
            f"objectives.</p>{_front_table_html(data.front)}</section>"
        )
        body.append(f'<section id="status"><h2>Trials</h2>{_status_table_html(data.status)}</section>')
    csv_names = [f"report_{n}.csv" for n in data.frames()]
    made_at = summary.get("made at", "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_h(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_h(study_name)} · RepVGG NAS report</title><style>{_CSS}</style></head><body><main>"
        f'<header id="summary"><h1>RepVGG NAS report: {_h(study_name)}</h1>'
        f'<p class="lead">{_h(description) or "no description"} · made {_h(made_at)}</p>'
        f"{_summary_html(data.summary)}</header>"
        + "".join(body)
        + _tools_html(study_name, summary.get("storage") or storage, csv_names)
        + "</main></body></html>\n"
    )


def write_report(
    study: optuna.Study,
    out_dir: str | Path,
    *,
    storage: str | None = None,
    importance: str = "ped-anova",
    cache_path: str | Path | None = None,
    data: ReportData | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/report_*.csv``; return the page's path.

    ``cache_path`` is the search's throughput cache, read for what the figures
    were measured with (default ``out_dir/throughput_cache.json``). A study
    with nothing completed still gets a page, which says why it is empty.
    Files are written atomically, so a refresh never leaves half a page.
    """
    out_dir = Path(out_dir)
    if data is None:
        cache = Path(cache_path) if cache_path is not None else out_dir / "throughput_cache.json"
        data = collect_report_data(study, storage=storage, importance=importance, cache_path=cache)
    for name, frame in data.frames().items():
        _shareable(write_csv(frame, out_dir / f"report_{name}.csv"))
    page = render_html(data, study.study_name, storage)
    return _shareable(atomic_write(out_dir / "index.html", lambda tmp: Path(tmp).write_text(page, encoding="utf-8")))


def _shareable(path: Path) -> Path:
    """Give a written file the usual umask permissions (temp files are created owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


# ---------------------------------------------------------------------------
# opening a study and the CLI
# ---------------------------------------------------------------------------


def _sqlite_file(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None for other URLs)."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def load_report_study(name: str, storage: str | None = None, reports_dir: str | Path = "reports") -> tuple[optuna.Study, str]:
    """Open an existing study; never create a database or a study as a side effect.

    The default storage is the search's (``sqlite:///<reports_dir>/<name>/study.db``).
    Returns the study and the storage URL it came from.
    """
    hint = f"run the search first: python -m repvgg_nas.search --study {name}"
    if storage is None:
        storage = f"sqlite:///{(Path(reports_dir) / name / 'study.db').as_posix()}"
    db = _sqlite_file(storage)
    if db is not None and not db.is_file():
        raise ConfigError(f"no study {name!r}: storage {db} does not exist; {hint}")
    if storage.startswith("sqlite:") and db is None:
        raise ConfigError(f"storage {storage!r} is not an sqlite file URL (sqlite:///path/to/study.db)")
    try:
        return optuna.load_study(study_name=name, storage=storage), storage
    except KeyError:
        try:
            names = optuna.get_all_study_names(storage)
        except Exception:
            names = []
        held = f" (it holds: {', '.join(names)})" if names else " (it holds no studies)"
        raise ConfigError(f"no study {name!r} in {storage}{held}; {hint}") from None
    except (ValueError, ImportError, RuntimeError) as e:
        raise ConfigError(f"cannot open storage {storage!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # SQLAlchemy's OperationalError and friends
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"cannot open storage {storage!r}: {type(e).__name__}: {first}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repvgg_nas.report",
        description="Write an interactive, self-contained HTML report of a search: the accuracy/"
        "throughput Pareto front against the paper references, hypervolume over trials, parameter "
        "importance, architecture dimensions and a table of the front, plus CSV of every figure.",
    )
    parser.add_argument("--study", required=True, help="study name (as given to search; a .toml path uses its file name)")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<reports-dir>/<study>/study.db)")
    parser.add_argument("--reports-dir", default="reports", help="where search wrote its results (default: reports/)")
    parser.add_argument("--out", help="folder for index.html and the CSV files (default: <reports-dir>/<study>/)")
    parser.add_argument("--importance", default="ped-anova", help=f"importance evaluator: {', '.join(IMPORTANCE_EVALUATORS)} (default ped-anova)")
    args = parser.parse_args(argv)

    name = Path(args.study).stem if args.study.endswith(".toml") else args.study
    IMPORTANCE_EVALUATORS.get(args.importance)()  # an unknown or unusable evaluator fails before any work
    study, storage = load_report_study(name, args.storage, args.reports_dir)
    study_dir = Path(args.reports_dir) / name
    out_dir = Path(args.out) if args.out else study_dir
    data = collect_report_data(study, storage=storage, importance=args.importance,
                               cache_path=study_dir / "throughput_cache.json")
    path = write_report(study, out_dir, storage=storage, data=data)
    if data.message is not None:
        print(data.message)
    else:
        front = data.front[data.front["on_front"]]
        hv = data.hypervolume.iloc[-1]
        base = hv["references_hypervolume"]
        vs = "" if pd.isna(base) else f" (references only: {base:.4g})"
        print(f"{len(data.trials)} trial(s), {len(front)} on the front; hypervolume {hv['hypervolume']:.4g}{vs}")
        for note in data.notes:
            print(f"note: {note}")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
