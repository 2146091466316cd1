"""A probabilistic model of a net's proxy accuracy from its architecture, for choosing what to train next.

Before training, a pool member's speed is predicted and only its accuracy
is unknown. :class:`AccuracyModel` is a Gaussian process (scikit-learn's)
over architecture features (:func:`features`: log params and MACs, stage
depths, log stage widths, groupwise layers, block kind, the zero-cost
proxy), fitted to the accuracies of the nets trained so far; it returns a
posterior mean and standard deviation for every member. A prediction only
chooses what to train: it never stands in a claim, and where it is shown it
is labelled predicted.

The features are standardized over the whole pool (so a fit on a handful of
nets uses the pool's scale), and until :data:`MIN_FIT` nets are trained the
kernel's hyperparameters stay at their prior values instead of being fitted
to too few points (a cold start from the references).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ..spec import DEFAULT_BLOCK, RepVGGSpec
from .proxies import deploy_macs, deploy_params

__all__ = ["FEATURE_NAMES", "MIN_FIT", "AccuracyModel", "features"]

FEATURE_NAMES = (
    "log_params", "log_macs", *(f"depth{i}" for i in range(5)), *(f"log_width{i}" for i in range(5)),
    "groupwise_layers", "qarepvgg", "proxy",
)
MIN_FIT = 5  # trained nets before the kernel's length scales and noise are fitted to them
PRIOR_NOISE = 0.012  # an accuracy's spread over seeds at the proxy budget (the [trust] prior_seed_std)
PRIOR_SPREAD = 0.05  # before the data says otherwise, nets of one space differ by a few points of accuracy


def _stage_values(spec: RepVGGSpec) -> tuple[list[int], list[float]]:
    """Blocks per stage and the log2 width of each stage's last layer (5 stages; a shorter net pads)."""
    depths = list(spec.depths)[:5] + [0] * max(0, 5 - len(spec.depths))
    ends = np.cumsum(spec.depths) - 1
    widths = [math.log2(spec.widths[e]) for e in ends][:5]
    return depths, widths + [0.0] * (5 - len(widths))


def features(spec: RepVGGSpec, proxy: float = 0.0) -> np.ndarray:
    """The architecture features of ``spec`` (:data:`FEATURE_NAMES`), with its zero-cost ``proxy`` score."""
    depths, widths = _stage_values(spec)
    return np.array([
        math.log10(deploy_params(spec)), math.log10(max(deploy_macs(spec), 1)), *depths, *widths,
        sum(g > 1 for g in spec.groups), float(spec.block != DEFAULT_BLOCK), float(proxy),
    ], dtype=float)


class AccuracyModel:
    """A Gaussian process over standardized architecture features: Matern 5/2 with one length scale per
    feature, plus white noise for the seed-to-seed spread of one training.

    ``pool`` (rows of :func:`features`) sets the standardization; :meth:`fit`
    takes the trained nets' features and accuracies; :meth:`predict` gives
    the posterior mean and standard deviation of accuracy for any rows.
    """

    def __init__(self, pool: np.ndarray, seed: int = 0) -> None:
        pool = np.atleast_2d(np.asarray(pool, dtype=float))
        self.center = pool.mean(axis=0)
        scale = pool.std(axis=0)
        self.scale = np.where(scale > 0, scale, 1.0)
        self.seed = seed
        self._gp = None
        self._mean, self._sd = 0.5, 0.25  # before any net is trained: a wide prior

    def _x(self, rows: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(rows, dtype=float)) - self.center) / self.scale

    def fit(self, rows: np.ndarray, accuracy: Sequence[float]) -> AccuracyModel:
        from sklearn.gaussian_process import GaussianProcessRegressor  # slow to import: only when fitted
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        y = np.asarray(accuracy, dtype=float)
        if len(y) == 0:
            return self
        self._mean = float(y.mean())
        x = self._x(rows)
        fixed = len(y) < MIN_FIT
        spread = max(float(y.var()), PRIOR_SPREAD**2)  # how far apart nets' accuracies may lie
        kernel = ConstantKernel(spread, "fixed" if fixed else (PRIOR_NOISE**2, 1.0)) * Matern(
            length_scale=np.full(x.shape[1], 2.0), length_scale_bounds="fixed" if fixed else (0.1, 100.0), nu=2.5,
        ) + WhiteKernel(PRIOR_NOISE**2, "fixed" if fixed else ((PRIOR_NOISE / 2) ** 2, 0.05**2))
        gp = GaussianProcessRegressor(kernel, normalize_y=False, n_restarts_optimizer=0 if fixed else 2,
                                      random_state=self.seed)
        with warnings.catch_warnings():  # a bound reached by the optimizer is not an error here
            warnings.simplefilter("ignore")
            gp.fit(x, y - self._mean)
        self._gp = gp
        return self

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of accuracy for each row (the prior before any fit)."""
        x = self._x(rows)
        if self._gp is None:
            return np.full(len(x), self._mean), np.full(len(x), self._sd)
        mean, sd = self._gp.predict(x, return_std=True)
        return np.asarray(mean, dtype=float) + self._mean, np.maximum(np.asarray(sd, dtype=float), 1e-6)
