"""The ``[trust]`` linked re-trainings: extra seeds and long budgets of the front and the references.

They are ordinary Optuna trials (fixed params, roles ``seed_repeat`` and
``long_retrain``, ``repeat_of``/``train_seed``/``train_epochs`` attrs), asked
and told through the same worker loop as search trials (:mod:`.loop`), but
they take no search slot; :func:`.slots.repeat_key` names each one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from .. import lifecycle
from ..attrs import REPEAT_OF, TRAIN_EPOCHS, TRAIN_SEED
from ..lifecycle import Role
from ..stats import architecture_stats
from ..storage import claim_lock, enqueued_params
from ..study import StudyConfig
from ..study_frames import trials_frame
from .events import EventCallback, LinkedQueued, Waiting, ignore
from .loop import DONE, RAN, Runner, claim_linked_trial, drive, run_trial
from .slots import repeat_key

__all__ = ["linked_pending", "linked_wanted", "run_linked"]

TrialState = optuna.trial.TrialState
LinkedKey = tuple[int, int | None, int | None]  # (architecture trial, seed, epochs): slots.repeat_key


def linked_wanted(study: optuna.Study, cfg: StudyConfig) -> list[LinkedKey]:
    """The linked re-trainings the study should hold now, as :func:`slots.repeat_key` tuples.

    For every architecture on the front (taken on mean accuracy) and every
    reference: ``[trust] seeds - 1`` extra seeds (``cfg.seed + 1``, ...) at
    the proxy budget, and one run at ``long_epochs`` when set. Pruned variants
    are not re-trained (their accuracy comes from pruning a trained net).
    """
    trust = cfg.trust
    if trust.seeds <= 1 and trust.long_epochs is None:
        return []
    stats = architecture_stats(trials_frame(study))
    if stats.empty:
        return []
    pick = stats[(stats["on_front"].astype(bool) | stats["reference"].notna()) & (stats["kind"] != "pruned")]
    out: list[LinkedKey] = []
    for n in sorted(int(x) for x in pick["number"]):
        out += [(n, cfg.seed + k, None) for k in range(1, trust.seeds)]
        if trust.long_epochs is not None:
            out.append((n, None, trust.long_epochs))
    return out


def _linked_done(trials: list[optuna.trial.FrozenTrial], key: LinkedKey) -> bool:
    """A trial holds the finished result of the linked re-training ``key`` (not one cut short)."""
    return any(repeat_key(t) == key and lifecycle.holds_result(t) for t in trials)


def linked_pending(study: optuna.Study, cfg: StudyConfig) -> bool:
    """True while a wanted linked re-training has not finished (not queued yet, queued, running, or died)."""
    trials = study.get_trials(deepcopy=False)
    return not all(_linked_done(trials, key) for key in linked_wanted(study, cfg))


def _queue_linked(study: optuna.Study, cfg: StudyConfig) -> tuple[int, int]:
    """Queue every wanted linked re-training the study does not hold yet; return (seeds, long) queued.

    A key is held by a queued, running or finished trial; one that was cut
    short (Ctrl-C, a dead worker) is queued again, a finished one never. Runs
    under the claim lock, so two workers never queue the same key.
    """
    with claim_lock(study):
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        held = {repeat_key(t) for t in trials if repeat_key(t) is not None and not lifecycle.lost(t)
                and not lifecycle.needs_rerun(t)}
        seeds = longs = 0
        for key in linked_wanted(study, cfg):
            if key in held or key[0] not in by_number:
                continue
            attrs: dict[str, Any] = {REPEAT_OF: key[0]}
            if key[1] is not None:
                attrs[TRAIN_SEED] = key[1]
                seeds += 1
            if key[2] is not None:
                attrs[TRAIN_EPOCHS] = key[2]
                longs += 1
            role = Role.LONG_RETRAIN if key[2] is not None else Role.SEED_REPEAT
            study.enqueue_trial(enqueued_params(by_number[key[0]]), user_attrs=lifecycle.created_attrs(role, **attrs))
        return seeds, longs


def run_linked(
    study: optuna.Study, cfg: StudyConfig, runner: Runner, after_trial: Callable[..., None],
    on_event: EventCallback | None = None, rounds: int = 50,
) -> None:
    """Queue and run the ``[trust]`` re-trainings of the front and the references until none is missing.

    They are ordinary Optuna trials (fixed params, roles seed_repeat and
    long_retrain, ``repeat_of``/``train_seed``/``train_epochs`` attrs), asked
    and told through the same loop as search trials, but they take no search
    slot. The front may change as means come in, so each step queues what is
    missing, then runs one queued re-training. It stops when nothing is
    missing and none runs, or after ``rounds`` steps that had to queue
    re-trainings anew. While re-trainings run elsewhere (another worker, or a
    killed run whose heartbeat has not yet expired) it waits (:func:`.loop.drive`),
    and queues again any that died. Queued search trials (a reference past the
    target) are left in the queue: a linked step takes its own trials only.
    """
    emit = on_event or ignore
    left = [rounds]
    announced = [False]

    def step() -> str | Waiting:
        seeds, longs = _queue_linked(study, cfg)
        trials = study.get_trials(deepcopy=False)
        waiting = sum(t.state == TrialState.WAITING and repeat_key(t) is not None for t in trials)
        if seeds or longs or (waiting and not announced[0]):
            left[0] -= bool(seeds or longs)
            announced[0] = True
            emit(LinkedQueued(seeds, longs, waiting))
        trial = claim_linked_trial(study) if left[0] >= 0 else None
        if trial is None:
            running = sum(t.state == TrialState.RUNNING and repeat_key(t) is not None for t in trials)
            if not running or left[0] < 0:
                return DONE
            wanted = linked_wanted(study, cfg)
            return Waiting(running, len(wanted) - sum(_linked_done(trials, k) for k in wanted), len(wanted))
        frozen = run_trial(study, trial, runner, emit)
        if frozen is not None:
            after_trial(study, frozen)
        return RAN

    drive(study, step, emit)

