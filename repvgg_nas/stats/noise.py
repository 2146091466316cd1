"""The standard error of an architecture's mean proxy accuracy.

For a mean accuracy ``p`` over ``n`` seeds::

    se = sqrt(s**2 / n + p * (1 - p) / n_val)

``s`` is the seed-to-seed standard deviation (the architecture's own when
``n >= 2``, else the study's pooled within-architecture value, else -- when
no architecture has two seeds -- the prior ``[trust] prior_seed_std``) and
``p(1-p)/n_val`` the binomial error of counting accuracy on ``n_val``
validation images, which extra seeds do not shrink (the validation set is the
same for every run). Two architectures' errors are combined as
``sqrt(se_a**2 + se_b**2)``: conservative, since runs on one validation set
err together.

The prior, :data:`PRIOR_SEED_STD` = 0.012, is the pooled seed standard
deviation of the a_family front's 3-seed repeats (RepVGG-A0
0.693/0.699/0.703, trial 11 0.717/0.704/0.706, trial 8 0.726/0.693/0.726:
``sqrt(sum((n-1) s**2) / sum(n-1))`` = 0.0121). Without it one run per
architecture would carry no seed term at all, and a single lucky seed (the
winner's curse) would be claimed as a result; once seeds are measured, the
measured pooled value replaces it.
"""

from __future__ import annotations

import math

from ._values import present

__all__ = ["PRIOR_SEED_STD", "standard_error"]

# Seed-to-seed std of proxy accuracy assumed while no architecture has two seeds (module doc).
PRIOR_SEED_STD = 0.012


def standard_error(mean: float, seed_sd: float, n: int, val_size: float | None) -> float:
    """``sqrt(seed_sd**2 / n + mean*(1-mean)/val_size)`` (no binomial term without a validation size)."""
    var = (seed_sd ** 2) / max(n, 1)
    if present(val_size) and val_size and 0.0 <= mean <= 1.0:
        var += mean * (1.0 - mean) / float(val_size)
    return math.sqrt(var)
