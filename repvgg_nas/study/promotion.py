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

from ..registry import Registry
from ..stats import dominates, standard_error

__all__ = ["RungResult", "RuleSettings", "PromotionRule", "PROMOTION_RULES", "dominating", "beyond_noise"]


@dataclass(frozen=True)
class RungResult:
    """One candidate's result at one rung: the point a promotion is decided on."""

    trial: int
    accuracy: float
    throughput: float

    def as_point(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "throughput": self.throughput}


@dataclass(frozen=True)
class RuleSettings:
    """What a rule may read from the study: ``[fidelity] stop_sigmas`` and the validation-set size
    (None: unknown, so no noise term)."""

    stop_sigmas: float = 0.0
    val_size: int | None = None


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


def dominating(me: RungResult, pool: Iterable[RungResult], sigmas: float = 0.0,
               val_size: int | None = None) -> RungResult | None:
    """The result in ``pool`` that dominates ``me`` with the largest accuracy (None: ``me`` may climb).

    With ``sigmas`` > 0 it must dominate beyond the noise: at least as fast,
    and more accurate by more than ``sigmas`` combined binomial standard
    errors of accuracy counted on ``val_size`` validation images.
    """
    if sigmas > 0:
        def beyond(p: RungResult) -> bool:
            se = math.hypot(standard_error(p.accuracy, 0.0, 1, val_size), standard_error(me.accuracy, 0.0, 1, val_size))
            return p.throughput >= me.throughput and p.accuracy - me.accuracy > sigmas * se
        better = [p for p in pool if beyond(p)]
    else:
        better = [p for p in pool if dominates(p.as_point(), me.as_point())]
    return max(better, key=lambda p: (p.accuracy, p.throughput)) if better else None


def beyond_noise(sigmas: float) -> str:
    """How a stop rule with ``sigmas`` (``[fidelity] stop_sigmas``) reads after "dominates it" ("" for plain dominance)."""
    return f" beyond {sigmas:g} standard error{'s' * (sigmas != 1)}" if sigmas > 0 else ""


def _dominance(me: RungResult, others: Sequence[RungResult], settings: RuleSettings) -> RungResult | None:
    return dominating(me, others, settings.stop_sigmas, settings.val_size)


def _dominance_why(me: RungResult, by: RungResult, settings: RuleSettings) -> str:
    return (f"dominates it{beyond_noise(settings.stop_sigmas)} ({by.accuracy:.3f} vs {me.accuracy:.3f} accuracy, "
            f"{by.throughput:.1f} vs {me.throughput:.1f} img/s)")


def _never(me: RungResult, others: Sequence[RungResult], settings: RuleSettings) -> RungResult | None:
    return None


def _never_why(me: RungResult, by: RungResult, settings: RuleSettings) -> str:
    return "stops it"  # never asked: the rule stops nothing


PROMOTION_RULES: Registry[PromotionRule] = Registry("promotion rule")
PROMOTION_RULES.register("dominance", PromotionRule(
    _dominance, _dominance_why, lambda s: f"while no result at its rung dominates it{beyond_noise(s.stop_sigmas)}"))
PROMOTION_RULES.register("none", PromotionRule(_never, _never_why, lambda s: "to the top whatever the others score"))
