"""Expected hypervolume improvement of a net whose accuracy is uncertain and whose other objectives are known.

Before training, a pool member's speed is predicted (and its peak memory
measured): only its accuracy is unknown, with a posterior ``N(mean, sd)``.
The improvement a point brings to a front is then a function of one
variable. Every coordinate is maximized (a minimized objective passes its
negation) and the accuracy is the first.

At fixed known objectives the improvement is piecewise linear in the
accuracy, with a knot at each front member's accuracy, so its expectation
under a normal has a closed form in any dimension (:func:`ehvi`): per piece,
the uncovered volume of the known objectives times the difference of two
``E[(Y - c)^+]``; with two objectives that volume is a speed width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .hypervolume import hypervolume, hypervolume_2d

__all__ = ["ehvi", "improvement"]

_SQRT2PI = math.sqrt(2.0 * math.pi)


def _above(c: float, mean: float, sd: float) -> float:
    """``E[(Y - c)^+]`` for ``Y ~ N(mean, sd)`` (``sd`` 0: the point's own excess)."""
    if sd <= 0:
        return max(mean - c, 0.0)
    z = (mean - c) / sd
    return (mean - c) * 0.5 * math.erfc(-z / math.sqrt(2.0)) + sd * math.exp(-0.5 * z * z) / _SQRT2PI


def improvement(front: Sequence[Sequence[float]], reference: Sequence[float], point: Sequence[float]) -> float:
    """The exact hypervolume ``point`` adds to ``front`` (every coordinate maximized, any dimension)."""
    base = [tuple(p) for p in front]
    if len(reference) == 2:
        return hypervolume_2d([*base, point], reference) - hypervolume_2d(base, reference)
    return hypervolume([*base, point], reference) - hypervolume(base, reference)


def ehvi(front: Sequence[Sequence[float]], reference: Sequence[float], known: Sequence[float], mean: float,
         sd: float) -> float:
    """Expected hypervolume improvement of the point (Y, ``*known``), ``Y ~ N(mean, sd)``, over ``front``.

    Exact in any dimension: the improvement at accuracy ``a`` is the
    integral, from the reference accuracy to ``a``, of the volume (in the
    known coordinates) that the front members at least as accurate leave
    uncovered; that volume only changes at a front member's accuracy, so the
    improvement is piecewise linear in ``a`` and its expectation is a sum of
    ``E[(Y - c)^+]`` differences, one per piece. ``sd`` 0 gives the improvement
    at ``mean``.
    """
    ra, rest = float(reference[0]), [float(r) for r in reference[1:]]
    point = [float(k) for k in known]
    if len(point) != len(rest):
        raise ValueError(f"known has {len(point)} coordinates, the reference {len(rest)} after accuracy")
    if any(k <= r for k, r in zip(point, rest)):
        return 0.0
    pts = [tuple(float(v) for v in p) for p in front if p[0] > ra and all(v > r for v, r in zip(p[1:], rest))]
    edges = [ra, *sorted({p[0] for p in pts})]
    total = 0.0
    for k, lo in enumerate(edges):
        hi = edges[k + 1] if k + 1 < len(edges) else math.inf
        cover = [p[1:] for p in pts if p[0] >= hi]
        area = improvement(cover, rest, point) if len(rest) > 1 else point[0] - max([c[0] for c in cover] + rest)
        if area <= 0:
            continue
        total += area * (_above(lo, mean, sd) - (0.0 if hi == math.inf else _above(hi, mean, sd)))
    return total
