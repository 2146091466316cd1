"""Does the brief proxy rank architectures as a longer training does? (Kendall tau over the
architectures trained at both budgets.)"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

__all__ = ["Fidelity", "fidelity"]


class Fidelity(NamedTuple):
    """Kendall tau between proxy (mean) and long-budget accuracy over ``n`` architectures."""

    tau: float
    p_value: float
    n: int


def fidelity(stats: pd.DataFrame) -> Fidelity:
    """Rank agreement of the proxy with the long budget (``scipy.stats.kendalltau``, tau-b) over
    :func:`.architectures.architecture_stats` rows.

    NaN with fewer than two architectures trained at both budgets.
    """
    both = stats[stats["long_accuracy"].notna()] if not stats.empty else stats
    if len(both) < 2:
        return Fidelity(float("nan"), float("nan"), len(both))
    from scipy.stats import kendalltau  # scipy is slow to import; only reports with long runs need it

    res = kendalltau(both["accuracy_mean"].astype(float), both["long_accuracy"].astype(float))
    return Fidelity(float(res.statistic), float(res.pvalue), len(both))
