"""Interactive Pareto report: ``python -m repvgg_nas.report --study NAME``.

Writes ``reports/<study>/index.html``: one self-contained page (plotly.js
embedded once, no network access needed) with the accuracy/throughput front
against the paper references, the hypervolume over trials, parameter
importance per objective, the architecture dimensions and a table of the
front, plus ``report_<frame>.csv`` exports of the data behind every figure.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..cli import ArgumentParser, run_cli
from ..files import ensure_dir
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths
from . import IMPORTANCE_EVALUATORS, collect_report_data, load_report_study, write_report

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m repvgg_nas.report",
        description="Write an interactive, self-contained HTML report of a search: the accuracy/"
        "throughput Pareto front against the paper references, hypervolume over trials, parameter "
        "importance, architecture dimensions and a table of the front, plus CSV of every figure.",
    )
    parser.add_argument("--study", required=True, help="study name (as given to search; a .toml path uses its file name)")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<reports-dir>/<study>/study.db)")
    parser.add_argument("--reports-dir", default=DEFAULT_REPORTS_DIR, help="where search wrote its results (default: reports/)")
    parser.add_argument("--out", help="folder for index.html and the CSV files (default: <reports-dir>/<study>/)")
    parser.add_argument("--importance", default="ped-anova", help=f"importance evaluator: {', '.join(IMPORTANCE_EVALUATORS)} (default ped-anova)")
    args = parser.parse_args(argv)

    name = Path(args.study).stem if args.study.endswith(".toml") else args.study
    IMPORTANCE_EVALUATORS.get(args.importance)()  # an unknown or unusable evaluator fails before any work
    ensure_dir(args.out or StudyPaths.of(name, args.reports_dir).root, "--out" if args.out else "--reports-dir",
               create=False)
    study, storage = load_report_study(name, args.storage, args.reports_dir)
    paths = StudyPaths.of(name, args.reports_dir)
    out_dir = Path(args.out) if args.out else paths.root
    data = collect_report_data(study, storage=storage, importance=args.importance,
                               cache_path=paths.throughput_cache)
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
