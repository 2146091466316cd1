"""Multi-fidelity search: a candidate climbs the rungs of the training budget while nothing dominates it.

ASHA (Li et al., 2020) promotes a result as soon as it arrives, without
waiting for its rung to fill, so workers never idle; MOASHA (Schmucker et
al., Syne Tune) ranks a rung by non-dominated sorting when there are several
objectives. Here the rule is the plainest multi-objective one: a candidate
that has trained to rung ``k`` goes on to rung ``k + 1`` when no result at
rung ``k`` dominates it (rung accuracy and measured throughput, which is
exact and cheap). References always climb to the top and pay nothing extra
for the rungs: in ``continue`` mode their rung results, read on the way, are
the first yardsticks of every rung; in ``retrain`` mode (the default) a
lower rung is a run of its own, so they train the full budget only and the
candidates are judged at the lower rungs against each other.

Optuna's pruners do not support multi-objective studies, so this layer sits
beside the sampler: the climb happens inside one trial (the model stays in
memory between rungs), and every rung result is written to the trial
(``rungs`` attr) before the decision is taken, so concurrent workers see
each other's results, a resumed study redoes nothing, and a retry of a
killed trial takes over the decided rungs and, in ``continue`` mode, the
paused net from its rung checkpoint. A candidate stopped at a rung ends
PRUNED (``prune_reason`` names the result that dominates it); only the top
rung's result is an objective value, so the sampler and the front see the
full budget only.

A study with a time budget (``timeout``) pauses a promoted candidate whose
next rung, at the seconds per epoch it has trained so far, would end after
the deadline: its rung record is promoted and marked ``out_of_time``, and
the trial ends as a run cut short (FAIL, ``interrupted: paused at rung
...``; :class:`TimeBudgetPaused`). Its trial slot stays in flight rather
than counted as a result; the next run queues it again like any
interrupted trial, and the retry climbs on from its decided rungs (in
``continue`` mode from its rung checkpoint), or pauses again untrained
when its next rung would again end after that run's deadline. A rung that
needs more than a whole run's time budget would pause in every run: such a
candidate is stopped instead (PRUNED, ``out_of_time``, promoted False).
References are never paused, as every claim is measured against them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from ..attrs import PRUNE_REASON, REFERENCE, RUNG, RUNG_OUT_OF_TIME, RUNG_PAUSED, RUNG_STOPPED, RUNGS, TIME_BUDGET_STOP
from .. import lifecycle
from ..checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from ..data import DataBundle
from ..layout import StudyPaths
from ..model import reparameterize
from ..report.frames import dominates
from ..report.rungs import taken_over
from ..report.trust import standard_error
from ..spec import RepVGGSpec
from ..train import StepCallback, TrainConfig, TrainResult, TrainState, init_model, train
from .events import EventCallback, RungDecided
from .slots import paused, trial_key
from ..study import FidelityConfig

__all__ = [
    "RungResult", "rung_records", "rung_results", "dominating", "beyond_noise", "climb", "record_top", "stopped_at", "discard_paused",
    "rung_train_config", "next_rung_seconds", "out_of_time", "TimeBudgetPaused", "paused_by_time",
]


class TimeBudgetPaused(Exception):
    """A candidate's next rung would end after the time budget: its trial ends FAIL as interrupted (its
    message is the ``fail_reason`` after ``interrupted:``), and the next run continues the climb."""


@dataclass(frozen=True)
class RungResult:
    """One candidate's result at one rung: the point a promotion is decided on."""

    trial: int
    accuracy: float
    throughput: float

    def as_point(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "throughput": self.throughput}


def rung_records(t: FrozenTrial | optuna.Trial) -> list[dict[str, Any]]:
    """The ``rungs`` attr of a trial (lowest rung first; empty for a single-fidelity trial)."""
    return [dict(r) for r in (t.user_attrs.get(RUNGS) or [])]


def rung_results(trials: Iterable[FrozenTrial], rung: int, exclude: Iterable[int] = ()) -> list[RungResult]:
    """Every result recorded at ``rung`` by a candidate of the study (any state, surplus trials left out)."""
    skip = set(exclude)
    out = []
    for t in trials:
        if t.number in skip or lifecycle.lost(t) or lifecycle.is_linked(t):
            continue
        for r in rung_records(t):
            if r.get("rung") == rung and r.get("accuracy") is not None:
                out.append(RungResult(t.number, float(r["accuracy"]), float(r["images_per_s"])))
    return out


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


def rung_train_config(train_cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The proxy budget cut to ``epochs`` for a re-trained rung: a whole schedule of its own, its warmup
    scaled by the same factor (a 1-epoch run with the full budget's 1-epoch warmup would never anneal)."""
    scale = epochs / train_cfg.epochs
    return dataclasses.replace(train_cfg, epochs=epochs, warmup_epochs=train_cfg.warmup_epochs * scale)


def _ancestors(trial: optuna.Trial, by_number: dict[int, FrozenTrial]) -> list[FrozenTrial]:
    """The killed trials this one retries, nearest first (a retry of a retry walks the whole chain)."""
    me = by_number.get(trial.number)
    return lifecycle.retry_chain(me, by_number) if me is not None else []


def _inherited(ancestors: Sequence[FrozenTrial]) -> tuple[list[dict[str, Any]], FrozenTrial | None]:
    """The decided rung records of the nearest killed ancestor that climbed (undecided ones are redone),
    and that ancestor."""
    for t in ancestors:
        records = rung_records(t)
        if records:
            out = []
            for r in records:
                if r.get("promoted") is None:
                    break
                out.append(r)
            return out, t
    return [], None


def discard_paused(paths: StudyPaths, trial: optuna.Trial) -> None:
    """Delete the candidate's rung checkpoint (its trial ended: completed, stopped or failed).

    Only while the trial is still RUNNING in the storage: a trial failed from
    outside (missed heartbeats) has a retry that may be using the checkpoint.
    """
    trials = trial.study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    me = by_number.get(trial.number)
    if me is not None and me.state == optuna.trial.TrialState.RUNNING:
        paths.rung_checkpoint(trial_key(me, by_number)).unlink(missing_ok=True)


def beyond_noise(sigmas: float) -> str:
    """How a stop rule with ``sigmas`` (``[fidelity] stop_sigmas``) reads after "dominates it" ("" for plain dominance)."""
    return f" beyond {sigmas:g} standard error{'s' * (sigmas != 1)}" if sigmas > 0 else ""


def _stop_reason(rung: int, rungs: int, epochs: int, me: RungResult, by: RungResult, sigmas: float = 0.0) -> str:
    return (f"{_at_rung(rung, rungs, epochs)}: trial {by.trial} dominates it{beyond_noise(sigmas)} ({by.accuracy:.3f} vs "
            f"{me.accuracy:.3f} accuracy, {by.throughput:.1f} vs {me.throughput:.1f} img/s)")


def _at_rung(rung: int, rungs: int, epochs: int, what: str = RUNG_STOPPED) -> str:
    return f"{what} at rung {rung + 1}/{rungs} ({epochs} epoch{'s' * (epochs != 1)})"


def next_rung_seconds(budgets: Sequence[int], rung: int, spent: float, mode: str, trained: int | None = None) -> float:
    """Training seconds rung ``rung + 1`` will take, at the seconds per epoch paid up to rung ``rung``.

    ``spent`` is the candidate's training time so far: in ``continue`` mode one
    run of ``budgets[rung]`` epochs, in ``retrain`` mode every lower rung's run.
    ``trained``: in ``continue`` mode, the epochs the net to be continued has
    (default ``budgets[rung]``; 0 when a retry found no rung checkpoint and
    starts afresh).
    """
    paid = budgets[rung] if mode == "continue" else sum(budgets[: rung + 1])
    start = budgets[rung] if trained is None else trained
    more = budgets[rung + 1] - start if mode == "continue" else budgets[rung + 1]
    return spent / max(paid, 1) * max(more, 0)


@dataclass(frozen=True)
class _Late:
    """A promoted candidate's next rung would end after the run's deadline: why, and whether for good."""

    reason: str
    for_good: bool  # the rung needs more than a whole run's budget: it would pause in every run


def _time_check(budgets: Sequence[int], rung: int, need: float, deadline: float | None,
                budget: float | None) -> _Late | None:
    """None when rung ``rung + 1`` (``need`` seconds with its evaluation) ends before ``deadline``.

    Otherwise the candidate pauses there for the next run, or, when ``need``
    exceeds the whole time budget of a run (``budget`` seconds), is stopped:
    pausing it would only repeat in every run.
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if need <= left:
        return None
    if budget is not None and need > budget:
        return _Late(f"{_at_rung(rung, len(budgets), budgets[rung])}: rung {rung + 2} needs about {need:.0f} s, more "
                     f"than all of {TIME_BUDGET_STOP} ({budget:.0f} s); a larger --timeout, or --timeout 0, lets "
                     f"such a candidate climb", True)
    return _Late(f"{_at_rung(rung, len(budgets), budgets[rung], RUNG_PAUSED)}: {TIME_BUDGET_STOP} ends in "
                 f"{max(left, 0):.0f} s and rung {rung + 2} needs about {need:.0f} s more; the next run continues "
                 f"its climb", False)


def climb(
    trial: optuna.Trial, spec: RepVGGSpec, throughput: float, *, fidelity: FidelityConfig, train_cfg: TrainConfig,
    init_seed: int, data: DataBundle, device: torch.device, paths: StudyPaths,
    score: Callable[[nn.Module], tuple[float, float | None]],
    on_step: StepCallback | None = None, on_event: EventCallback | None = None, deadline: float | None = None,
    budget: float | None = None, pause: Callable[[], None] | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Train a candidate rung by rung; return the net trained at the full budget and its result.

    ``score(deploy_net)`` gives the accuracy a rung is judged on (the
    objective's: the INT8 net's under a quantized runtime) and the float
    accuracy (None when they are the same). Raises
    :class:`optuna.TrialPruned` when another candidate's result at the same
    rung dominates it (the ``rungs`` attr holds every rung it finished,
    ``prune_reason`` says which trial stopped it). The caller fuses,
    evaluates and records the top rung as for a single-fidelity trial, then
    calls :func:`record_top`. ``deadline`` (a :func:`time.monotonic` time,
    from the study's ``timeout``) pauses a promoted candidate, not a
    reference, whose next rung would end after it: :class:`TimeBudgetPaused`
    (also raised at once by a retry whose next rung would); a rung that needs
    more than the run's whole ``budget`` (seconds) stops it for good instead. ``pause()`` runs at
    the end of each rung below the top, before the decision (the objective
    lets a queued measurement of another local worker take the device there).
    """
    budgets = fidelity.budgets(train_cfg.epochs)
    top = len(budgets) - 1
    emit: Callable[[Any], None] = on_event or (lambda e: None)
    trials = trial.study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    me_frozen = by_number.get(trial.number)
    slot = trial_key(me_frozen, by_number) if me_frozen is not None else trial.number
    paused_net = paths.rung_checkpoint(slot)
    ancestors = _ancestors(trial, by_number)
    reference = trial.user_attrs.get(REFERENCE)
    own = {trial.number} | {t.number for t in ancestors}  # one candidate: never judged by its own earlier runs
    records, source = _inherited(ancestors)
    if records:
        trial.set_user_attr(RUNGS, records)
        trial.set_user_attr(RUNG, records[-1]["rung"])
        last = records[-1]
        if not last["promoted"]:  # the killed trial was stopped but died before it said so
            why = (f"rung {int(last['rung']) + 2} needs more than all of {TIME_BUDGET_STOP}"
                   if last.get(RUNG_OUT_OF_TIME) else f"trial {last['dominated_by']} dominates it")
            reason = str((source.user_attrs.get(PRUNE_REASON) if source is not None else None) or
                         f"{_at_rung(int(last['rung']), len(budgets), int(last['epochs']))}: {why}")
            trial.set_user_attr(PRUNE_REASON, reason)
            raise optuna.TrialPruned(reason)

    spent = float(records[-1].get("train_seconds", 0.0)) if records else 0.0
    model = init_model(spec, seed=init_seed, device=device)
    state: TrainState | None = None
    if fidelity.mode == "continue" and ancestors and paused_net.is_file():
        # Where a killed run of this candidate paused: at its last decided rung, or one rung on if it died
        # before recording that rung. Only its own file: same net, written by a trial of its retry chain.
        usable = {budgets[i] for i in (len(records) - 1, len(records)) if 0 <= i < top}
        ckpt = load_checkpoint(paused_net)
        saved = TrainState.from_dict(ckpt.train_state) if ckpt.train_state is not None else None
        mine = ckpt.spec.hash == spec.hash and ckpt.meta.get("trial") in own
        if mine and saved is not None and saved.epoch in usable:
            load_state_dict_checked(model, ckpt.state_dict, source=str(paused_net))
            state = saved
    if records and not reference:  # a paused or killed climb taken over: its next rung must fit this run too
        k = int(records[-1]["rung"])
        trained = (state.epoch if state is not None else 0) if fidelity.mode == "continue" else None
        late = _time_check(budgets, k, next_rung_seconds(budgets, k, spent, fidelity.mode, trained), deadline,
                           budget)
        if late is not None and late.for_good:
            records[-1].update({"promoted": False, RUNG_OUT_OF_TIME: True})
            trial.set_user_attr(RUNGS, records)
            trial.set_user_attr(PRUNE_REASON, late.reason)
            raise optuna.TrialPruned(late.reason)
        if late is not None:
            raise TimeBudgetPaused(late.reason)
    result: TrainResult | None = None
    for k in range(len(records), len(budgets)):
        epochs = budgets[k]
        if reference and fidelity.mode == "retrain" and k < top:
            continue  # its lower rungs would be runs of their own, paid only to be yardsticks: the full one alone
        desc = f"trial {trial.number} rung {k + 1}/{len(budgets)}"
        if fidelity.mode == "retrain":  # each rung a run of its own, from the same initial weights
            model = init_model(spec, seed=init_seed, device=device)
            result = train(model, data, rung_train_config(train_cfg, epochs), device, progress=on_step, desc=desc)
            spent += result.seconds
        elif state is not None and state.epoch == epochs:  # paused right here: nothing to train for this rung
            spent = max(spent, state.seconds)
        else:
            result = train(model, data, train_cfg, device, progress=on_step, desc=desc, resume=state, stop_epoch=epochs)
            spent = max(spent, result.seconds)  # counted from the run's start, paused pieces included
            state = result.state
        if k == top:
            break
        if fidelity.mode == "continue":
            assert state is not None
            save_checkpoint(paused_net, model, spec, meta={"trial": trial.number, "rung": k},
                            train_state=state.to_dict())
        scored = time.monotonic()
        accuracy, float_accuracy = score(reparameterize(model))
        scored = time.monotonic() - scored
        mine = RungResult(trial.number, accuracy, throughput)
        record = _record(k, epochs, accuracy, float_accuracy, throughput, spent)
        records.append(record)
        trial.set_user_attr(RUNGS, records)  # visible to other workers before this one decides
        if pause is not None:  # a rung's end: a measurement another worker has queued runs now, before the decision
            pause()
        by = None if reference else dominating(mine, rung_results(trial.study.get_trials(deepcopy=False), k,
                                                                   exclude=own),
                                               fidelity.stop_sigmas, len(data.val_y))
        late = None if by is not None or reference else _time_check(
            budgets, k, next_rung_seconds(budgets, k, spent, fidelity.mode) + scored, deadline, budget)
        if late is not None:  # its next rung waits for the next run (the rung checkpoint stays), or never comes
            record[RUNG_OUT_OF_TIME] = True
        promoted = by is None and (late is None or not late.for_good)
        record["promoted"], record["dominated_by"] = promoted, None if by is None else by.trial
        trial.set_user_attr(RUNGS, records)
        trial.set_user_attr(RUNG, k)
        emit(RungDecided(trial.number, k, len(budgets), epochs, accuracy, throughput, promoted,
                         None if by is None else by.trial, reference, paused=promoted and late is not None))
        if late is not None and promoted:
            raise TimeBudgetPaused(late.reason)
        if not promoted:
            reason = late.reason if late is not None else _stop_reason(k, len(budgets), epochs, mine, by,
                                                                      fidelity.stop_sigmas)
            trial.set_user_attr(PRUNE_REASON, reason)
            paused_net.unlink(missing_ok=True)
            raise optuna.TrialPruned(reason)
    assert result is not None
    return model, result._replace(seconds=spent)


def _record(rung: int, epochs: int, accuracy: float, float_accuracy: float | None, throughput: float,
            train_seconds: float) -> dict[str, Any]:
    return {"rung": rung, "epochs": epochs, "accuracy": accuracy, "float_accuracy": float_accuracy,
            "images_per_s": throughput, "train_seconds": round(train_seconds, 3), "promoted": None,
            "dominated_by": None}


def record_top(trial: optuna.Trial, fidelity: FidelityConfig, train_epochs: int, accuracy: float,
               float_accuracy: float | None, throughput: float, train_seconds: float) -> None:
    """Add the top rung (the full budget: the trial's objective values) to a climbed candidate's ``rungs`` attr."""
    budgets = fidelity.budgets(train_epochs)
    records = rung_records(trial)
    records.append(_record(len(budgets) - 1, budgets[-1], accuracy, float_accuracy, throughput, train_seconds))
    trial.set_user_attr(RUNGS, records)
    trial.set_user_attr(RUNG, len(budgets) - 1)


def out_of_time(t: FrozenTrial) -> bool:
    """Whether a candidate's climb ended at a rung because of the time budget, not because anything dominated
    it (its last rung record is ``out_of_time``): paused for the next run, or, in a study made before pauses
    existed, stopped (PRUNED) for good."""
    records = rung_records(t)
    return bool(records) and bool(records[-1].get(RUNG_OUT_OF_TIME))


def paused_by_time(trials: Sequence[FrozenTrial]) -> list[int]:
    """Candidates paused by the time budget whose climb no retry has taken over yet (a retry queued but not
    started, or surplus, has not)."""
    done = taken_over(trials)
    return [t.number for t in trials if paused(t) and t.number not in done]


def stopped_at(records: Sequence[dict[str, Any]]) -> int | None:
    """The rung a candidate was stopped at (None: it was not stopped)."""
    for r in records:
        if r.get("promoted") is False:
            return int(r["rung"])
    return None
