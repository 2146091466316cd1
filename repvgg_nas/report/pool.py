"""The pre-screened pool a study drew its candidates from: data for the scatter's faint cloud.

Each member is shown at the speed the latency table predicts for it, against
its zero-cost proxy (a right-hand axis: a proxy is not an accuracy), so a
reader sees what was considered beside what was trained and measured. These
are predictions: they never stand in a claim.
"""

from __future__ import annotations

import optuna
import pandas as pd

from .. import attrs
from ..prescreen import Pool
from ..stats import completed

__all__ = ["POOL_COLUMNS", "pool_frame"]

POOL_COLUMNS = ("rank", "spec_hash", "proxy", "proxy_name", "predicted_throughput", "layer", "trained")


def pool_frame(study: optuna.Study, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per pool member (empty for a blind search); ``trained``: a completed trial has its net."""
    raw = study.user_attrs.get(attrs.STUDY_POOL)
    if raw is None:
        return pd.DataFrame(columns=list(POOL_COLUMNS))
    pool = Pool.from_dict(raw)
    done = completed(trials)
    trained = set(done["spec_hash"]) if "spec_hash" in done else set()
    return pd.DataFrame([
        {"rank": k, "spec_hash": m.spec_hash, "proxy": m.proxy, "proxy_name": pool.settings.proxy,
         "predicted_throughput": m.throughput, "layer": m.layer, "trained": m.spec_hash in trained}
        for k, m in enumerate(pool.members)
    ], columns=list(POOL_COLUMNS))
