"""How a trial's run may end short of a result: what the trial pipeline raises, each carrying its outcome.

The trial pipeline (:class:`.trial.TrialRunner`) and the climb
(:mod:`.rungs`) never record how a trial ended: they return values or raise
one of these, and the worker loop (:mod:`.loop`) maps every exception to a
state and an :class:`~repvgg_nas.lifecycle.Outcome`, records it and tells
the study, in one place (as Optuna's own ``_run_trial`` does).
"""

from __future__ import annotations

import optuna

from ..lifecycle import Outcome

__all__ = ["Stopped", "TimeBudgetPaused"]


class Stopped(optuna.TrialPruned):
    """The trial ends PRUNED with ``outcome``: stopped at a rung (a dominating result, or a rung longer than a
    whole run's budget), a broken limit, or the copy of a stopped twin. ``str(e)`` is the reason for people."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


class TimeBudgetPaused(Exception):
    """A candidate's next rung would end after the time budget: the trial ends as a run cut short (FAIL,
    outcome paused, ``str(e)`` the reason), and the next run continues the climb."""
