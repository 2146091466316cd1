"""Promotion rules of a multi-fidelity search (``[fidelity] rule``): who stops a candidate at a rung.

A rule sees one candidate's result at a rung, every other candidate's
result at the same rung, and the study settings it may need
(:class:`RuleSettings`); it returns the result that stops the candidate, or
None to let it climb. Rules are chosen by name from :data:`PROMOTION_RULES`,
validated when the study config is loaded; the climb itself
(:mod:`repvgg_nas.search.rungs`) only calls the rule.

- ``dominance`` (the default): a result that dominates the candidate (rung
  accuracy and measured throughput) stops it; with ``stop_sigmas`` > 0 only
  one more accurate beyond that many standard errors of the validation set;
- ``none``: nothing stops a candidate, so every one climbs to the top (the
  single-fidelity baseline, with the rung records of every candidate).

The module lives beside the study config, not in ``search``, so that loading
a study validates the rule without importing the search loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..objectives import BASE_OBJECTIVES, Objective
from ..registry import Registry
from ..stats import standard_error

__all__ = ["RungResult", "RuleSettings", "PromotionRule", "PROMOTION_RULES", "dominating", "beyond_noise"]


@dataclass(frozen=True)
class RungResult:
    """One candidate's result at one rung: the point a promotion is decided on, one value per objective in the
    study's table order (accuracy at the rung, then the measured objectives)."""

    trial: int
    values: tuple[float, ...]


@dataclass(frozen=True)
class RuleSettings:
    """What a rule may read from the study: the objective table, ``[fidelity] stop_sigmas`` and the
    validation-set size (None: unknown, so no noise term)."""

    stop_sigmas: float = 0.0
    val_size: int | None = None
    objectives: tuple[Objective, ...] = BASE_OBJECTIVES


@dataclass(frozen=True)
class PromotionRule:
    """A registered rule: ``stops(me, others, settings)`` returns the result that stops ``me`` (None: it
    climbs); ``why(me, by, settings)`` says how ``by`` stops it, after "trial N" in the stop reason;
    ``climbs(settings)`` says how far a candidate climbs, after "a candidate climbs" in the run's plan."""

    stops: Callable[[RungResult, Sequence[RungResult], RuleSettings], RungResult | None]
    why: Callable[[RungResult, RungResult, RuleSettings], str]
    climbs: Callable[[RuleSettings], str]

    def __call__(self, me: RungResult, others: Sequence[RungResult], settings: RuleSettings) -> RungResult | None:
        return self.stops(me, others, settings)


def _better(p: RungResult, me: RungResult, settings: RuleSettings) -> bool:
    """``p`` dominates ``me``: at least as good in every objective and better in one; with ``stop_sigmas`` > 0
    better beyond the noise in a noisy objective (accuracy), by more than that many combined binomial standard
    errors of the validation set, and no worse in any."""
    pairs = [(o, o.sign * a, o.sign * b) for o, a, b in zip(settings.objectives, p.values, me.values)]
    if any(a < b for _, a, b in pairs):
        return False
    if settings.stop_sigmas <= 0:
        return any(a > b for _, a, b in pairs)
    def margin(o: Objective, a: float, b: float) -> float:
        if not o.noisy:
            return 0.0
        v = settings.val_size
        return settings.stop_sigmas * math.hypot(standard_error(abs(a), 0.0, 1, v), standard_error(abs(b), 0.0, 1, v))
    return any(o.noisy and a - b > margin(o, a, b) for o, a, b in pairs)


def dominating(me: RungResult, pool: Iterable[RungResult], sigmas: float = 0.0, val_size: int | None = None,
               objectives: tuple[Objective, ...] = BASE_OBJECTIVES) -> RungResult | None:
    """The result in ``pool`` that dominates ``me`` with the best values in table order (most accurate first;
    None: ``me`` may climb). With ``sigmas`` > 0 it must dominate beyond the noise (:func:`_better`)."""
    settings = RuleSettings(sigmas, val_size, objectives)
    better = [p for p in pool if _better(p, me, settings)]
    signs = [o.sign for o in objectives]
    return max(better, key=lambda p: tuple(s * v for s, v in zip(signs, p.values))) if better else None


def beyond_noise(sigmas: float) -> str:
    """How a stop rule with ``sigmas`` (``[fidelity] stop_sigmas``) reads after "dominates it" ("" for plain dominance)."""
    return f" beyond {sigmas:g} standard error{'s' * (sigmas != 1)}" if sigmas > 0 else ""


def _dominance(me: RungResult, others: Sequence[RungResult], settings: RuleSettings) -> RungResult | None:
    return dominating(me, others, settings.stop_sigmas, settings.val_size, settings.objectives)


def _dominance_why(me: RungResult, by: RungResult, settings: RuleSettings) -> str:
    versus = ", ".join(f"{format(b, o.fmt)} vs {format(m, o.fmt)} {o.unit or o.label}"
                       for o, b, m in zip(settings.objectives, by.values, me.values))
    return f"dominates it{beyond_noise(settings.stop_sigmas)} ({versus})"


def _never(me: RungResult, others: Sequence[RungResult], settings: RuleSettings) -> RungResult | None:
    return None


def _never_why(me: RungResult, by: RungResult, settings: RuleSettings) -> str:
    return "stops it"  # never asked: the rule stops nothing


PROMOTION_RULES: Registry[PromotionRule] = Registry("promotion rule")
PROMOTION_RULES.register("dominance", PromotionRule(
    _dominance, _dominance_why, lambda s: f"while no result at its rung dominates it{beyond_noise(s.stop_sigmas)}"))
PROMOTION_RULES.register("none", PromotionRule(_never, _never_why, lambda s: "to the top whatever the others score"))
