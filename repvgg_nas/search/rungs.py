"""Multi-fidelity search: a candidate climbs the rungs of the training budget while nothing dominates it.

ASHA (Li et al., 2020) promotes a result as soon as it arrives, without
waiting for its rung to fill, so workers never idle; MOASHA (Schmucker et
al., Syne Tune) ranks a rung by non-dominated sorting when there are several
objectives. The promotion rule is chosen by name (``[fidelity] rule``, from
:data:`repvgg_nas.study.promotion.PROMOTION_RULES`); the default is the
plainest multi-objective one: a candidate that has trained to rung ``k`` goes
on to rung ``k + 1`` when no result at rung ``k`` dominates it (rung accuracy
and measured throughput, which is exact and cheap), and ``none`` lets every
candidate climb. References always climb to the top and pay nothing extra
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
PRUNED (``prune_reason`` names the result that stops it); only the top
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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from ..attrs import PRUNE_REASON, REFERENCE, RUNG, RUNG_OUT_OF_TIME, RUNGS
from .. import lifecycle
from ..checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from ..data import DataBundle
from ..layout import StudyPaths
from ..model import reparameterize
from ..lifecycle import taken_over
from ..spec import RepVGGSpec
from ..train import StepCallback, TrainConfig, TrainResult, TrainState, init_model, train
from .events import EventCallback, RungDecided
from .slots import paused, trial_key
from ..study import FidelityConfig
from ..study.promotion import PROMOTION_RULES, PromotionRule, RuleSettings, RungResult, beyond_noise, dominating

__all__ = [
    "RungResult", "rung_records", "rung_results", "dominating", "beyond_noise", "climb", "record_top", "stopped_at", "discard_paused",
    "rung_train_config", "next_rung_seconds", "out_of_time", "TimeBudgetPaused", "paused_by_time", "PROMOTION_RULES",
]

# Wording of the reasons written here, for people only (the outcome and the rung records are what code reads).
_STOPPED = "stopped"
_PAUSED = "paused"
_TIME_BUDGET = "the time budget"


class TimeBudgetPaused(Exception):
    """A candidate's next rung would end after the time budget: its trial ends FAIL as interrupted (its
    message is the ``fail_reason`` after ``interrupted:``), and the next run continues the climb."""


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


def rung_train_config(train_cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The proxy budget cut to ``epochs`` for a re-trained rung: a whole schedule of its own, its warmup
    scaled by the same factor (a 1-epoch run with the full budget's 1-epoch warmup would never anneal)."""
    scale = epochs / train_cfg.epochs
    return dataclasses.replace(train_cfg, epochs=epochs, warmup_epochs=train_cfg.warmup_epochs * scale)


# ---- the retry chain: the only two places that walk it ------------------------------------------


def _ancestors(trial: optuna.Trial, by_number: dict[int, FrozenTrial]) -> list[FrozenTrial]:
    """The killed trials this one retries, nearest first (a retry of a retry walks the whole chain)."""
    me = by_number.get(trial.number)
    return lifecycle.retry_chain(me, by_number) if me is not None else []


def _slot(number: int, by_number: dict[int, FrozenTrial]) -> int:
    """The slot key of trial ``number``, shared by its whole retry chain: it names the rung checkpoint."""
    me = by_number.get(number)
    return trial_key(me, by_number) if me is not None else number


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
        paths.rung_checkpoint(_slot(trial.number, by_number)).unlink(missing_ok=True)


# ---- reasons and the time check ------------------------------------------------------------------


def _stop_reason(rung: int, rungs: int, epochs: int, me: RungResult, by: RungResult, rule: PromotionRule,
                 settings: RuleSettings) -> str:
    return f"{_at_rung(rung, rungs, epochs)}: trial {by.trial} {rule.why(me, by, settings)}"


def _at_rung(rung: int, rungs: int, epochs: int, what: str = _STOPPED) -> str:
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
                     f"than all of {_TIME_BUDGET} ({budget:.0f} s); a larger --timeout, or --timeout 0, lets "
                     f"such a candidate climb", True)
    return _Late(f"{_at_rung(rung, len(budgets), budgets[rung], _PAUSED)}: {_TIME_BUDGET} ends in "
                 f"{max(left, 0):.0f} s and rung {rung + 2} needs about {need:.0f} s more; the next run continues "
                 f"its climb", False)


# ---- one candidate's climb -------------------------------------------------------------------------


@dataclass
class _Climb:
    """One candidate's climb: what it trains and how it is judged (set once), and where it stands (the rung
    records so far, its training seconds, the net, and in ``continue`` mode the run's state)."""

    trial: optuna.Trial
    spec: RepVGGSpec
    throughput: float
    fidelity: FidelityConfig
    train_cfg: TrainConfig
    init_seed: int
    data: DataBundle
    device: torch.device
    score: Callable[[nn.Module], tuple[float, float | None]]
    on_step: StepCallback | None
    emit: Callable[[Any], None]
    deadline: float | None
    budget: float | None
    pause: Callable[[], None] | None
    paused_net: Path  # the candidate's rung checkpoint (``continue`` mode), one per slot
    ancestors: list[FrozenTrial]  # the killed or paused trials it retries, nearest first
    records: list[dict[str, Any]] = field(default_factory=list)
    spent: float = 0.0  # training seconds: continue mode one run's (paused pieces included), retrain mode all runs'
    model: nn.Module | None = None
    state: TrainState | None = None  # continue mode: where the run stands
    result: TrainResult | None = None  # the last training run's
    budgets: tuple[int, ...] = field(init=False)  # epochs of each rung, lowest first
    top: int = field(init=False)
    reference: str | None = field(init=False)  # a reference always climbs and is never paused
    own: set[int] = field(init=False)  # this trial and its ancestors: one candidate
    rule: PromotionRule = field(init=False)

    def __post_init__(self) -> None:
        self.budgets = self.fidelity.budgets(self.train_cfg.epochs)
        self.top = len(self.budgets) - 1
        self.reference = self.trial.user_attrs.get(REFERENCE)
        self.own = {self.trial.number} | {t.number for t in self.ancestors}  # never judged by its own earlier runs
        self.rule = PROMOTION_RULES.get(self.fidelity.rule)

    @property
    def settings(self) -> RuleSettings:
        """What the rule reads from the study (read when a rung is decided: a climb stopped untrained has no data)."""
        return RuleSettings(self.fidelity.stop_sigmas, len(self.data.val_y))

    def desc(self, k: int) -> str:
        return f"trial {self.trial.number} rung {k + 1}/{len(self.budgets)}"


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
    :class:`optuna.TrialPruned` when the promotion rule (``fidelity.rule``)
    stops it at a rung, by default when another candidate's result at the
    same rung dominates it (the ``rungs`` attr holds every rung it finished,
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
    by_number = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
    c = _Climb(
        trial=trial, spec=spec, throughput=throughput, fidelity=fidelity, train_cfg=train_cfg, init_seed=init_seed,
        data=data, device=device, score=score, on_step=on_step, emit=on_event or (lambda e: None), deadline=deadline,
        budget=budget, pause=pause, paused_net=paths.rung_checkpoint(_slot(trial.number, by_number)),
        ancestors=_ancestors(trial, by_number),
    )
    _resume(c)
    for k in range(len(c.records), len(c.budgets)):
        if c.reference and fidelity.mode == "retrain" and k < c.top:
            continue  # its lower rungs would be runs of their own, paid only to be yardsticks: the full one alone
        _TRAIN_RUNG[fidelity.mode](c, k)
        if k < c.top:
            _decide(c, k)
    assert c.model is not None and c.result is not None
    return c.model, c.result._replace(seconds=c.spent)


def _prune(trial: optuna.Trial, reason: str) -> NoReturn:
    """End the candidate's climb for good: PRUNED, ``reason`` as its ``prune_reason``."""
    trial.set_user_attr(PRUNE_REASON, reason)
    raise optuna.TrialPruned(reason)


# ---- resume: take over the climb of a killed or paused ancestor ----------------------------------


def _resume(c: _Climb) -> None:
    """Take over the decided rungs of the nearest ancestor that climbed, in ``continue`` mode its net from the
    rung checkpoint, and check that a taken-over candidate's next rung fits this run (raises when not)."""
    _inherit(c)
    c.model = init_model(c.spec, seed=c.init_seed, device=c.device)
    if c.fidelity.mode == "continue" and c.ancestors and c.paused_net.is_file():
        _reload(c)
    if c.records and not c.reference:
        _check_taken_over(c)


def _inherit(c: _Climb) -> None:
    """Copy the ancestor's decided rung records to this trial; a stopped one stays stopped, untrained."""
    records, source = _inherited(c.ancestors)
    if not records:
        return
    c.records = records
    c.trial.set_user_attr(RUNGS, records)
    c.trial.set_user_attr(RUNG, records[-1]["rung"])
    last = records[-1]
    if not last["promoted"]:  # the killed trial was stopped but died before it said so
        why = (f"rung {int(last['rung']) + 2} needs more than all of {_TIME_BUDGET}"
               if last.get(RUNG_OUT_OF_TIME) else f"trial {last['dominated_by']} dominates it")
        _prune(c.trial, str((source.user_attrs.get(PRUNE_REASON) if source is not None else None) or
                            f"{_at_rung(int(last['rung']), len(c.budgets), int(last['epochs']))}: {why}"))
    c.spent = float(last.get("train_seconds", 0.0))


def _reload(c: _Climb) -> None:
    """Load the net and run state where a killed run of this candidate paused: at its last decided rung, or
    one rung on if it died before recording that rung. Only its own file: same net, written by a trial of its
    retry chain."""
    assert c.model is not None
    usable = {c.budgets[i] for i in (len(c.records) - 1, len(c.records)) if 0 <= i < c.top}
    ckpt = load_checkpoint(c.paused_net)
    saved = TrainState.from_dict(ckpt.train_state) if ckpt.train_state is not None else None
    mine = ckpt.spec.hash == c.spec.hash and ckpt.meta.get("trial") in c.own
    if mine and saved is not None and saved.epoch in usable:
        load_state_dict_checked(c.model, ckpt.state_dict, source=str(c.paused_net))
        c.state = saved


def _check_taken_over(c: _Climb) -> None:
    """A paused or killed climb taken over: its next rung must end before this run's deadline too. Raises
    :class:`TimeBudgetPaused` to pause it again untrained, or stops it when the rung exceeds a whole run."""
    k = int(c.records[-1]["rung"])
    trained = (c.state.epoch if c.state is not None else 0) if c.fidelity.mode == "continue" else None
    late = _time_check(c.budgets, k, next_rung_seconds(c.budgets, k, c.spent, c.fidelity.mode, trained), c.deadline,
                       c.budget)
    if late is None:
        return
    if late.for_good:
        c.records[-1].update({"promoted": False, RUNG_OUT_OF_TIME: True})
        c.trial.set_user_attr(RUNGS, c.records)
        _prune(c.trial, late.reason)
    raise TimeBudgetPaused(late.reason)


# ---- train one rung: one function per mode ------------------------------------------------------


def _train_retrain(c: _Climb, k: int) -> None:
    """``retrain`` mode: rung ``k`` is a run of its own budget, from the same initial weights."""
    c.model = init_model(c.spec, seed=c.init_seed, device=c.device)
    c.result = train(c.model, c.data, rung_train_config(c.train_cfg, c.budgets[k]), c.device, progress=c.on_step,
                     desc=c.desc(k))
    c.spent += c.result.seconds


def _train_continue(c: _Climb, k: int) -> None:
    """``continue`` mode: train on, within the full budget's schedule, to rung ``k``'s epochs; below the top,
    keep the net in the rung checkpoint, where a retry of a killed or paused run continues it."""
    assert c.model is not None
    if c.state is not None and c.state.epoch == c.budgets[k]:  # paused right here: nothing to train for this rung
        c.spent = max(c.spent, c.state.seconds)
    else:
        c.result = train(c.model, c.data, c.train_cfg, c.device, progress=c.on_step, desc=c.desc(k), resume=c.state,
                         stop_epoch=c.budgets[k])
        c.spent = max(c.spent, c.result.seconds)  # counted from the run's start, paused pieces included
        c.state = c.result.state
    if k < c.top:
        assert c.state is not None
        save_checkpoint(c.paused_net, c.model, c.spec, meta={"trial": c.trial.number, "rung": k},
                        train_state=c.state.to_dict())


_TRAIN_RUNG: dict[str, Callable[[_Climb, int], None]] = {"retrain": _train_retrain, "continue": _train_continue}


# ---- decide a rung below the top ------------------------------------------------------------------


def _score(c: _Climb, k: int) -> tuple[dict[str, Any], RungResult, float]:
    """Score the net trained to rung ``k`` and record it (visible to other workers before this one decides);
    return the record, the result the rule judges and the seconds scoring took."""
    assert c.model is not None
    scored = time.monotonic()
    accuracy, float_accuracy = c.score(reparameterize(c.model))
    scored = time.monotonic() - scored
    record = _record(k, c.budgets[k], accuracy, float_accuracy, c.throughput, c.spent)
    c.records.append(record)
    c.trial.set_user_attr(RUNGS, c.records)
    return record, RungResult(c.trial.number, accuracy, c.throughput), scored


def _decide(c: _Climb, k: int) -> None:
    """Promote, pause or stop the candidate at rung ``k``: the rule (never for a reference), then the time check
    for its next rung. Returns when it climbs on; raises :class:`TimeBudgetPaused` or :class:`optuna.TrialPruned`."""
    record, mine, scored = _score(c, k)
    if c.pause is not None:  # a rung's end: a measurement another worker has queued runs now, before the decision
        c.pause()
    by = None if c.reference else c.rule(mine, rung_results(c.trial.study.get_trials(deepcopy=False), k,
                                                             exclude=c.own), c.settings)
    late = None if by is not None or c.reference else _time_check(
        c.budgets, k, next_rung_seconds(c.budgets, k, c.spent, c.fidelity.mode) + scored, c.deadline, c.budget)
    if late is not None:  # its next rung waits for the next run (the rung checkpoint stays), or never comes
        record[RUNG_OUT_OF_TIME] = True
    promoted = by is None and (late is None or not late.for_good)
    record["promoted"], record["dominated_by"] = promoted, None if by is None else by.trial
    c.trial.set_user_attr(RUNGS, c.records)
    c.trial.set_user_attr(RUNG, k)
    c.emit(RungDecided(c.trial.number, k, len(c.budgets), c.budgets[k], mine.accuracy, c.throughput, promoted,
                       None if by is None else by.trial, c.reference, paused=promoted and late is not None))
    if late is not None and promoted:
        raise TimeBudgetPaused(late.reason)
    if not promoted:
        reason = late.reason if late is not None else _stop_reason(k, len(c.budgets), c.budgets[k], mine, by, c.rule,
                                                                  c.settings)
        c.paused_net.unlink(missing_ok=True)
        _prune(c.trial, reason)


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
    """Whether a candidate's climb ended at a rung because of the time budget, not because the promotion rule
    stopped it (its last rung record is ``out_of_time``): paused for the next run, or, when its next rung needs
    more than a whole run's budget, stopped (PRUNED) for good."""
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
