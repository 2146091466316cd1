"""Exact trial accounting for several workers on one study, and crash recovery.

- **Exact trial count.** Optuna's ``n_trials`` is per worker and
  ``MaxTrialsCallback`` counts only finished trials, so concurrent workers
  overshoot. Here every search trial has a *slot key*: its own number, or for
  a retry the number of the trial it repeats (so a retry inherits its
  original's place in line). A key is *held* while it has a result or a trial
  in flight. A trial may run only if fewer than ``target`` keys below its own
  are held and no other trial already answers for its key; otherwise it is
  not admitted. The loop checks this and asks for the trial as one step
  under the study's claim lock (:func:`repvgg_nas.storage.claim_lock`), so
  no trial is created that may not run. See :func:`admission` and
  :func:`slot_state`.
- **Linked re-trainings** (seed repeats, long re-trainings: ``repeat_of``)
  take no slot. Each is named by :func:`repeat_key` (architecture trial,
  seed, epochs); :func:`repeat_taken` keeps a second trial for the same key
  from running, so two workers that queue the same repeat train it once.
- **Crash recovery.** A trial that was running when its worker died is failed
  and queued again (``retry_of`` names it). RDB storages use Optuna's
  heartbeat for this (:mod:`repvgg_nas.storage`); storages without one use
  :func:`recover_trials`, which trusts only what it can check: a worker on
  this host whose process is gone.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from .. import lifecycle
from ..attrs import ADMITTED, REFERENCE, REPEAT_OF, RETRY_OF, ROLE, TRAIN_EPOCHS, TRAIN_SEED, WORKER, WORKER_START
from ..lifecycle import Outcome, cut_short_reason, retry_parent
from ..storage import claim_lock, enqueued_params, fail_trial
from .launch import pid_alive

__all__ = [
    "SlotState",
    "slot_state",
    "admission",
    "recover_trials",
    "repeat_key",
    "repeat_taken",
    "UNKNOWN_WORKER_AFTER_S",
]

UNKNOWN_WORKER_AFTER_S = 30.0  # a RUNNING trial with no worker attr this old is taken as dead
_DUPLICATE = "duplicate"  # how a lost trial's reason begins, for people only (its outcome is LOST)


def repeat_key(t: FrozenTrial) -> tuple[int, int | None, int | None] | None:
    """(architecture trial, seed, epochs) of a linked re-training; None for any other trial."""
    if not lifecycle.is_linked(t):
        return None
    seed, epochs = t.user_attrs.get(TRAIN_SEED), t.user_attrs.get(TRAIN_EPOCHS)
    return int(t.user_attrs[REPEAT_OF]), None if seed is None else int(seed), None if epochs is None else int(epochs)


def repeat_taken(number: int, trials: Sequence[FrozenTrial]) -> str | None:
    """Why the linked re-training ``number`` must not run (None when it may).

    Another trial of the same :func:`repeat_key` that holds a result does;
    one that runs with a lower number goes first.
    """
    by_number = {t.number: t for t in trials}
    me = by_number.get(number)
    key = repeat_key(me) if me is not None else None
    if key is None:
        return None
    for o in trials:
        if o.number == number or lifecycle.lost(o) or repeat_key(o) != key:
            continue
        if lifecycle.holds_result(o):
            return f"{_DUPLICATE}: trial {o.number} already holds this re-training"
        if o.state == TrialState.RUNNING and o.number < number:
            return f"{_DUPLICATE}: trial {o.number} already runs this re-training"
    return None


@dataclass(frozen=True)
class SlotState:
    """Where a study stands against its target number of search trials.

    ``done``: keys with a final result (complete, pruned by a constraint,
    failed; a dead trial not retried yet counts as failed until its retry
    appears). ``held``: keys done or in flight (a candidate paused by the
    time budget is in flight until a later run finishes its climb). ``running``: RUNNING search
    trials of any worker. ``admissible_waiting``: queued trials that would be
    allowed to run now.
    """

    target: int
    done: int
    held: int
    running: int
    admissible_waiting: int

    @property
    def finished(self) -> bool:
        return self.done >= self.target

    @property
    def runnable(self) -> bool:
        """A worker asking for a trial now would get one it may run."""
        return not self.finished and (self.held < self.target or self.admissible_waiting > 0)


class _Keys:
    """Per-key status of a trial list, computed once (every query is then cheap)."""

    def __init__(self, trials: Sequence[FrozenTrial]) -> None:
        self.by_number = {t.number: t for t in trials}
        self.search = [t for t in trials if lifecycle.is_search(t)]
        self.key = {t.number: lifecycle.slot_key(t, self.by_number) for t in self.search}
        self.members: dict[int, list[FrozenTrial]] = {}
        for t in self.search:
            self.members.setdefault(self.key[t.number], []).append(t)
        self.status: dict[int, str] = {}
        for k, group in self.members.items():
            if any(lifecycle.holds_result(t) for t in group):
                self.status[k] = "done"
            elif any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in group):
                self.status[k] = "active"
            elif lifecycle.paused(max(group, key=lambda t: t.number)):  # the next run continues its climb
                self.status[k] = "active"
            else:  # only dead runs: a failure, unless a retry turns up
                self.status[k] = "done"
        self.held_keys = sorted(self.status)

    def held_below(self, key: int) -> int:
        return bisect.bisect_left(self.held_keys, key)

    def blocker(self, t: FrozenTrial) -> str | None:
        """Why ``t`` may not run (None when it may)."""
        k = self.key.get(t.number, t.number)
        for other in self.members.get(k, ()):
            if other.number == t.number:
                continue
            if lifecycle.holds_result(other):
                return f"{_DUPLICATE}: trial {other.number} already holds the result for slot {k}"
            if other.state == TrialState.RUNNING and other.user_attrs.get(ADMITTED):
                return f"{_DUPLICATE}: trial {other.number} already runs slot {k}"
        return None

    def admits(self, t: FrozenTrial, target: int) -> str | None:
        reason = self.blocker(t)
        if reason is not None:
            return reason
        below = self.held_below(self.key.get(t.number, t.number))
        if below >= target:
            return f"{below} trial slot(s) before it already fill the target of {target}"
        return None


def slot_state(trials: Sequence[FrozenTrial], target: int) -> SlotState:
    keys = _Keys(trials)
    waiting = [t for t in keys.search if t.state == TrialState.WAITING]
    return SlotState(
        target=target,
        done=sum(s == "done" for s in keys.status.values()),
        held=len(keys.held_keys),
        running=sum(t.state == TrialState.RUNNING for t in keys.search),
        admissible_waiting=sum(keys.admits(t, target) is None for t in waiting),
    )


def admission(trial: FrozenTrial | int, trials: Sequence[FrozenTrial], target: int) -> str | None:
    """None when the (queued or just started) trial may run; else why not.

    A trial may run when fewer than ``target`` slot keys below its own are held
    and no other trial already has, or is admitted to compute, the result for
    its key. Keys below are the trials that started before it and the retries
    of those, so the first ``target`` slots always win, whichever worker asks
    first; a later trial that raced past the count finds the slots full.
    """
    keys = _Keys(trials)
    number = trial if isinstance(trial, int) else trial.number
    t = keys.by_number.get(number)
    if t is None:
        return None  # not visible yet: nothing to compare against
    return keys.admits(t, target)


# ---- crash recovery -----------------------------------------------------------------------
def _dead_reason(t: FrozenTrial, host: str, now: _dt.datetime, unknown_after_s: float) -> str | None:
    name = t.user_attrs.get(WORKER)
    if not name:
        started = t.datetime_start
        if started is not None and (now - started).total_seconds() > unknown_after_s:
            return "worker stopped"
        return None
    w_host, _, pid = str(name).rpartition(":")
    if w_host != host or not pid.isdigit():
        return None  # another machine: nothing here can tell whether it lives
    start = t.user_attrs.get(WORKER_START)
    if pid_alive(int(pid), int(start) if start is not None else None):
        return None
    return f"worker {name} died"


def _older(t: FrozenTrial, now: _dt.datetime, seconds: float) -> bool:
    end = t.datetime_complete
    return end is None or (now - end).total_seconds() > seconds


def recover_trials(
    study: optuna.Study,
    *,
    running: bool = True,
    finished: bool = True,
    unknown_after_s: float = UNKNOWN_WORKER_AFTER_S,
) -> list[int]:
    """Fail and queue again the trials whose worker is gone; return their numbers.

    ``running``: RUNNING trials whose worker ran on this host and is dead (or,
    with no worker recorded, that started over ``unknown_after_s`` ago) are
    marked FAIL as died (:class:`~repvgg_nas.lifecycle.Outcome`). The FAIL
    update is the claim: when two workers find the same dead trial, the storage
    lets only one of them finish it, and only that one queues the retry.
    Storages with a heartbeat leave this to Optuna (pass ``running=False``).

    ``finished``: trials cut short (Ctrl-C, paused) with no retry yet are
    queued again, and so are trials failed by a recovery whose worker died
    before it could queue the retry (after ``unknown_after_s``). All of it runs
    under the study's claim lock, so "no retry yet" is checked and acted on as
    one step.
    """
    with claim_lock(study):
        trials = study.get_trials(deepcopy=False)
        retried = _retried(trials)
        host, now = socket.gethostname(), _dt.datetime.now()
        out = []
        for t in trials:
            if t.state == TrialState.RUNNING:
                if not (running and _fail_if_dead(study, t, host, now, unknown_after_s) and lifecycle.is_search(t)):
                    continue  # alive, or a linked re-training: the run queues its key again (run.queue_linked)
            elif not (finished and lifecycle.is_search(t) and lifecycle.needs_rerun(t)):
                continue
            elif lifecycle.left_to_its_recovery(t) and not _older(t, now, unknown_after_s):
                continue  # just failed by another worker's recovery, which queues the retry itself
            if t.number in retried:
                continue
            study.enqueue_trial(enqueued_params(t), user_attrs=_retry_attrs(t))
            retried.add(t.number)
            out.append(t.number)
        return out


def _fail_if_dead(study: optuna.Study, t: FrozenTrial, host: str, now: _dt.datetime, unknown_after_s: float) -> bool:
    """Fail ``t`` as died when its worker is gone; True when this call failed it."""
    why = _dead_reason(t, host, now, unknown_after_s)
    if why is None:
        return False
    try:
        fail_trial(study, t, cut_short_reason(why), Outcome.DIED)
    except UpdateFinishedTrialError:
        return False  # another worker finished or claimed it first
    return True


def _retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Trials some retry already answers for."""
    by_number = {t.number: t for t in trials}
    out: set[int] = set()
    for t in trials:
        origin = retry_parent(t)
        if origin is None:
            continue
        first = by_number.get(origin)
        if lifecycle.lost(t) and first is not None and lifecycle.paused(first):
            continue  # a paused candidate's lost retry never ran: its climb waits for one that will
        out.add(origin)
    return out


def _retry_attrs(t: FrozenTrial) -> dict[str, Any]:
    attrs: dict[str, Any] = {ROLE: lifecycle.role(t).value, RETRY_OF: t.number}
    if t.user_attrs.get(REFERENCE):
        attrs[REFERENCE] = t.user_attrs[REFERENCE]
    return attrs
