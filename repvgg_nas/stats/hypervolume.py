"""Hypervolume: the exact volume a front dominates above a reference point, and its history over a study.

:func:`hypervolume` takes any number of maximized coordinates (a caller with
a minimized objective passes its negation). Optuna 5 has no public
hypervolume function (``optuna._hypervolume`` is private and may change), so
it is computed here: two objectives by a sweep (:func:`hypervolume_2d`), more
by slicing along the last coordinate, which is exact and, for fronts of tens
of points, quick.

The history (:func:`hypervolume_frame` in trial-number order,
:func:`hypervolume_time_frame` in completion order against the seconds the
study has run, :func:`elapsed_seconds`) is data only; the report draws it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ._values import is_reference_name
from .architectures import architecture_stats
from .pareto import extra_objectives
from .trials import completed, is_reference

__all__ = [
    "HYPERVOLUME_COLUMNS", "accuracy_floor", "elapsed_seconds", "hypervolume", "hypervolume_2d",
    "hypervolume_frame", "hypervolume_reference", "hypervolume_time_frame",
]

# A CSV always has its header, even when the frame is empty.
HYPERVOLUME_COLUMNS = (
    "number", "hypervolume", "references_hypervolume", "ratio", "front_size", "reference_accuracy", "elapsed_s",
)


def hypervolume_2d(points: Iterable[Sequence[float]], reference: Sequence[float] = (0.0, 0.0)) -> float:
    """Exact area dominated by ``points`` (both coordinates maximized) above ``reference``.

    Two objectives need only a sweep: sort by the first coordinate,
    descending, and add the strip each point raises the second coordinate by.
    """
    rx, ry = float(reference[0]), float(reference[1])
    pts = sorted(((float(x), float(y)) for x, y in points if x > rx and y > ry), reverse=True)
    area, top = 0.0, ry
    for x, y in pts:
        if y > top:
            area += (x - rx) * (y - top)
            top = y
    return area


def hypervolume(points: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact volume dominated by ``points`` (every coordinate maximized) above ``reference``.

    The dimension is ``len(reference)`` (1, 2, 3, ...); points not strictly
    above the reference in every coordinate add nothing. Beyond two
    coordinates the volume is cut into slabs between consecutive distinct
    values of the last coordinate, each the lower-dimensional volume of the
    points reaching through it times its thickness.
    """
    ref = tuple(float(r) for r in reference)
    d = len(ref)
    pts = [tuple(float(v) for v in p) for p in points]
    if any(len(p) != d for p in pts):
        raise ValueError(f"every point needs {d} coordinates, as the reference {ref} has")
    pts = [p for p in pts if all(v > r for v, r in zip(p, ref))]
    if not pts:
        return 0.0
    if d == 1:
        return max(p[0] for p in pts) - ref[0]
    if d == 2:
        return hypervolume_2d(pts, ref)
    pts.sort(key=lambda p: p[-1], reverse=True)
    volume = 0.0
    for k, p in enumerate(pts):
        below = pts[k + 1][-1] if k + 1 < len(pts) else ref[-1]
        if p[-1] > below:  # the slab (below, p[-1]] is reached by the first k + 1 points
            volume += (p[-1] - below) * hypervolume([q[:-1] for q in pts[: k + 1]], ref[:-1])
    return volume


def accuracy_floor(stats: pd.DataFrame, sigmas: float = 2.0, configured: float | None = None) -> tuple[float, str]:
    """The hypervolume reference accuracy and a sentence saying where it came from.

    The study's ``[trust] accuracy_floor`` when set; else the lowest
    reference's mean accuracy minus ``sigmas`` standard errors (a net below
    it is beyond the noise worse than every paper config); else 0.
    """
    if configured is not None:
        return float(configured), f"accuracy {configured:.4f} ([trust] accuracy_floor), 0 images/s"
    refs = stats[stats["reference"].map(is_reference_name)] if not stats.empty else stats
    if refs.empty:
        return 0.0, "accuracy 0, 0 images/s (no reference trained)"
    low = refs.sort_values("accuracy_mean").iloc[0]
    floor = max(0.0, float(low["accuracy_mean"]) - sigmas * float(low["accuracy_se"]))
    return floor, (f"accuracy {floor:.4f} (lowest reference {low['reference']}: mean "
                   f"{low['accuracy_mean']:.4f} - {sigmas:g} x SE {low['accuracy_se']:.4f}), 0 images/s")


def hypervolume_reference(
    trials: pd.DataFrame, sigmas: float = 2.0, floor: float | None = None,
) -> tuple[tuple[float, ...], str]:
    """The reference point (accuracy floor, 0 images/s[, the worst of each extra objective]) in maximized
    coordinates, and a sentence naming where it comes from.

    With (0, 0) the fastest net dominated the area whatever its accuracy; the
    floor (:func:`accuracy_floor`: the study's ``[trust]
    accuracy_floor``, else the lowest reference's mean accuracy minus
    ``sigmas`` standard errors) counts only nets that are not worse, beyond
    the noise, than every paper config. A minimized extra objective (peak
    memory) has no natural worst value, so its reference is the largest value
    any completed net reached (negated: every coordinate is maximized), and
    every net counts in it.
    """
    value, text = accuracy_floor(architecture_stats(trials), sigmas, floor)
    point = [value, 0.0]
    done = completed(trials)
    for o in extra_objectives(trials):
        vals = done[o.column].astype(float) if o.column in done else pd.Series(dtype=float)
        worst = (vals.max() if o.sign < 0 else vals.min()) if vals.notna().any() else 0.0
        point.append(o.sign * float(worst))
        text += f", {o.label} {o.show(worst)} (the worst any net reached)"
    return tuple(point), text


def _points(frame: pd.DataFrame) -> list[tuple[float, ...]]:
    """Each row as a point of maximized coordinates: accuracy, throughput, then signed extra objectives."""
    cols = [frame["accuracy"].astype(float), frame["throughput"].astype(float)]
    cols += [o.sign * frame[o.column].astype(float) for o in extra_objectives(frame)]
    return list(zip(*(c.tolist() for c in cols)))


def _dominates(p: Sequence[float], q: Sequence[float]) -> bool:
    return all(a >= b for a, b in zip(p, q)) and any(a > b for a, b in zip(p, q))


def _search_rows(done: pd.DataFrame) -> pd.DataFrame:
    """Search and pruned trials: seed repeats and long re-trainings are not steps of the search."""
    linked = pd.Series(False, index=done.index)
    for c in ("repeat_of", "train_epochs"):
        if c in done:
            linked |= done[c].notna()
    return done[~linked]


def elapsed_seconds(trials: pd.DataFrame) -> pd.Series:
    """Seconds of study time up to each trial's completion (NaN: not finished).

    The clock of the wall-time view: it runs while any trial of the study
    runs (any state: failed, stopped and re-training trials cost time too;
    one still running runs to the latest completion), from the first start.
    The idle time between two runs of a resumed study does not count, so a
    study searched in two 15-minute runs reads 30 minutes, as one 30-minute
    run would, and two studies compare at equal cost.
    """
    nan = pd.Series(float("nan"), index=trials.index, dtype=float)
    if trials.empty or "datetime_start" not in trials or "datetime_complete" not in trials:
        return nan
    start = pd.to_datetime(trials["datetime_start"])
    end = pd.to_datetime(trials["datetime_complete"])
    if start.isna().all():
        return nan
    # Merge the trials' [start, end] spans into busy blocks; a block's clock starts where the previous stopped.
    last = end.max() if end.notna().any() else start.max()
    spans = sorted((s, max(s, e) if pd.notna(e) else max(s, last)) for s, e in zip(start, end) if pd.notna(s))
    blocks: list[list[pd.Timestamp]] = []
    for s, e in spans:
        if blocks and s <= blocks[-1][1]:
            blocks[-1][1] = max(blocks[-1][1], e)
        else:
            blocks.append([s, e])
    offsets, busy = [], 0.0
    for s, e in blocks:
        offsets.append(busy)
        busy += (e - s).total_seconds()

    starts = [s for s, _ in blocks]

    def clock(t: pd.Timestamp) -> float:
        if pd.isna(t):
            return float("nan")
        k = bisect.bisect_right(starts, t) - 1  # the block holding t (a trial's end lies in its own span's)
        return 0.0 if k < 0 else offsets[k] + (min(t, blocks[k][1]) - blocks[k][0]).total_seconds()

    return pd.Series([clock(t) for t in end], index=trials.index, dtype=float)


def _history(trials: pd.DataFrame, reference: Sequence[float] | None, by_time: bool) -> pd.DataFrame:
    """The hypervolume after each completed search trial, in number or completion order."""
    done = _search_rows(completed(trials))
    if done.empty:
        return pd.DataFrame(columns=list(HYPERVOLUME_COLUMNS))
    if reference is None:
        reference = hypervolume_reference(trials)[0]
    done = done.assign(elapsed_s=elapsed_seconds(trials).loc[done.index])
    if by_time:
        done = done[done["elapsed_s"].notna()].sort_values(["elapsed_s", "number"], kind="stable")
        if done.empty:
            return pd.DataFrame(columns=list(HYPERVOLUME_COLUMNS))
    else:
        done = done.sort_values("number")
    feasible = done["feasible"] if "feasible" in done else pd.Series(True, index=done.index)
    refs = done[is_reference(done) & feasible]
    ref_hv = hypervolume(_points(refs), reference) if len(refs) else float("nan")
    rows: list[dict[str, Any]] = []
    front: list[tuple[float, ...]] = []  # distinct non-dominated points so far
    for (_, r), p, ok in zip(done.iterrows(), _points(done), feasible):
        if ok and not any(q == p or _dominates(q, p) for q in front):
            front = [q for q in front if not _dominates(p, q)] + [p]
        hv = hypervolume(front, reference)
        rows.append({
            "number": int(r["number"]), "hypervolume": hv, "references_hypervolume": ref_hv,
            "ratio": hv / ref_hv if ref_hv and ref_hv == ref_hv else float("nan"), "front_size": len(front),
            "reference_accuracy": float(reference[0]), "elapsed_s": float(r["elapsed_s"]),
        })
    return pd.DataFrame(rows, columns=list(HYPERVOLUME_COLUMNS))


def hypervolume_frame(trials: pd.DataFrame, reference: Sequence[float] | None = None) -> pd.DataFrame:
    """Hypervolume of the front after each completed trial, beside the references-only front.

    Like ``optuna.visualization.plot_hypervolume_history``: completed search
    trials in number order; an infeasible trial repeats the previous value.
    The reference point (default: :func:`hypervolume_reference`, in the
    ``reference_accuracy`` column) is the same for the search and the
    references. ``references_hypervolume`` is the area of the paper
    references' own front: the baseline a search has to beat; ``ratio`` is
    the search's area over it; ``elapsed_s`` when the trial completed
    (:func:`elapsed_seconds`; NaN when the frame has no datetimes).
    """
    return _history(trials, reference, by_time=False)


def hypervolume_time_frame(trials: pd.DataFrame, reference: Sequence[float] | None = None) -> pd.DataFrame:
    """The same history in completion order: row ``i`` is the area of every search trial complete by its ``elapsed_s``.

    With parallel workers trials do not complete in number order, so the
    area against wall time is taken over what had finished by then, not over
    the lower-numbered trials. Trials without a completion time are left out.
    """
    return _history(trials, reference, by_time=True)
