"""The pool sampler: chooses the next pool member to train by its expected hypervolume gain.

A pooled study draws every candidate from a finite, pre-scored pool (one
trial param, ``pool_rank``). NSGA-II redraws such a single parameter
uniformly and TPE/GP read the rank as an ordinal, so they choose blindly.
Yet only one objective is unknown before training: a member's speed is
predicted by the latency table. :class:`PoolSampler` (an Optuna
``BaseSampler``; Optuna stays the storage and the loop) therefore

1. fits an accuracy model (:class:`.accuracy.AccuracyModel`, a Gaussian
   process over architecture features) to the study's trained nets, the
   references included;
2. takes the current front of measured (accuracy, images/s) points, with the
   members other workers are training now counted at their posterior mean
   (so two workers do not draw the same net);
3. draws the untrained, unclaimed member with the largest expected
   hypervolume improvement at its predicted speed
   (:func:`repvgg_nas.stats.ehvi`), ties broken by its seeded generator.

It never proposes a member already trained or claimed in the study. Why each
member was chosen (posterior mean and sd, expected gain) is kept per trial
number (:meth:`PoolSampler.why`), for the trial to record. A study with more
objectives than accuracy and speed is judged on those two (the others are
not known before measuring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from .. import lifecycle
from ..attrs import SPEC, STUDY_POOL
from ..spec import RepVGGSpec
from ..stats import ehvi, pareto_mask
from .accuracy import AccuracyModel, features
from .pool import Pool
from .proxies import score

__all__ = ["POOL_RANK", "Choice", "PoolSampler", "stored_pool"]

POOL_RANK = "pool_rank"  # the trial param a pooled candidate is drawn by: its rank in the pool by predicted speed


def stored_pool(study: optuna.Study) -> Pool | None:
    """The pool stored with the study (None: a blind search)."""
    raw = study.user_attrs.get(STUDY_POOL)
    return Pool.from_dict(raw) if raw is not None else None


class Choice(NamedTuple):
    """Why a member was drawn: its rank, the model's posterior accuracy (labelled predicted wherever shown)
    and the expected hypervolume gain that chose it."""

    rank: int
    mean: float
    sd: float
    gain: float


def _taken(trials: Sequence[FrozenTrial], me: int) -> tuple[set[int], set[int]]:
    """Ranks trained (a finished trial holds them) and ranks claimed (queued or running elsewhere)."""
    done, busy = set(), set()
    for t in trials:
        rank = t.params.get(POOL_RANK)
        if rank is None or t.number == me or lifecycle.lost(t):
            continue
        (done if t.state.is_finished() else busy).add(int(rank))
    return done, busy


class PoolSampler(optuna.samplers.BaseSampler):
    """Draws ``pool_rank`` by expected hypervolume improvement under an accuracy model (see the module).

    ``space`` builds a member's spec from its params; ``floor`` is the
    hypervolume's reference accuracy (default: the least accurate trained
    reference minus ``floor_margin``); parameters other than ``pool_rank``
    are drawn at random.
    """

    def __init__(self, space: Any, seed: int | None = None, floor_margin: float = 0.02) -> None:
        self.space = space
        self.floor_margin = floor_margin
        self._rng = np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._pool: Pool | None = None
        self._rows: np.ndarray | None = None
        self._choices: dict[int, Choice] = {}

    # ---- Optuna's sampler interface -------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        pool = self._pool_of(study)
        if param_name != POOL_RANK or pool is None:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        choice = self.choose(study, trial.number)
        self._choices[trial.number] = choice
        return choice.rank

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    # ---- the choice -------------------------------------------------------------------------------
    def why(self, number: int) -> Choice | None:
        """Why trial ``number`` got its member (None: this sampler did not draw it)."""
        return self._choices.get(number)

    def _pool_of(self, study: optuna.Study) -> Pool | None:
        if self._pool is None:
            self._pool = stored_pool(study)
            if self._pool is not None:
                specs = self._pool.specs(self.space)
                self._rows = np.array([features(s, m.proxy) for s, m in zip(specs, self._pool.members)])
        return self._pool

    def _observed(self, trials: Sequence[FrozenTrial], pool: Pool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature rows, accuracies and (accuracy, images/s) points of the study's completed nets."""
        rows, acc, points = [], [], []
        for t in trials:
            if t.state != TrialState.COMPLETE or not t.values or t.user_attrs.get(SPEC) is None:
                continue
            spec = RepVGGSpec.from_dict(t.user_attrs[SPEC])
            rank = t.params.get(POOL_RANK)
            proxy = pool.members[int(rank)].proxy if rank is not None else score(pool.settings.proxy, spec)
            rows.append(features(spec, proxy))
            acc.append(float(t.values[0]))
            points.append((float(t.values[0]), float(t.values[1])))
        width = len(self._rows[0]) if self._rows is not None and len(self._rows) else 0
        return np.array(rows).reshape(-1, width), np.array(acc), np.array(points).reshape(-1, 2)

    def _floor(self, trials: Sequence[FrozenTrial]) -> float:
        refs = [float(t.values[0]) for t in trials
                if t.state == TrialState.COMPLETE and t.values and lifecycle.role(t) == lifecycle.Role.REFERENCE]
        return (min(refs) - self.floor_margin) if refs else 0.0

    def choose(self, study: optuna.Study, number: int) -> Choice:
        """The member trial ``number`` should train, and why."""
        pool = self._pool_of(study)
        assert pool is not None and self._rows is not None
        trials = study.get_trials(deepcopy=False)
        done, busy = _taken(trials, number)
        rows, acc, points = self._observed(trials, pool)
        model = AccuracyModel(self._rows, seed=int(self._rng.integers(2**31 - 1))).fit(rows, acc)
        mean, sd = model.predict(self._rows)
        speeds = np.array([m.throughput for m in pool.members])
        pending = np.array([(mean[r], speeds[r]) for r in sorted(busy)]).reshape(-1, 2)
        front = np.vstack([points, pending]) if len(pending) else points
        front = front[pareto_mask(front)] if len(front) else front
        reference = (self._floor(trials), 0.0)
        free = [r for r in range(len(pool.members)) if r not in done and r not in busy]
        if not free:  # every member is trained or claimed: any one (its trial copies the finished twin)
            r = int(self._rng.integers(len(pool.members)))
            return Choice(r, float(mean[r]), float(sd[r]), 0.0)
        gains = np.array([ehvi(front, reference, (speeds[r],), float(mean[r]), float(sd[r])) for r in free])
        best = np.flatnonzero(gains >= gains.max() - 1e-12)
        r = free[int(self._rng.choice(best))]
        return Choice(r, float(mean[r]), float(sd[r]), float(gains.max()))
