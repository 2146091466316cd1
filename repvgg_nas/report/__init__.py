"""Study -> frames -> figures -> one HTML page (``python -m repvgg_nas.report``).

One small module per figure (cf. ``optuna/visualization/_hypervolume_history.py``):
a frame builder the tests assert on, a plotter, and a thin ``plot_*`` function
from a study. The judgement (front, claims, hypervolume, the search's
``pareto.csv`` frame) is :mod:`repvgg_nas.stats`'s and reading a study into the
trials frame :mod:`repvgg_nas.study_frames`'s, both re-exported here;
:mod:`.frames` holds the report's own study-wide frames, :mod:`.collect`
gathers every frame at once, :mod:`.page` renders and writes the page,
:mod:`.load` opens a study without creating one. Importing the package
registers nothing: a search writes the page only for a caller that asked
with :func:`register_report` (the search CLI does).
"""

from __future__ import annotations

from .architecture import architecture_figure, architecture_frame, plot_architecture
from .fidelity import fidelity_figure, fidelity_frame, plot_fidelity
from .collect import ReportData, collect_report_data, summary_frame
from .frames import empty_message, front_table_frame, report_trials_frame, status_frame
from .hypervolume import REFERENCE_HV, SEARCH_HV, hypervolume_figure, plot_hypervolume
from .importance import IMPORTANCE_EVALUATORS, ImportanceResult, importance_figure, importance_frame, plot_importance
from .load import load_report_study
from .page import REPORT_OUTPUT, register_report, render_html, write_report
from .rungs import CLIMBED, RUNG_LINKS, plot_rungs, rung_counts, rungs_caption, rungs_figure, rungs_frame, study_budgets
from ..study_frames import front_numbers, study_sigmas, trials_frame
from .scatter import (
    DOMINATED,
    FRONT,
    LONG_FRONT,
    PRUNED,
    PRUNED_LINKS,
    REFERENCES,
    plot_scatter,
    pruned_links_frame,
    scatter_figure,
    scatter_points_frame,
)
# Last: the name ``fidelity`` is the judgement function, not the figure module :mod:`.fidelity`.
from ..stats import (
    OBJECTIVES,
    Fidelity,
    accuracy_floor,
    architecture_stats,
    claim_text,
    claims_frame,
    dominates,
    elapsed_seconds,
    fidelity,
    hypervolume_2d,
    hypervolume_frame,
    hypervolume_reference,
    hypervolume_time_frame,
    pareto_frame,
    standard_error,
    verdict,
    write_csv,
)

__all__ = [
    "CLIMBED",
    "RUNG_LINKS",
    "elapsed_seconds",
    "hypervolume_time_frame",
    "plot_rungs",
    "rung_counts",
    "rungs_caption",
    "rungs_figure",
    "rungs_frame",
    "study_budgets",
    "Fidelity",
    "LONG_FRONT",
    "accuracy_floor",
    "architecture_stats",
    "claim_text",
    "claims_frame",
    "fidelity",
    "fidelity_figure",
    "fidelity_frame",
    "hypervolume_reference",
    "plot_fidelity",
    "scatter_points_frame",
    "standard_error",
    "study_sigmas",
    "verdict",
    "DOMINATED",
    "FRONT",
    "IMPORTANCE_EVALUATORS",
    "ImportanceResult",
    "OBJECTIVES",
    "PRUNED",
    "PRUNED_LINKS",
    "REFERENCES",
    "REFERENCE_HV",
    "ReportData",
    "SEARCH_HV",
    "architecture_figure",
    "architecture_frame",
    "collect_report_data",
    "dominates",
    "empty_message",
    "front_numbers",
    "front_table_frame",
    "hypervolume_2d",
    "hypervolume_figure",
    "hypervolume_frame",
    "importance_figure",
    "importance_frame",
    "load_report_study",
    "pareto_frame",
    "plot_architecture",
    "plot_hypervolume",
    "plot_importance",
    "plot_scatter",
    "pruned_links_frame",
    "render_html",
    "report_trials_frame",
    "scatter_figure",
    "status_frame",
    "summary_frame",
    "trials_frame",
    "write_csv",
    "write_report",
    "REPORT_OUTPUT",
    "register_report",
]
