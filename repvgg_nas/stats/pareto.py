"""Pareto geometry on point values: dominance and the non-dominated mask (no noise here; the claims
about nets, which account for it, are :mod:`.claims`).

Every coordinate is maximized; a caller with a minimized objective (say peak
memory) passes its negation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..objectives import BASE_OBJECTIVES, Objective, names, objectives_for

__all__ = ["OBJECTIVES", "dominates", "extra_objectives", "frame_objectives", "pareto_mask"]

# The objectives every study has, as the table names them (both maximized: proxy accuracy, measured images/s).
OBJECTIVES = names(BASE_OBJECTIVES)


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], objectives: Sequence[str] = OBJECTIVES) -> bool:
    """True when ``a`` is at least as good as ``b`` in every objective and better in one (point values, no
    noise: the front's geometry; claims about nets use :func:`.claims.verdict`)."""
    ge = all(a[k] >= b[k] for k in objectives)
    gt = any(a[k] > b[k] for k in objectives)
    return ge and gt


def _points(columns: tuple[Any, ...]) -> np.ndarray:
    """``(n, d)`` points from d columns, or from one ``(n, d)`` array."""
    if len(columns) == 1:
        pts = np.asarray(columns[0], dtype=float)
        return pts.reshape(len(pts), -1) if pts.ndim != 2 else pts
    return np.column_stack([np.asarray(c, dtype=float) for c in columns]) if columns else np.empty((0, 0))


def pareto_mask(*columns: Any) -> np.ndarray:
    """Which points are not dominated, every coordinate maximized (equal points both stay).

    ``pareto_mask(accuracy, throughput)``, ``pareto_mask(accuracy, throughput, -memory)``,
    or ``pareto_mask(points)`` with one row per point.
    """
    pts = _points(columns)
    keep = np.ones(len(pts), dtype=bool)
    for i in range(len(pts)):
        better = (pts >= pts[i]).all(axis=1) & (pts > pts[i]).any(axis=1)
        keep[i] = not better.any()
    return keep


def frame_objectives(frame: pd.DataFrame) -> tuple[Objective, ...]:
    """The objective table a trials frame was made with (``trials_frame`` notes its extra objectives in
    ``frame.attrs``; a frame without the note has the two base objectives)."""
    return objectives_for(frame.attrs.get("extra_objectives", ()))


def extra_objectives(frame: pd.DataFrame) -> tuple[Objective, ...]:
    """The frame's objectives beyond accuracy and throughput (``[objectives] extra``)."""
    return frame_objectives(frame)[2:]
