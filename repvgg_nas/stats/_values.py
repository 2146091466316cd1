"""Small readers of frame cells shared by the stats modules (a missing value is None, NaN or pd.NA)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def present(v: Any) -> bool:
    """A recorded value (not None, NaN or pd.NA)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v is not pd.NA


def flag(v: Any) -> bool:
    """A recorded boolean (Python or numpy) that is set."""
    return present(v) and bool(v)


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or a column of None when the frame lacks it (older studies lack some attrs)."""
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)


def is_reference_name(r: Any) -> bool:
    """A paper reference's name (a non-empty string) rather than a missing value."""
    return isinstance(r, str) and bool(r)
