"""The ask/tell worker loop: claim a slot, ask for its trial, run it, tell how it ended.

A worker asks Optuna for a trial (``study.ask`` through
:func:`repvgg_nas.storage.ask_trial`) only once it holds a slot for it: the
slot check and the ask are one step under the study's claim lock
(:func:`repvgg_nas.storage.claim_lock`), so no trial is created that may not
run. The trial pipeline (:class:`.trial.TrialRunner`) returns values or
raises; this module alone maps what it raised to a state and an outcome
(:func:`ending`), records the outcome (:mod:`repvgg_nas.lifecycle`) and
tells the study, so Optuna has no failure of its own to log.
Between trials the loop fails the trials of dead workers (Optuna's
heartbeat, or :func:`.slots.recover_trials`), and waits, polling, while
other workers hold every slot (:func:`drive`).
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from .. import lifecycle
from ..attrs import ADMITTED, ROLE, WORKER, WORKER_START
from ..lifecycle import Outcome, Role
from ..storage import ask_trial, claim_lock, heartbeat, study_heartbeat
from ..train import DivergenceError
from .ends import Stopped, TimeBudgetPaused
from .events import EventCallback, TrialTakenOver, Waiting
from .launch import WorkerId, current_worker
from .slots import admission, recover_trials, repeat_taken, slot_state

__all__ = [
    "Ending", "Runner", "claim_linked_trial", "claim_search_trial", "claim_trial", "drive", "ending", "fail_dead_trials",
    "failure_reason", "run_trial", "work",
]

_log = logging.getLogger("repvgg_nas.search")
AfterTrial = Callable[[optuna.Study, FrozenTrial], None]

RAN = "ran"  # a step ran a trial (or made progress): step again at once
DONE = "done"  # nothing left for this loop


def fail_dead_trials(study: optuna.Study, heartbeat_interval: int | None) -> None:
    """Fail (and so re-queue) trials whose worker is gone: Optuna's heartbeat where the
    storage has one, otherwise :func:`.slots.recover_trials` for dead workers on this host."""
    if heartbeat_interval is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    else:
        recover_trials(study, running=True, finished=False)


def drive(study: optuna.Study, step: Callable[[], str | Waiting], on_event: EventCallback) -> None:
    """Call ``step`` until it returns :data:`DONE`: the one "poll until something changes" loop.

    Before each step, trials of dead workers are failed (and so retried). A
    step that returns a :class:`Waiting` (other workers hold what is left) is
    reported once, then retried every poll interval (a few seconds, shorter
    than the heartbeat) until a step makes progress again.
    """
    interval = study_heartbeat(study)
    poll = min(5.0, float(interval)) if interval is not None else 2.0
    said_wait = False
    while True:
        fail_dead_trials(study, interval)
        out = step()
        if out == DONE:
            return
        if isinstance(out, Waiting):
            if not said_wait:
                on_event(out)
                said_wait = True
            time.sleep(poll)
        else:
            said_wait = False


def _admit(trial: optuna.Trial, worker: WorkerId) -> None:
    trial.set_user_attr(WORKER, worker.name)
    if worker.start is not None:
        trial.set_user_attr(WORKER_START, worker.start)
    trial.set_user_attr(ADMITTED, True)


def claim_trial(study: optuna.Study, number: int | None, role: Role = Role.SEARCH,
                target: int | None = None, worker: WorkerId | None = None) -> optuna.Trial | None:
    """Ask for the queued trial ``number`` (or a new one with ``role``) and record who runs it.

    Call under the claim lock, after deciding the trial may run. With
    ``target``, the slot is checked again after the ask: on a storage whose
    claim lock cannot span processes, a worker that lost a race ends the
    trial at once as :attr:`Outcome.LOST` (every count skips it) and gets None.
    """
    trial = ask_trial(study, number)
    if trial is None:
        return None
    if number is None:
        trial.set_user_attr(ROLE, role.value)
    if target is not None:
        why = admission(trial.number, study.get_trials(deepcopy=False), target)
        if why is not None:
            lifecycle.end(trial, Outcome.LOST, why)
            study.tell(trial, state=TrialState.PRUNED)
            return None
    _admit(trial, worker or current_worker())
    return trial


def claim_search_trial(study: optuna.Study, target: int, worker: WorkerId | None = None) -> optuna.Trial | str | Waiting:
    """Under the claim lock: the search trial this worker may run now, or :data:`DONE`, or a :class:`Waiting`.

    The oldest queued trial the slots admit goes first (references, retries);
    otherwise a new trial when fewer than ``target`` slots are held.
    """
    with claim_lock(study):
        trials = study.get_trials(deepcopy=False)
        state = slot_state(trials, target)
        if state.finished:
            return DONE
        if state.runnable:
            queued = [t for t in trials if t.state == TrialState.WAITING and lifecycle.is_search(t)
                      and admission(t, trials, target) is None]
            number = queued[0].number if queued else None
            if number is not None or state.held < target:
                trial = claim_trial(study, number, Role.SEARCH, target, worker)
                if trial is not None:
                    return trial
                return RAN  # taken by another process first: look again
    return Waiting(state.running, state.done, target) if state.running else DONE


def claim_linked_trial(study: optuna.Study, worker: WorkerId | None = None) -> optuna.Trial | None:
    """Under the claim lock: the oldest queued linked re-training no other trial holds or runs (None: none)."""
    with claim_lock(study):
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == TrialState.WAITING and lifecycle.is_linked(t) and repeat_taken(t.number, trials) is None:
                trial = claim_trial(study, t.number, worker=worker)
                if trial is not None:
                    return trial
    return None


@dataclass(frozen=True)
class Ending:
    """How a trial ended: the state Optuna is told, the outcome recorded, the reason for people."""

    state: TrialState
    how: Outcome
    reason: str | None = None


def failure_reason(e: BaseException) -> str:
    """The ``fail_reason`` recorded for a trial (or a pruning) that raised ``e``: one line."""
    text = str(e).splitlines()[0] if str(e) else ""
    if isinstance(e, DivergenceError):
        return f"diverged: {e}"
    if _out_of_memory(e):
        return f"out of memory: {text or type(e).__name__}"
    return f"{type(e).__name__}: {text}"[:500]


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def ending(e: BaseException, user_attrs: Mapping[str, Any]) -> Ending:
    """The one table from what a trial raised to how it ended (``user_attrs``: the trial's, for a bare
    ``TrialPruned``, whose outcome its rung records tell as for a trial added by hand)."""
    if isinstance(e, Stopped):  # a rung stop, a broken limit, a stopped twin's copy
        return Ending(TrialState.PRUNED, e.outcome, str(e) or None)
    if isinstance(e, optuna.TrialPruned):
        return Ending(TrialState.PRUNED, lifecycle.pruned_outcome(user_attrs), str(e) or None)
    if isinstance(e, TimeBudgetPaused):  # cut short by the time budget, as by Ctrl-C: the next run continues it
        return Ending(TrialState.FAIL, Outcome.PAUSED, str(e))  # its own words: the rung, and the time left
    if isinstance(e, KeyboardInterrupt):
        return Ending(TrialState.FAIL, Outcome.INTERRUPTED, lifecycle.cut_short_reason("Ctrl-C"))
    return Ending(TrialState.FAIL, Outcome.FAILED, failure_reason(e))


class Runner(Protocol):
    """The trial pipeline as the loop sees it: run a trial (return its values or raise), then release what
    it held once the loop knows how it ended."""

    def __call__(self, trial: optuna.Trial) -> Sequence[float]: ...

    def release(self, trial: optuna.Trial, how: Outcome) -> None: ...


def _tell(study: optuna.Study, trial: optuna.Trial, end: Ending, values: Sequence[float] | None,
          on_event: EventCallback) -> FrozenTrial | None:
    """Record how the trial ended and tell the study: the only tell of a trial that ran."""
    try:
        lifecycle.end(trial, end.how, end.reason)
        return study.tell(trial, values, state=end.state)
    except optuna.exceptions.UpdateFinishedTrialError as e:
        # Another worker declared this one's trial dead (missed heartbeats) and retried it.
        on_event(TrialTakenOver(str(e).splitlines()[0]))
        return None


def run_trial(study: optuna.Study, trial: optuna.Trial, runner: Runner,
              on_event: EventCallback) -> FrozenTrial | None:
    """Run ``runner(trial)`` and tell the study how it ended; None when another worker took it over.

    Every exception is mapped here (:func:`ending`): Ctrl-C ends the trial as
    interrupted and propagates; a real failure is logged with its traceback.
    """
    values, error = None, None
    try:
        with heartbeat(study, trial):
            values = runner(trial)
        end = Ending(TrialState.COMPLETE, Outcome.COMPLETE)
    except optuna.exceptions.UpdateFinishedTrialError as e:
        on_event(TrialTakenOver(str(e).splitlines()[0]))
        return None
    except (Exception, KeyboardInterrupt) as e:
        end, error = ending(e, trial.user_attrs), e
        if _out_of_memory(e) and torch.cuda.is_available():
            torch.cuda.empty_cache()
    finally:
        gc.collect()
    try:
        runner.release(trial, end.how)
    except Exception as e:  # what it held stays on disk; the trial is still told how it ended
        _log.warning("Trial %d: releasing what it held failed: %s", trial.number, e, exc_info=e)
    frozen = _tell(study, trial, end, values, on_event)
    if isinstance(error, KeyboardInterrupt):
        raise error
    if error is not None and end.how == Outcome.FAILED:
        _log.warning("Trial %d failed: %s", trial.number, error, exc_info=error)
    return frozen


def work(study: optuna.Study, runner: Runner, after_trial: AfterTrial, target: int,
         deadline: float | None, on_event: EventCallback) -> None:
    """Run search trials until the study holds ``target`` finished ones, or the deadline passes.

    A worker that finds every slot held does not leave: another worker's
    running trial may die and be retried, so it waits (:func:`drive`) until
    the target is reached or nothing is in flight any more.
    """
    worker = current_worker()

    def step() -> str | Waiting:
        if deadline is not None and deadline - time.monotonic() <= 0:
            return DONE
        got = claim_search_trial(study, target, worker)
        if not isinstance(got, optuna.Trial):
            return got
        frozen = run_trial(study, got, runner, on_event)
        if frozen is not None:
            after_trial(study, frozen)
        return RAN

    drive(study, step, on_event)
