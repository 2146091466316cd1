"""Multi-fidelity search: a candidate climbs the rungs of the training budget while nothing dominates it.

ASHA (Li et al., 2020) promotes a result as soon as it arrives, without
waiting for its rung to fill, so workers never idle; MOASHA (Schmucker et
al., Syne Tune) ranks a rung by non-dominated sorting when there are several
objectives. The promotion rule is chosen by name (``[fidelity] rule``, from
:data:`repvgg_nas.study.promotion.PROMOTION_RULES`); the default is the
plainest multi-objective one: a candidate that has trained to rung ``k`` goes
on to rung ``k + 1`` when no result at rung ``k`` dominates it (the rung's
accuracy and every measured objective of the table, throughput first: exact
and cheap), and ``none`` lets every
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
PRUNED (``prune_reason`` names the result that stops it). Deciding a rung
returns a :class:`Decision` (climb, pause or stop), and the climb acts on it
by raising :class:`.ends.Stopped` or :class:`.ends.TimeBudgetPaused`; the
worker loop records how the trial ended. Only the top
rung's result is an objective value, so the sampler and the front see the
full budget only.

A study with a time budget (``timeout``) pauses a promoted candidate whose
next rung, at the seconds per epoch it has trained so far, would end after
the deadline: its rung record is promoted and marked ``out_of_time``, and
the trial ends as a run cut short (FAIL, outcome paused, reason ``paused at
rung ...``; :class:`TimeBudgetPaused`). Its trial slot stays in flight rather
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
from typing import Literal

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from .. import lifecycle
from ..attrs import PRUNE_REASON, REFERENCE, RUNG, RUNGS
from ..checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from ..data import DataBundle
from ..layout import StudyPaths
from ..lifecycle import Outcome, taken_over
from ..model import reparameterize
from ..objectives import BASE_OBJECTIVES, Objective
from ..records import RungRecord, stop_record, stored
from ..records import rung_records
from ..spec import RepVGGSpec
from ..study import FidelityConfig
from ..study.promotion import PROMOTION_RULES, PromotionRule, RuleSettings, RungResult, beyond_noise, dominating
from ..train import StepCallback, TrainConfig, TrainResult, TrainState
from .ends import Stopped, TimeBudgetPaused
from .events import EventCallback, RungDecided

__all__ = [
    "Climber", "Decision", "RungRecord", "RungResult", "TimeBudgetPaused", "PROMOTION_RULES", "beyond_noise",
    "discard_paused", "dominating", "next_rung_seconds", "out_of_time", "paused_by_time", "record_top",
    "rung_records", "rung_results", "rung_train_config", "stopped_at",
]

# How reasons name things (text for people only: no code reads a reason).
_STOPPED, _PAUSED, _BUDGET = "stopped", "paused", "the time budget"


def _point(t: FrozenTrial | optuna.Trial, r: RungRecord, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """A rung result's values in table order: the rung's accuracy for the trained objective, the trial's
    measured objectives as measured once, before training."""
    return tuple(r.accuracy if o.measure is None else float(t.user_attrs[o.attr]) for o in objectives)


def rung_results(trials: Iterable[FrozenTrial], rung: int, exclude: Iterable[int] = (),
                 objectives: Sequence[Objective] | None = None) -> list[RungResult]:
    """Every result recorded at ``rung`` by a candidate of the study (any state, surplus trials left out)."""
    table = tuple(objectives) if objectives is not None else BASE_OBJECTIVES
    skip = set(exclude)
    out = []
    for t in trials:
        if t.number in skip or lifecycle.lost(t) or lifecycle.is_linked(t):
            continue
        out += [RungResult(t.number, _point(t, r, table)) for r in rung_records(t) if r.rung == rung]
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
    return lifecycle.slot_key(me, by_number) if me is not None else number


def _inherited(ancestors: Sequence[FrozenTrial]) -> tuple[list[RungRecord], FrozenTrial | None]:
    """The decided rung records of the nearest killed ancestor that climbed (undecided ones are redone),
    and that ancestor."""
    for t in ancestors:
        records = rung_records(t)
        if records:
            out = []
            for r in records:
                if r.promoted is None:
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
class Decision:
    """What deciding a rung returns; the climb acts on it. ``climb``: train the next rung; ``pause``: the
    next rung waits for the next run (:class:`TimeBudgetPaused`); ``stop``: the climb ends for good
    (:class:`.ends.Stopped` with ``outcome``). ``reason`` is for people."""

    action: Literal["climb", "pause", "stop"]
    reason: str | None = None
    outcome: Outcome | None = None
    dominated_by: int | None = None
    out_of_time: bool = False

    @property
    def promoted(self) -> bool:
        return self.action != "stop"

    def act(self) -> None:
        """Raise what the decision means for the trial (nothing when it climbs on)."""
        if self.action == "pause":
            raise TimeBudgetPaused(self.reason)
        if self.action == "stop":
            assert self.outcome is not None and self.reason is not None
            raise Stopped(self.outcome, self.reason)


CLIMB = Decision("climb")


def _time_check(budgets: Sequence[int], rung: int, need: float, deadline: float | None,
                budget: float | None) -> Decision:
    """Climb when rung ``rung + 1`` (``need`` seconds with its evaluation) ends before ``deadline``.

    Otherwise the candidate pauses there for the next run, or, when ``need``
    exceeds the whole time budget of a run (``budget`` seconds), is stopped:
    pausing it would only repeat in every run.
    """
    if deadline is None:
        return CLIMB
    left = deadline - time.monotonic()
    if need <= left:
        return CLIMB
    if budget is not None and need > budget:
        return Decision("stop", f"{_at_rung(rung, len(budgets), budgets[rung])}: rung {rung + 2} needs about "
                        f"{need:.0f} s, more than all of {_BUDGET} ({budget:.0f} s); a larger --timeout, or "
                        f"--timeout 0, lets such a candidate climb", Outcome.OUT_OF_TIME, out_of_time=True)
    return Decision("pause", f"{_at_rung(rung, len(budgets), budgets[rung], _PAUSED)}: {_BUDGET} ends in "
                    f"{max(left, 0):.0f} s and rung {rung + 2} needs about {need:.0f} s more; the next run "
                    f"continues its climb", out_of_time=True)


# ---- what every climb of a run shares ---------------------------------------------------------------


@dataclass(frozen=True)
class Climber:
    """What every candidate's climb in one run shares: the study's fidelity settings and objectives, the data
    and device, where rung checkpoints live, how a net is scored and trained, the time budget, and the hook
    that lets another worker's queued measurement run at a rung's end (``at_rung_end``).

    ``score(deploy_net)`` gives the accuracy a rung is judged on (the
    objective's: the INT8 net's under a quantized runtime) and the float
    accuracy (None when they are the same); ``train``/``init_model`` have
    the signatures of :func:`repvgg_nas.train.train`/``init_model``.
    ``deadline`` (a :func:`time.monotonic` time) pauses a promoted candidate,
    not a reference, whose next rung would end after it; a rung that needs
    more than the run's whole ``budget`` (seconds) stops it for good instead.
    """

    fidelity: FidelityConfig
    objectives: tuple[Objective, ...]
    data: DataBundle
    device: torch.device
    paths: StudyPaths
    score: Callable[[nn.Module], tuple[float, float | None]]
    train: Callable[..., TrainResult]
    init_model: Callable[..., nn.Module]
    on_step: StepCallback | None = None
    on_event: EventCallback | None = None
    deadline: float | None = None
    budget: float | None = None
    at_rung_end: Callable[[], None] | None = None

    @property
    def rule(self) -> PromotionRule:
        return PROMOTION_RULES.get(self.fidelity.rule)

    def settings(self) -> RuleSettings:
        """What the rule reads from the study."""
        return RuleSettings(self.fidelity.stop_sigmas, len(self.data.val_y), self.objectives)

    def climb(self, trial: optuna.Trial, spec: RepVGGSpec, throughput: float, train_cfg: TrainConfig,
              init_seed: int) -> tuple[nn.Module, TrainResult]:
        """Train a candidate rung by rung; return the net trained at the full budget and its result.

        Raises :class:`.ends.Stopped` when the promotion rule (``fidelity.rule``)
        stops it at a rung, by default when another candidate's result at the
        same rung dominates it (the ``rungs`` attr holds every rung it
        finished), and :class:`TimeBudgetPaused` when its next rung would end
        after the deadline (also at once, for a retry whose next rung would).
        The caller fuses, evaluates and records the top rung as for a
        single-fidelity trial, then calls :func:`record_top`.
        """
        by_number = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
        c = _Climb(self, trial, spec, throughput, train_cfg, init_seed,
                   self.paths.rung_checkpoint(_slot(trial.number, by_number)), _ancestors(trial, by_number))
        c.resume()
        for k in range(len(c.records), len(c.budgets)):
            if c.reference and self.fidelity.mode == "retrain" and k < c.top:
                continue  # its lower rungs would be runs of their own, paid only to be yardsticks
            _TRAIN_RUNG[self.fidelity.mode](c, k)
            if k < c.top:
                c.decide(k).act()
        assert c.model is not None and c.result is not None
        return c.model, c.result._replace(seconds=c.spent)


# ---- one candidate's climb -------------------------------------------------------------------------


@dataclass
class _Climb:
    """One candidate's climb: what it trains (set once) and where it stands (the rung records so far, its
    training seconds, the net, and in ``continue`` mode the run's state)."""

    env: Climber
    trial: optuna.Trial
    spec: RepVGGSpec
    throughput: float
    train_cfg: TrainConfig
    init_seed: int
    paused_net: Path  # the candidate's rung checkpoint (``continue`` mode), one per slot
    ancestors: list[FrozenTrial]  # the killed or paused trials it retries, nearest first
    records: list[RungRecord] = field(default_factory=list)
    spent: float = 0.0  # training seconds: continue mode one run's (paused pieces included), retrain mode all runs'
    model: nn.Module | None = None
    state: TrainState | None = None  # continue mode: where the run stands
    result: TrainResult | None = None  # the last training run's

    @property
    def budgets(self) -> tuple[int, ...]:
        return self.env.fidelity.budgets(self.train_cfg.epochs)

    @property
    def top(self) -> int:
        return len(self.budgets) - 1

    @property
    def reference(self) -> str | None:
        """A reference always climbs and is never paused."""
        return self.trial.user_attrs.get(REFERENCE)

    @property
    def own(self) -> set[int]:
        """This trial and its ancestors: one candidate, never judged by its own earlier runs."""
        return {self.trial.number} | {t.number for t in self.ancestors}

    def desc(self, k: int) -> str:
        return f"trial {self.trial.number} rung {k + 1}/{len(self.budgets)}"

    def fresh_model(self) -> nn.Module:
        return self.env.init_model(self.spec, seed=self.init_seed, device=self.env.device)

    def save_records(self) -> None:
        self.trial.set_user_attr(RUNGS, stored(self.records))

    # ---- resume: take over the climb of a killed or paused ancestor ----

    def resume(self) -> None:
        """Take over the decided rungs of the nearest ancestor that climbed, in ``continue`` mode its net from
        the rung checkpoint, and check that a taken-over candidate's next rung fits this run (raises when not)."""
        self._inherit()
        self.model = self.fresh_model()
        if self.env.fidelity.mode == "continue" and self.ancestors and self.paused_net.is_file():
            self._reload()
        if self.records and not self.reference:
            self._check_taken_over()

    def _inherit(self) -> None:
        """Copy the ancestor's decided rung records to this trial; a stopped one stays stopped, untrained."""
        records, source = _inherited(self.ancestors)
        if not records:
            return
        self.records = records
        self.save_records()
        last = records[-1]
        self.trial.set_user_attr(RUNG, last.rung)
        if not last.promoted:  # the killed trial was stopped but died before it said so
            why = (f"rung {last.rung + 2} needs more than all of {_BUDGET}" if last.out_of_time
                   else f"trial {last.dominated_by} dominates it")
            reason = (source.user_attrs.get(PRUNE_REASON) if source is not None else None) or \
                f"{_at_rung(last.rung, len(self.budgets), last.epochs)}: {why}"
            raise Stopped(Outcome.OUT_OF_TIME if last.out_of_time else Outcome.STOPPED, str(reason))
        self.spent = last.train_seconds

    def _reload(self) -> None:
        """Load the net and run state where a killed run of this candidate paused: at its last decided rung, or
        one rung on if it died before recording that rung. Only its own file: same net, written by a trial of
        its retry chain."""
        assert self.model is not None
        usable = {self.budgets[i] for i in (len(self.records) - 1, len(self.records)) if 0 <= i < self.top}
        ckpt = load_checkpoint(self.paused_net)
        saved = TrainState.from_dict(ckpt.train_state) if ckpt.train_state is not None else None
        mine = ckpt.spec.hash == self.spec.hash and ckpt.meta.get("trial") in self.own
        if mine and saved is not None and saved.epoch in usable:
            load_state_dict_checked(self.model, ckpt.state_dict, source=str(self.paused_net))
            self.state = saved

    def _check_taken_over(self) -> None:
        """A paused or killed climb taken over: its next rung must end before this run's deadline too. Raises
        :class:`TimeBudgetPaused` to pause it again untrained, or stops it when the rung exceeds a whole run."""
        k = self.records[-1].rung
        mode = self.env.fidelity.mode
        trained = (self.state.epoch if self.state is not None else 0) if mode == "continue" else None
        need = next_rung_seconds(self.budgets, k, self.spent, mode, trained)
        decision = _time_check(self.budgets, k, need, self.env.deadline, self.env.budget)
        if decision.action == "stop":
            self.records[-1] = self.records[-1].decided(False, None, True)
            self.save_records()
        decision.act()

    # ---- decide a rung below the top ----

    def _score(self, k: int) -> tuple[RungRecord, RungResult, float]:
        """Score the net trained to rung ``k`` and record it (visible to other workers before this one decides);
        return the record, the result the rule judges and the seconds scoring took."""
        assert self.model is not None
        scored = time.monotonic()
        accuracy, float_accuracy = self.env.score(reparameterize(self.model))
        scored = time.monotonic() - scored
        record = RungRecord(k, self.budgets[k], accuracy, float_accuracy, self.throughput, round(self.spent, 3))
        self.records.append(record)
        self.save_records()
        return record, RungResult(self.trial.number, _point(self.trial, record, self.env.objectives)), scored

    def _judge(self, k: int, mine: RungResult, scored: float) -> Decision:
        """The rule (never for a reference), then the time check for the next rung."""
        if self.reference:
            return CLIMB
        settings = self.env.settings()
        others = rung_results(self.trial.study.get_trials(deepcopy=False), k, self.own, self.env.objectives)
        by = self.env.rule(mine, others, settings)
        if by is not None:
            why = self.env.rule.why(mine, by, settings)
            return Decision("stop", f"{_at_rung(k, len(self.budgets), self.budgets[k])}: trial {by.trial} {why}",
                            Outcome.STOPPED, dominated_by=by.trial)
        need = next_rung_seconds(self.budgets, k, self.spent, self.env.fidelity.mode) + scored
        return _time_check(self.budgets, k, need, self.env.deadline, self.env.budget)

    def decide(self, k: int) -> Decision:
        """Score rung ``k``, let a queued measurement run, judge it and record the decision; the caller acts."""
        record, mine, scored = self._score(k)
        if self.env.at_rung_end is not None:  # a measurement another worker queued runs before the decision
            self.env.at_rung_end()
        decision = self._judge(k, mine, scored)
        self.records[-1] = record.decided(decision.promoted, decision.dominated_by, decision.out_of_time)
        self.save_records()
        self.trial.set_user_attr(RUNG, k)
        emit = self.env.on_event or (lambda e: None)
        emit(RungDecided(self.trial.number, k, len(self.budgets), self.budgets[k], record.accuracy,
                         self.throughput, decision.promoted, decision.dominated_by, self.reference,
                         paused=decision.action == "pause"))
        if decision.action == "stop":
            self.paused_net.unlink(missing_ok=True)
        return decision


# ---- train one rung: one function per mode ------------------------------------------------------


def _train_retrain(c: _Climb, k: int) -> None:
    """``retrain`` mode: rung ``k`` is a run of its own budget, from the same initial weights."""
    c.model = c.fresh_model()
    c.result = c.env.train(c.model, c.env.data, rung_train_config(c.train_cfg, c.budgets[k]), c.env.device,
                           progress=c.env.on_step, desc=c.desc(k))
    c.spent += c.result.seconds


def _train_continue(c: _Climb, k: int) -> None:
    """``continue`` mode: train on, within the full budget's schedule, to rung ``k``'s epochs; below the top,
    keep the net in the rung checkpoint, where a retry of a killed or paused run continues it."""
    assert c.model is not None
    if c.state is not None and c.state.epoch == c.budgets[k]:  # paused right here: nothing to train for this rung
        c.spent = max(c.spent, c.state.seconds)
    else:
        c.result = c.env.train(c.model, c.env.data, c.train_cfg, c.env.device, progress=c.env.on_step,
                               desc=c.desc(k), resume=c.state, stop_epoch=c.budgets[k])
        c.spent = max(c.spent, c.result.seconds)  # counted from the run's start, paused pieces included
        c.state = c.result.state
    if k < c.top:
        assert c.state is not None
        save_checkpoint(c.paused_net, c.model, c.spec, meta={"trial": c.trial.number, "rung": k},
                        train_state=c.state.to_dict())


_TRAIN_RUNG: dict[str, Callable[[_Climb, int], None]] = {"retrain": _train_retrain, "continue": _train_continue}


def record_top(trial: optuna.Trial, fidelity: FidelityConfig, train_epochs: int, accuracy: float,
               float_accuracy: float | None, throughput: float, train_seconds: float) -> None:
    """Add the top rung (the full budget: the trial's objective values) to a climbed candidate's ``rungs`` attr."""
    budgets = fidelity.budgets(train_epochs)
    records = rung_records(trial)
    records.append(RungRecord(len(budgets) - 1, budgets[-1], accuracy, float_accuracy, throughput,
                              round(train_seconds, 3)))
    trial.set_user_attr(RUNGS, stored(records))
    trial.set_user_attr(RUNG, len(budgets) - 1)


def out_of_time(t: FrozenTrial) -> bool:
    """Whether a candidate's climb ended at a rung because of the time budget, not because the promotion rule
    stopped it (its last rung record is ``out_of_time``): paused for the next run, or, when its next rung needs
    more than a whole run's budget, stopped (PRUNED) for good."""
    records = rung_records(t)
    return bool(records) and records[-1].out_of_time


def paused_by_time(trials: Sequence[FrozenTrial]) -> list[int]:
    """Candidates paused by the time budget whose climb no retry has taken over yet (a retry queued but not
    started, or surplus, has not)."""
    done = taken_over(trials)
    return [t.number for t in trials if lifecycle.paused(t) and t.number not in done]


def stopped_at(records: Sequence[RungRecord]) -> int | None:
    """The rung a candidate was stopped at (None: it was not stopped)."""
    stop = stop_record(records)
    return None if stop is None else stop.rung
