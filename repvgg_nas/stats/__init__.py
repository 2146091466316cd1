"""The judgement both the search and the report use: Pareto geometry, standard errors, per-architecture
statistics, the front, hypervolume and claims with an equivalence test.

Data only (frames, NamedTuples and numbers the tests assert on); drawing is
the report's. Below ``search`` and ``report``: this package imports neither,
nor Optuna nor the storage; :mod:`repvgg_nas.study_frames` reads a study into
the frames it works on.

- :mod:`.noise`: the standard error of a mean accuracy, the prior seed spread;
- :mod:`.pareto`: dominance and the non-dominated mask on point values (2 or more objectives);
- :mod:`.architectures`: one row per architecture, the front on mean accuracy;
- :mod:`.proxy_fidelity`: Kendall tau between proxy and long-budget accuracy;
- :mod:`.claims`: each front member's verdict against each reference (the table of cases);
- :mod:`.trials`: the trials frame -> the front frame (the search's ``pareto.csv``);
- :mod:`.hypervolume`: exact hypervolume in 2 or more objectives, its history over a study.
"""

from __future__ import annotations

from .architectures import STATS_COLUMNS, architecture_stats
from .ehvi import ehvi, improvement
from .claims import (
    CLAIM_COLUMNS,
    DEFAULT_EQUIVALENCE_POINTS,
    DOMINATES,
    EQUIVALENCE,
    INCONCLUSIVE,
    TIES,
    accuracy_equivalent,
    equivalence_sigmas,
    claim_text,
    claims_frame,
    verdict,
)
from .proxy_fidelity import Fidelity, fidelity
from .hypervolume import (
    HYPERVOLUME_COLUMNS,
    accuracy_floor,
    elapsed_seconds,
    hypervolume,
    hypervolume_2d,
    hypervolume_frame,
    hypervolume_reference,
    hypervolume_time_frame,
)
from .noise import PRIOR_SEED_STD, standard_error
from .pareto import OBJECTIVES, dominates, extra_objectives, frame_objectives, pareto_mask
from .trials import PredictionCheck, completed, is_reference, pareto_frame, prediction_check, write_csv

__all__ = [
    "ehvi",
    "improvement",
    "CLAIM_COLUMNS",
    "DEFAULT_EQUIVALENCE_POINTS",
    "DOMINATES",
    "EQUIVALENCE",
    "Fidelity",
    "HYPERVOLUME_COLUMNS",
    "INCONCLUSIVE",
    "OBJECTIVES",
    "PRIOR_SEED_STD",
    "STATS_COLUMNS",
    "TIES",
    "accuracy_equivalent",
    "equivalence_sigmas",
    "accuracy_floor",
    "architecture_stats",
    "claim_text",
    "claims_frame",
    "completed",
    "dominates",
    "extra_objectives",
    "frame_objectives",
    "elapsed_seconds",
    "fidelity",
    "hypervolume",
    "hypervolume_2d",
    "hypervolume_frame",
    "hypervolume_reference",
    "hypervolume_time_frame",
    "is_reference",
    "pareto_frame",
    "pareto_mask",
    "PredictionCheck",
    "prediction_check",
    "standard_error",
    "verdict",
    "write_csv",
]
