"""What every figure of the report shares: the plotly template, colours and text escaping.

Every string that comes from a config or a trial is escaped before it
reaches the page, in our own HTML and in plotly's hover/legend text alike.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

__all__ = ["BLUE", "GREEN", "GREY", "ORANGE", "TEMPLATE", "esc", "num", "present", "throughput_axis"]

TEMPLATE = "plotly_white"
BLUE, ORANGE, GREY, GREEN = "#1f6feb", "#e8590c", "#8c959f", "#2f9e44"


def esc(value: Any) -> str:
    """Text for plotly labels/hover: ``&``, ``<`` and ``>`` escaped, so no tag is ever parsed.

    Plotly turns ``&lt;`` back into a literal ``<`` in a text node, so the text
    reads as written. Quotes stay as they are (plotly does not decode ``&quot;``).
    """
    return html.escape("" if value is None else str(value), quote=False)


def num(v: Any, fmt: str, unit: str = "") -> str:
    """``v`` formatted with ``fmt`` and ``unit``; ``?`` when it is missing or not a number."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "?"
    return "?" if math.isnan(f) else f"{f:{fmt}}{unit}"


def present(v: Any) -> bool:
    """False for None, NaN and the empty string: what a frame holds where a trial has no value."""
    if v is None or (isinstance(v, str) and not v):
        return False
    return not (pd.api.types.is_scalar(v) and pd.isna(v))


def throughput_axis(throughput: Any, where: str = "") -> dict[str, Any]:
    """The x axis of an accuracy-vs-throughput figure: log scale when the speeds span more than 10x."""
    thr = pd.Series(throughput, dtype=float)
    log_x = len(thr) > 1 and thr.min() > 0 and thr.max() / thr.min() > 10
    return dict(title=dict(text=f"throughput (images/s{where}){' · log scale' if log_x else ''}"),
                type="log" if log_x else "linear")
