"""The report page: one self-contained HTML file (plotly.js embedded once, no network access needed).

:func:`render_html` turns a :class:`ReportData` into the page (pure);
:func:`write_report` writes it and the CSV of every frame into a folder.
Every string that comes from a config or a trial is escaped before it
reaches the page.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from ..files import atomic_write_text
from ..layout import StudyPaths
from ..outputs import STUDY_OUTPUTS
from ..stats import write_csv
from .architecture import architecture_figure
from .collect import ReportData, collect_report_data
from .fidelity import fidelity_figure
from .hypervolume import hypervolume_figure
from .importance import importance_figure
from .rungs import rungs_caption, rungs_figure
from .scatter import scatter_figure
from .style import num, present

__all__ = ["REPORT_OUTPUT", "register_report", "render_html", "write_report"]

REPORT_OUTPUT = "report"  # its name in :data:`repvgg_nas.outputs.STUDY_OUTPUTS`

# The page may run inline scripts and styles and nothing else: no fetches, no remote images.
_CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:")

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


def _h(value: Any) -> str:
    """Text for our own HTML (element content and attribute values); missing values are blank."""
    return html.escape(str(value) if present(value) else "", quote=True)


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
    head = ("<tr><th>trial</th><th>role</th><th>reference</th><th>accuracy (mean ± SE)</th><th>seeds</th>"
            "<th>images/s</th><th>lockstep images/s</th>"
            "<th>latency ms</th><th>params M</th><th>GMACs</th><th>depths</th><th>a</th><th>b</th>"
            "<th>groupwise layers</th><th>claims vs references</th><th>dominated by trials</th></tr>")
    rows = []
    for _, r in front.iterrows():
        cls = "front" if r["on_front"] else "reference"
        rows.append(
            f'<tr class="{cls}"><td class="n">{int(r["number"])}</td><td>{_h(r["role"])}</td><td>{_h(r.get("reference"))}</td>'
            f'<td class="n">{num(r["accuracy"], ".4f")} ± {num(r.get("accuracy_se"), ".4f")}</td>'
            f'<td class="n">{_h(r.get("n"))}</td>'
            f'<td class="n">{num(r["throughput"], ",.1f")}{" (contended)" if present(r.get("contended")) and bool(r.get("contended")) else ""}</td>'
            f'<td class="n">{num(r.get("lockstep_throughput"), ",.1f")}</td>'
            f'<td class="n">{num(r.get("latency_ms"), ".2f")}</td><td class="n">{num(r.get("params_m"), ".3f")}</td>'
            f'<td class="n">{num(r.get("gmacs"), ".4f")}</td><td>{_h(r.get("depths"))}</td>'
            f'<td class="n">{_h(r.get("a"))}</td><td class="n">{_h(r.get("b"))}</td>'
            f'<td>{_h(r.get("groupwise_layers"))}</td><td>{_h(r.get("claims"))}'
            + (f'<br><i>long budget:</i> {_h(r.get("long_claims"))}' if present(r.get("long_claims")) else "")
            + '</td>'
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


def _figures(data: ReportData, device: str | None) -> list[tuple[str, str, str, go.Figure | None]]:
    """(div id, title, why, figure) of every figure, in page order."""
    summary = data.summary.set_index("field")["value"] if not data.summary.empty else pd.Series(dtype=object)
    point = summary.get("hypervolume reference point", "accuracy 0, 0 images/s")
    fidelity = [] if data.fidelity.empty else [
        ("fidelity", "Proxy vs long-budget accuracy",
         "Each point is a front member or reference trained at the proxy budget (mean over seeds, ± one "
         "standard error) and once at the long budget. Kendall tau near 1: the proxy ranks nets as a longer "
         "training does.", fidelity_figure(data.fidelity))]
    rungs = [] if not data.budgets else [
        ("rungs", "Candidates stopped at each rung",
         rungs_caption(data.rungs, data.budgets) + " Each point is one candidate's accuracy after a rung's "
         "budget, coloured by rung and joined to its other rungs; crosses mark where a result at the same rung "
         "dominated it (hover: by which trial).",
         rungs_figure(data.rungs, data.budgets) if not data.rungs.empty else None)]
    return [
        ("scatter", "Accuracy vs throughput",
         "Each point is one trained and measured architecture (mean accuracy over its seeds, bars: one "
         "standard error and half the timing IQR). The blue staircase is the Pareto front "
         "(nothing is both more accurate and faster; dashed: at the long budget); faded points are dominated; diamonds are the "
         "paper's RepVGG configs trained with the same budget; crosses are pruned variants, joined to "
         "the trial they were pruned from. Hover a point for its spec." + (
             " Faint grey dots (right axis) are the pre-screened pool the candidates were drawn from, at the "
             "speed the latency table predicts and their zero-cost proxy: predictions, never claims; ringed "
             "ones were trained." if data.pool is not None and not data.pool.empty else ""),
         scatter_figure(data.trials, data.links, device, data.pool)),
        ("hypervolume", "Hypervolume over trials",
         f"Area dominated by the front after each search trial (reference point: {point}). "
         "Above the dashed line, the searched front beats the references-only front. "
         "The buttons switch the x axis to the time the study has run (idle time between two runs left out), "
         "to compare runs (e.g. multi- and single-fidelity) at equal time.",
         hypervolume_figure(data.hypervolume, data.hypervolume_time)),
        *rungs,
        *fidelity,
        ("importance", "Parameter importance per objective",
         "Which search dimensions explain accuracy and throughput (Optuna importance evaluator, "
         "pruned variants left out).", importance_figure(data.importance)),
        ("architecture", "Architecture dimensions",
         "One band per searched trial across its depths, width multipliers and groups, coloured by "
         "accuracy; drag a category to reorder, hover for counts.", architecture_figure(data.architecture)),
    ]


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
        first = True
        for div_id, title, why, fig in _figures(data, device):
            inner = "<p>not enough data for this figure (see the notes above)</p>"
            if fig is not None:
                inner = _figure_html(fig, div_id, first)
                first = False
            body.append(f'<section id="sec-{div_id}"><h2>{_h(title)}</h2><p class="why">{_h(why)}</p>{inner}</section>')
        body.append(
            '<section id="front"><h2>Front and references</h2><p class="why">Front members and the paper '
            "references, fastest first. Each claim gives the accuracy gap ± one combined standard error and the "
            "throughput ratio ± its spread; a front member <i>dominates</i> a reference only when the accuracy gap "
            "exceeds the study's claim_sigmas combined standard errors and the ratio exceeds its spread. It is "
            "<i>as accurate, N.Nx faster</i> only when it is faster beyond the spread and an equivalence test "
            "passes: two one-sided tests at the same error rate (the gap ± 1.69 combined standard errors at "
            "claim_sigmas = 2) lie inside ± equivalence_points "
            "(default 1 point). A gap that is neither beyond the noise nor shown equivalent reads "
            "<i>inconclusive on accuracy</i> (too few seeds or validation images to tell), or <i>inconclusive</i> "
            "when speed does not tell either; <i>ties</i> means equivalent accuracy and a ratio within its spread."
            f"</p>{_front_table_html(data.front)}</section>"
        )
        body.append(f'<section id="status"><h2>Trials</h2>{_status_table_html(data.status)}</section>')
    # The CSV files lie next to the page: link them by file name.
    csv_names = [StudyPaths(Path()).figure_csv(n).name for n in data.frames()]
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
    paths = StudyPaths(Path(out_dir))
    if data is None:
        cache = Path(cache_path) if cache_path is not None else paths.throughput_cache
        data = collect_report_data(study, storage=storage, importance=importance, cache_path=cache)
    for name, frame in data.frames().items():
        write_csv(frame, paths.figure_csv(name))
    page = render_html(data, study.study_name, storage)
    return atomic_write_text(paths.report_html, page)


def register_report() -> None:
    """Have every search run in this process refresh the study's page (:data:`repvgg_nas.outputs.STUDY_OUTPUTS`).

    The search sits below the report and cannot call :func:`write_report`
    itself; whoever wants the page written (the search CLI, a script around
    :func:`repvgg_nas.search.run_search`) says so by calling this. A second call does nothing.
    """
    if REPORT_OUTPUT not in STUDY_OUTPUTS:
        STUDY_OUTPUTS.register(REPORT_OUTPUT, write_report)
