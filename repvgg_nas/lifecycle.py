"""A trial's lifecycle: what it is (its role) and how it ended (its outcome), as stored values.

Every trial the search creates carries a :class:`Role` from its creation
(``role`` user attr: written with ``enqueue_trial``/``add_trial`` or right
after ``ask``), and every trial the search ends carries an :class:`Outcome`
(``outcome`` user attr, written before ``tell``). The reasons beside them
(``fail_reason``, ``prune_reason``) are for people: no code decides anything
from their text, nor groups trials by it (the report groups ends by outcome
and rung records). Each question the search, the slots and the report ask of a
trial is one function here, so a new role or outcome is added in one place.

A retry is not a role but a link: a retried reference is still a reference.
The link is our ``retry_of`` attr for the retries the search queues, or
Optuna's own heartbeat-retry record (read through its public
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`); :func:`retry_chain`
and :func:`slot_key` walk it.

This module sits beside :mod:`repvgg_nas.attrs`, below both ``search`` and
``report``.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from .attrs import FAIL_REASON, OUTCOME, PARENT_TRIAL, PRUNE_REASON, REFERENCE, REPEAT_OF, RETRY_OF, ROLE, TRAIN_EPOCHS
from .records import rung_records, stop_record

__all__ = [
    "SCHEMA_VERSION", "Role", "Outcome", "SEARCH_ROLES", "LINKED_ROLES",
    "role", "outcome", "taken_over", "created_attrs", "end", "pruned_outcome",
    "is_search", "is_linked", "lost", "paused", "cut_short", "holds_result", "counts_toward_target",
    "needs_rerun", "may_be_on_front", "stopped_by_rung", "stopped_at_rung", "left_to_its_recovery",
    "retry_parent", "retry_chain", "slot_key", "cut_short_reason",
]

# Version of what a study stores about its trials (roles, outcomes, retry links); a study written
# under another version is refused on resume rather than read wrongly.
SCHEMA_VERSION = 2


class Role(str, enum.Enum):
    """What a trial is, fixed when it is created."""

    SEARCH = "search"  # sampled by the sampler
    REFERENCE = "reference"  # a paper reference config, enqueued at study creation
    SEED_REPEAT = "seed_repeat"  # the same architecture trained with another seed
    LONG_RETRAIN = "long_retrain"  # the same architecture trained with a longer budget
    PRUNED_VARIANT = "pruned_variant"  # a channel-pruned front member, added after the search


class Outcome(str, enum.Enum):
    """How a trial ended, written before it is told."""

    COMPLETE = "complete"  # objective values (a duplicate copies its twin's)
    STOPPED = "stopped"  # stopped at a rung: a result there dominates it
    OUT_OF_TIME = "out_of_time"  # stopped at a rung: its next rung needs more than a whole run's time budget
    LIMIT = "limit"  # broke a limit of [objectives] (pruned untrained)
    PAUSED = "paused"  # the time budget ended the run mid-climb: the next run continues it
    INTERRUPTED = "interrupted"  # Ctrl-C: the next run retries it
    DIED = "died"  # its worker died (found by a recovery or Optuna's heartbeat): retried
    FAILED = "failed"  # the net failed (diverged, out of memory, fusion mismatch, any error)
    LOST = "lost"  # found its slot taken after it was created (a storage without a claim lock): never ran


SEARCH_ROLES = frozenset({Role.SEARCH, Role.REFERENCE})  # trials that take a slot of n_trials
LINKED_ROLES = frozenset({Role.SEED_REPEAT, Role.LONG_RETRAIN})  # re-trainings of an architecture in the study
_CUT_SHORT = frozenset({Outcome.PAUSED, Outcome.INTERRUPTED, Outcome.DIED})


class _HasAttrs(Protocol):
    @property
    def user_attrs(self) -> dict[str, Any]: ...


# ---- what a trial is, how it ended ---------------------------------------------------------------
def role(t: _HasAttrs) -> Role:
    """The trial's stored role. A trial added from outside the search (``add_trial`` by hand) has none:
    its links say what it is."""
    ua = t.user_attrs
    stored = ua.get(ROLE)
    if stored is not None:
        return Role(stored)
    if ua.get(PARENT_TRIAL) is not None:
        return Role.PRUNED_VARIANT
    if ua.get(REPEAT_OF) is not None:
        return Role.LONG_RETRAIN if ua.get(TRAIN_EPOCHS) is not None else Role.SEED_REPEAT
    return Role.REFERENCE if ua.get(REFERENCE) else Role.SEARCH


def outcome(t: FrozenTrial) -> Outcome | None:
    """How a finished trial ended (None while it is queued or running).

    A trial ended from outside carries no outcome: a FAIL with neither an
    outcome nor a reason was failed by Optuna's heartbeat (its worker died); a
    trial added by hand ends as its state says.
    """
    if not t.state.is_finished():
        return None
    stored = t.user_attrs.get(OUTCOME)
    if stored is not None:
        return Outcome(stored)
    if t.state == TrialState.COMPLETE:
        return Outcome.COMPLETE
    if t.state == TrialState.PRUNED:
        return pruned_outcome(t.user_attrs)
    return Outcome.FAILED if t.user_attrs.get(FAIL_REASON) else Outcome.DIED


def created_attrs(r: Role, **attrs: Any) -> dict[str, Any]:
    """The user attrs of a trial the search creates (``enqueue_trial``/``add_trial``): its role first."""
    return {ROLE: r.value, **attrs}


class _Settable(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


def end(trial: _Settable, how: Outcome, reason: str | None = None) -> None:
    """Record how ``trial`` ended, before it is told: the outcome, and the reason for people (``prune_reason``
    for a pruned trial, ``fail_reason`` for any other that did not complete)."""
    if reason is not None:
        pruned = how in (Outcome.STOPPED, Outcome.OUT_OF_TIME, Outcome.LIMIT, Outcome.LOST)
        trial.set_user_attr(PRUNE_REASON if pruned else FAIL_REASON, reason)
    trial.set_user_attr(OUTCOME, how.value)


def pruned_outcome(user_attrs: Mapping[str, Any]) -> Outcome:
    """The outcome of a pruned trial from its rung records: stopped at a rung (by a result or by the time
    budget), else a broken limit."""
    last = stop_record(rung_records(user_attrs))
    if last is None:
        return Outcome.LIMIT
    return Outcome.OUT_OF_TIME if last.out_of_time else Outcome.STOPPED


# ---- the questions the code asks -----------------------------------------------------------------
def is_search(t: FrozenTrial) -> bool:
    """A sampled or reference trial that takes a slot (not a linked re-training, a pruned variant, a lost one)."""
    return role(t) in SEARCH_ROLES and outcome(t) != Outcome.LOST


def is_linked(t: _HasAttrs) -> bool:
    """A seed repeat or a long re-training of an architecture already in the study."""
    return role(t) in LINKED_ROLES


def lost(t: FrozenTrial) -> bool:
    """Created but never run (its slot was taken): every count and report skips it."""
    return outcome(t) == Outcome.LOST


def paused(t: FrozenTrial) -> bool:
    """Paused mid-climb by the time budget: not a result, a candidate the next run continues."""
    return outcome(t) == Outcome.PAUSED


def cut_short(t: FrozenTrial) -> bool:
    """FAIL because its run stopped (paused, Ctrl-C, dead worker), not because of the net."""
    return outcome(t) in _CUT_SHORT


def holds_result(t: FrozenTrial) -> bool:
    """Finished with a result that stands (complete, stopped, pruned by a limit, or a real failure)."""
    how = outcome(t)
    return how is not None and how not in _CUT_SHORT and how != Outcome.LOST


def counts_toward_target(t: FrozenTrial) -> bool:
    """Counts toward ``n_trials``: a search or reference trial that holds a result."""
    return role(t) in SEARCH_ROLES and holds_result(t)


def needs_rerun(t: FrozenTrial) -> bool:
    """A trial whose run was cut short and that the search runs again (a retry, or a linked key queued again)."""
    return role(t) != Role.PRUNED_VARIANT and cut_short(t)


def may_be_on_front(t: FrozenTrial) -> bool:
    """Has objective values that may stand on the Pareto front."""
    return outcome(t) == Outcome.COMPLETE


def stopped_by_rung(t: FrozenTrial) -> bool:
    """Stopped at a rung because a result there dominates it (not by the time budget)."""
    return outcome(t) == Outcome.STOPPED


def stopped_at_rung(t: FrozenTrial) -> bool:
    """Stopped at a rung, by a dominating result or by the time budget."""
    return outcome(t) in (Outcome.STOPPED, Outcome.OUT_OF_TIME)


def left_to_its_recovery(t: FrozenTrial) -> bool:
    """Failed by another worker's recovery (its worker died): that recovery queues the retry itself."""
    return outcome(t) == Outcome.DIED and bool(t.user_attrs.get(FAIL_REASON))


# ---- retry chains --------------------------------------------------------------------------------
def _optuna_history(t: FrozenTrial) -> list[int]:
    with warnings.catch_warnings():  # experimental in Optuna 5
        warnings.simplefilter("ignore", ExperimentalWarning)
        return [int(n) for n in RetryHeartbeatStaleTrialCallback.retry_history(t)]


def retry_parent(t: FrozenTrial) -> int | None:
    """The trial this one retries (the nearest: a retry of a retry names the second); None for a first run."""
    origin = t.user_attrs.get(RETRY_OF)
    if origin is not None:
        return int(origin)
    history = _optuna_history(t) if isinstance(t, FrozenTrial) else []
    return history[-1] if history else None


def retry_chain(t: FrozenTrial, by_number: Mapping[int, FrozenTrial]) -> list[FrozenTrial]:
    """The earlier runs this trial retries, nearest first (only those in ``by_number``)."""
    out: list[FrozenTrial] = []
    seen = {t.number}
    origin = retry_parent(t)
    while origin is not None and origin not in seen and origin in by_number:
        seen.add(origin)
        t = by_number[origin]
        out.append(t)
        origin = retry_parent(t)
    return out


def slot_key(t: FrozenTrial, by_number: Mapping[int, FrozenTrial]) -> int:
    """The slot a trial answers for: the first trial of its retry chain (its own number for a first run)."""
    chain = retry_chain(t, by_number)
    last = chain[-1] if chain else t
    origin = retry_parent(last)
    return origin if origin is not None else last.number


# ---- what people read ----------------------------------------------------------------------------
def cut_short_reason(why: str) -> str:
    """The ``fail_reason`` of a trial cut short by Ctrl-C or a dead worker. A pause by the time budget
    carries its own reason (its rung and the seconds left): its outcome, not its words, says it paused."""
    return f"interrupted: {why}"


def taken_over(trials: Iterable[FrozenTrial]) -> set[int]:
    """Trials whose climb a retry has taken over: one that started (not only queued) and was not lost."""
    out = set()
    for t in trials:
        origin = retry_parent(t)
        if origin is not None and t.state != TrialState.WAITING and not lost(t):
            out.add(origin)
    return out
