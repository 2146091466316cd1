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
   members other workers are training now counted at their posterior mean;
3. draws the untrained, unclaimed member with the largest expected
   hypervolume improvement at its predicted speed
   (:func:`repvgg_nas.stats.ehvi`), ties broken by its seeded generator.

It never proposes a member already trained or claimed in the study: the
choice and its claim (``pool_claim``) are one step under the study's claim
lock, so two workers never draw the same net. The hypervolume is the
report's (its reference point: :func:`repvgg_nas.stats.hypervolume_reference`).
:func:`choose` is the rule on plain arrays, which the simulation on the
pool's tabular benchmark calls too (``benchmarks/pool_sampler_sim.py``). Why each
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
from ..attrs import POOL_CLAIM, SPEC, STUDY_POOL
from ..spec import RepVGGSpec
from ..stats import ehvi, pareto_mask
from ..storage import claim_lock, set_frozen_trial_attr
from ..study_frames import study_hypervolume_reference
from .accuracy import AccuracyModel, features
from .pool import Pool
from .proxies import ProxyInputs, score

__all__ = ["LEARNS_FROM", "POOL_RANK", "Choice", "PoolSampler", "choose", "stored_pool"]

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


# The trials whose full-budget accuracy the model learns from: candidates, references and their extra seeds (a
# long re-training or a pruned variant is another budget or another net).
LEARNS_FROM = frozenset({lifecycle.Role.SEARCH, lifecycle.Role.REFERENCE, lifecycle.Role.SEED_REPEAT})


def _taken(trials: Sequence[FrozenTrial], me: int) -> tuple[set[int], set[int]]:
    """Ranks trained (a finished trial holds them) and ranks claimed (a queued or running trial's)."""
    done, busy = set(), set()
    for t in trials:
        rank = t.params.get(POOL_RANK, t.user_attrs.get(POOL_CLAIM))
        if rank is None or t.number == me or lifecycle.lost(t):
            continue
        (done if t.state.is_finished() else busy).add(int(rank))
    return done, busy


def choose(rows: np.ndarray, observed: np.ndarray, accuracy: np.ndarray, points: np.ndarray, speeds: np.ndarray,
           done: set[int], busy: set[int], floor: float, rng: np.random.Generator) -> Choice:
    """The pool sampler's rule on plain arrays.

    ``rows``: every member's features (:func:`.accuracy.features`);
    ``observed``/``accuracy``: the trained nets' features and full-budget
    accuracies (the references included); ``points``: their measured
    (accuracy, images/s); ``speeds``: every member's predicted images/s;
    ``done``/``busy``: ranks trained and ranks claimed elsewhere; ``floor``:
    the hypervolume's reference accuracy.
    """
    model = AccuracyModel(rows, seed=int(rng.integers(2**31 - 1))).fit(observed, accuracy)
    mean, sd = model.predict(rows)
    pending = np.array([(mean[r], speeds[r]) for r in sorted(busy)]).reshape(-1, 2)
    front = np.vstack([points.reshape(-1, 2), pending])
    front = front[pareto_mask(front)] if len(front) else front
    free = [r for r in range(len(rows)) if r not in done and r not in busy]
    if not free:  # every member is trained or claimed: any one (its trial copies the finished twin)
        r = int(rng.integers(len(rows)))
        return Choice(r, float(mean[r]), float(sd[r]), 0.0)
    gains = np.array([ehvi(front, (floor, 0.0), (speeds[r],), float(mean[r]), float(sd[r])) for r in free])
    best = np.flatnonzero(gains >= gains.max() - 1e-12)
    r = free[int(rng.choice(best))]
    return Choice(r, float(mean[r]), float(sd[r]), float(gains.max()))


class PoolSampler(optuna.samplers.BaseSampler):
    """Draws ``pool_rank`` by expected hypervolume improvement under an accuracy model (see the module).

    ``space`` builds a member's spec from its params; parameters other than
    ``pool_rank`` are drawn at random.
    """

    def __init__(self, space: Any, seed: int | None = None) -> None:
        self.space = space
        self._rng = np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._pool: Pool | None = None
        self._rows: np.ndarray | None = None
        self._features: dict[str, np.ndarray] = {}  # a trained net's, by spec hash: asked at every draw
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
        with claim_lock(study):  # another worker's choice is made and claimed before this one looks
            choice = self.choose(study, trial.number)
            set_frozen_trial_attr(study, trial, POOL_CLAIM, choice.rank)
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

    def _row(self, t: FrozenTrial, pool: Pool) -> np.ndarray:
        """A trained net's features, its proxy scored as the pool's members were (a member's: as stored)."""
        spec = RepVGGSpec.from_dict(t.user_attrs[SPEC])
        if spec.hash not in self._features:
            rank = t.params.get(POOL_RANK)
            if rank is not None:
                proxy = pool.members[int(rank)].proxy
            else:
                inputs = ProxyInputs(resolution=pool.settings.resolution, seed=pool.settings.seed)
                proxy = score(pool.settings.proxy, spec, inputs)
            self._features[spec.hash] = features(spec, proxy)
        return self._features[spec.hash]

    def _observed(self, trials: Sequence[FrozenTrial], pool: Pool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature rows, accuracies and (accuracy, images/s) points of the completed nets it learns from."""
        rows, acc, points = [], [], []
        for t in trials:
            if t.state != TrialState.COMPLETE or not t.values or t.user_attrs.get(SPEC) is None:
                continue
            if lifecycle.role(t) not in LEARNS_FROM:
                continue
            rows.append(self._row(t, pool))
            acc.append(float(t.values[0]))
            points.append((float(t.values[0]), float(t.values[1])))
        assert self._rows is not None
        return np.array(rows).reshape(-1, self._rows.shape[1]), np.array(acc), np.array(points).reshape(-1, 2)

    def choose(self, study: optuna.Study, number: int) -> Choice:
        """The member trial ``number`` should train, and why."""
        pool = self._pool_of(study)
        assert pool is not None and self._rows is not None
        trials = study.get_trials(deepcopy=False)
        done, busy = _taken(trials, number)
        observed, accuracy, points = self._observed(trials, pool)
        reference, _ = study_hypervolume_reference(study)
        speeds = np.array([m.throughput for m in pool.members])
        return choose(self._rows, observed, accuracy, points, speeds, done, busy, float(reference[0]), self._rng)
