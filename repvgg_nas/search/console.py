"""The search CLI's text: the events of :func:`run_search` drawn on stderr, and the plan, front and results as text.

Rendering only: what to say about a figure is decided by the library (a
trial's outcome by :mod:`repvgg_nas.lifecycle`, whether the latency table
drifted by :class:`repvgg_nas.stats.PredictionCheck`, how workers ended by
:class:`.workers.WorkersResult`); this module words it. It is the CLI's
renderer, so :class:`Console` writes to stderr, and the rest return strings
that :mod:`.__main__` prints. It is not re-exported by :mod:`repvgg_nas.search`.
"""

from __future__ import annotations

import math
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from tqdm.auto import tqdm

from .. import lifecycle
from ..attrs import (
    ARCH, DUPLICATE_OF, FAIL_REASON, MEASURE_CONTENDED, PARAMS, PRUNE_REASON, REFERENCE, REPEAT_OF, TRAIN_EPOCHS,
    TRAIN_SEED,
)
from ..cli import StepBar, format_table
from ..layout import StudyPaths
from ..measure import LatencyProgress
from ..objectives import BASE_OBJECTIVES, EXTRA_OBJECTIVES, Objective
from ..stats import PredictionCheck, prediction_check
from ..storage import redact_url
from ..study import PROMOTION_RULES, RuleSettings, StudyConfig
from ..train import TrainStep
from . import (
    Interrupted, LinkedQueued, PoolReady, PruneFailed, PruningFrontMember, Remeasured, RungDecided, SearchEvent,
    SearchResult, StudyStarted, TimeUp, TrialFinished, TrialTakenOver, Waiting, default_storage,
)
from .workers import WorkerPlan, WorkersResult

__all__ = [
    "Console", "say", "duration", "trial_line", "pareto_table", "budget_text", "prescreen_text", "prediction_text", "plan_text",
    "results_text", "workers_started_text", "workers_ended_lines",
]

TrialState = optuna.trial.TrialState


def say(text: str) -> None:
    """One line on stderr, at once (progress and notes; stdout carries the results)."""
    print(text, file=sys.stderr, flush=True)


def trial_line(t: optuna.trial.FrozenTrial, objectives: Sequence[Objective] = BASE_OBJECTIVES) -> str:
    """One line for a finished trial: its figures (``objectives``: the study's table), or its state and why."""
    ua = t.user_attrs
    ref = f" [{ua[REFERENCE]}]" if ua.get(REFERENCE) else ""
    if ua.get(DUPLICATE_OF) is not None:
        ref += f" (same net as trial {ua[DUPLICATE_OF]})"
    if ua.get(REPEAT_OF) is not None:
        what = f"seed {ua[TRAIN_SEED]}" if ua.get(TRAIN_SEED) is not None else f"{ua.get(TRAIN_EPOCHS)} epochs"
        ref += f" ({what} of trial {ua[REPEAT_OF]})"
    if ua.get(MEASURE_CONTENDED):
        ref += " (throughput measured under load)"
    if t.state == TrialState.COMPLETE:
        shown = [f"{o.show(v)}" + (f" {o.label}" if k >= len(BASE_OBJECTIVES) else "")
                 for k, (o, v) in enumerate(zip(objectives, t.values))]
        return (f"trial {t.number}{ref}: acc {', '.join(shown)}, "
                f"{ua.get(PARAMS, 0) / 1e6:.2f}M params | {ua.get(ARCH, '')}")
    reason = ua.get(FAIL_REASON) or ua.get(PRUNE_REASON) or ""
    if lifecycle.stopped_at_rung(t) or lifecycle.paused(t):  # multi-fidelity: not promoted, or its next rung
        return f"trial {t.number}{ref}: {reason} | {ua.get(ARCH, '')}"  # left to the next run
    return f"trial {t.number}{ref}: {t.state.name.lower()} ({reason}) | {ua.get(ARCH, '')}"


class _BudgetBar(tqdm):  # type: ignore[misc]
    """A bar of the time budget's seconds that shows the time left as ``{left}``: the budget less the time spent.

    tqdm's own ``{remaining}`` divides by the rate seen so far, which is
    near zero at the first tick ("0/900 s [00:00<85:06:15]").
    """

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        d["left"] = self.format_interval(math.ceil(max(0.0, d["total"] - d["elapsed"])))
        return d


class Console:
    """Draws :func:`run_search`'s events on stderr.

    With ``progress``: the study line, a progress bar (single process only:
    of the time budget when the run has one, with the time left of it, else
    of the trials), one line per finished trial, the pre-screen, waiting and
    pruning notes, and (on a terminal) a bar of the running trial's training
    steps or of the latency table's layers. Interruptions and failures of
    pruning are shown either way.
    """

    def __init__(self, progress: bool, objectives: Sequence[Objective] = BASE_OBJECTIVES,
                 budget: float | None = None) -> None:
        self.progress = progress
        self.objectives = tuple(objectives)
        self.budget = budget
        self.steps = StepBar(position=1, enabled=progress and sys.stderr.isatty())
        self.bar: Any = None
        self.layers: Any = None
        self.started = time.monotonic()
        self.done = self.target = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            TrainStep: self.steps, StudyStarted: self._started, TrialFinished: self._finished,
            Waiting: self._waiting, TrialTakenOver: self._taken_over, PruningFrontMember: self._pruning,
            PruneFailed: self._prune_failed, LinkedQueued: self._linked, Remeasured: self._remeasured,
            RungDecided: self._rung, TimeUp: self._time_up, Interrupted: self._interrupted,
            LatencyProgress: self._latency, PoolReady: self._pool,
        }

    def __call__(self, e: SearchEvent) -> None:
        self._handlers[type(e)](e)
        self._tick()

    def _started(self, e: StudyStarted) -> None:
        if e.role != "finalize" and self.progress:
            say(f"study {e.name!r}: {e.done} trial(s) done, {e.remaining} to run | data {e.data} | "
                f"device {e.device} | storage {e.storage}")
        self.close()
        self.done, self.target, self.started = min(e.done, e.target), e.target, time.monotonic()
        hide = not self.progress or e.role != "all"
        if self.budget is not None:  # the budget bounds the run: its bar counts seconds and shows the time left
            self.bar = _BudgetBar(total=round(self.budget), desc="time budget", position=0, disable=hide,
                                  mininterval=0.5 if sys.stderr.isatty() else 60.0,  # a log file: a line a minute
                                  dynamic_ncols=True, unit="s", postfix=self._trials(),
                                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{left}{postfix}]")
        else:
            self.bar = tqdm(total=e.target, initial=self.done, desc="trials", position=0, disable=hide,
                            dynamic_ncols=True, unit="trial")

    def _trials(self) -> str:
        return f"{self.done}/{self.target} trials"

    def _tick(self) -> None:
        """Move the budget bar to the seconds spent (it moves with time, not with trials)."""
        if self.budget is not None and self.bar is not None:
            spent = min(float(self.bar.total), time.monotonic() - self.started)
            if spent > self.bar.n:
                self.bar.update(spent - self.bar.n)

    def _finished(self, e: TrialFinished) -> None:
        self.steps.close()
        if e.counted and self.bar is not None:
            self.done += 1
            if self.budget is None:
                self.bar.update(1)
            else:
                self.bar.set_postfix_str(self._trials(), refresh=False)
        if self.progress:
            self._write(trial_line(e.trial, self.objectives))

    def _waiting(self, e: Waiting) -> None:
        if self.progress:
            say(f"waiting: {e.running} trial(s) still running in other workers "
                f"({e.done}/{e.target} done); a dead one will be retried here")

    def _taken_over(self, e: TrialTakenOver) -> None:
        say(f"a trial of this worker was taken over by another ({e.message})")

    def _pruning(self, e: PruningFrontMember) -> None:
        if self.progress:
            say(f"pruning front member trial {e.trial} ({e.settings})")

    def _prune_failed(self, e: PruneFailed) -> None:
        say(f"pruning trial {e.trial} failed: {e.reason}")

    def _linked(self, e: LinkedQueued) -> None:
        if self.progress:
            say(f"[trust] re-training the front and the references: {e.seeds} extra-seed and {e.long} "
                f"long run(s) queued, {e.waiting} to run")

    def _remeasured(self, e: Remeasured) -> None:
        if self.progress:
            load = "unknown" if e.other_load is None else f"{e.other_load:.0%}"
            say(f"re-measured {e.nets} front and reference nets together (lockstep) at {e.at}, other load "
                f"{load}" + (" - CONTENDED: speed ratios are suspect" if e.contended else ""))

    def _rung(self, e: RungDecided) -> None:
        if self.progress and e.promoted and not e.paused:  # a stop or a pause shows in the trial's own line
            ref = f" [{e.reference}]" if e.reference else ""
            self._write(f"trial {e.trial}{ref} rung {e.rung + 1}/{e.rungs} ({e.epochs} epoch{'s' * (e.epochs != 1)}): "
                        f"acc {e.accuracy:.3f}, {e.throughput:.0f} img/s -> climbs to rung {e.rung + 2}")

    def _time_up(self, e: TimeUp) -> None:
        mid = (f", {e.paused} candidate{'s' * (e.paused != 1)} paused mid-climb" if e.paused else "")
        again = "continue " + ("them" if e.paused > 1 else "it") + " and " if e.paused else ""
        self._write(f"time budget of {duration(e.timeout)} spent: {e.done} of {e.target} trials finished{mid}; run "
                    f"the same command again to {again}search for another {duration(e.timeout)} "
                    f"(--timeout SECONDS sets the budget)")

    def _interrupted(self, e: Interrupted) -> None:
        say("interrupted: completed trials are saved; run the same command again to resume")

    def _latency(self, e: LatencyProgress) -> None:
        """The latency table's layers being measured (once per machine and settings)."""
        if not self.progress or e.total == 0:  # the cached table covers the space: nothing to say
            return
        if self.layers is None:
            self._write(f"latency table: measuring {e.total} deploy layer(s) of the space once (kept in the user "
                        f"cache for the next study on this machine and settings)")
            self.layers = tqdm(total=e.total, desc="latency table", position=1, leave=False, unit="layer",
                               dynamic_ncols=True, disable=not sys.stderr.isatty())
        self.layers.update(e.done - self.layers.n)
        if e.done >= e.total:
            self.layers.close()
            self.layers = None

    def _pool(self, e: PoolReady) -> None:
        if not self.progress:
            return
        m = e.made
        if m is None:
            self._write(f"pre-screen: drawing candidates from the study's pool of {e.size} nets")
            return
        self._write(f"pre-screen: scored {m.scored} nets of the space by {e.proxy} (zero-cost) and predicted speed "
                    f"(latency table, {m.layers_measured} layer(s) measured now, {m.table_seconds:.0f} s); pool of "
                    f"{e.size} nets predicted faster than the slowest reference ({m.reference_throughput:.0f} "
                    f"img/s predicted), {m.front_size} on the non-dominated front ({m.prescreen_seconds:.1f} s)")

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            say(line)

    def close(self) -> None:
        self.steps.close()
        for bar in (self.layers, self.bar):
            if bar is not None:
                bar.close()
        self.bar = self.layers = None


def _given(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def pareto_table(pareto: Any) -> str:
    """Console table of the front beside the references, with each front member's claims.

    ``accuracy`` is the mean over seeds +- one standard error (n seeds);
    ``img/s`` the lockstep re-measurement when there is one (``!``: measured
    under load); ``claims`` the verdict against each reference with the
    accuracy gap +- its standard error and the speed ratio +- its spread
    (``long`` the same at the long budget).
    """
    if pareto is None or len(pareto) == 0:
        return "no completed trials yet"
    rows = []
    extra = [EXTRA_OBJECTIVES.get(n) for n in EXTRA_OBJECTIVES if EXTRA_OBJECTIVES.get(n).column in pareto]
    with_long = "long_claims" in pareto and any(isinstance(v, str) and v for v in pareto["long_claims"])
    for _, r in pareto.iterrows():
        se, n = r.get("accuracy_se"), r.get("n")
        acc = f"{float(r['accuracy']):.4f}" + (f" ± {float(se):.4f}" if _given(se) else "")
        if _given(n):
            acc += f" (n={int(n)})"
        lock = r.get("lockstep_throughput")
        thr = float(lock) if _given(lock) else float(r["throughput"])
        row = {
            "trial": int(r["number"]),
            "front": "*" if r["on_front"] else "",
            "reference": r["reference"] if isinstance(r["reference"], str) else "",
            "accuracy": acc,
            "img/s": f"{thr:.1f}" + ("!" if _given(r.get("contended")) and bool(r.get("contended")) else ""),
            "params_M": round(float(r["params_m"]), 3) if _given(r.get("params_m")) else "",
            "GMACs": round(float(r["gmacs"]), 3) if _given(r.get("gmacs")) else "",
            **{o.name: o.show(r[o.column]) if _given(r.get(o.column)) else "" for o in extra},
            "claims": r.get("claims", r.get("dominates", "")) if r["on_front"] else "",
        }
        if with_long:
            row["long-budget claims"] = r["long_claims"] if r["on_front"] else ""
        row["arch"] = r["arch"]
        rows.append(row)
    return format_table(rows)


def budget_text(cfg: StudyConfig, timeout: float | None = None) -> str:
    """One line on what each candidate's training costs (its rungs, or the one budget) and the time budget."""
    f, epochs = cfg.fidelity, cfg.train.epochs
    timeout = cfg.time_budget(timeout)
    if not f.multi:
        text = f"{epochs} epochs per candidate (single fidelity)"
    else:
        rungs = ", ".join(str(b) for b in f.budgets(epochs))
        text = (f"rungs of {rungs} epochs (reduction factor {f.reduction_factor}, {f.mode}): a candidate climbs "
                f"{PROMOTION_RULES.get(f.rule).climbs(RuleSettings(f.stop_sigmas))}; references "
                + (f"train only the full {epochs}" if f.mode == "retrain" else f"always reach {epochs}"))
    if timeout is None:
        return text
    return (f"{text}; time budget {duration(timeout)}: no trial starts after it"
            + (", and a candidate climbs only to a rung it can finish within it (else it pauses there for the "
               "next run)" if f.multi else ""))


def prescreen_text(cfg: StudyConfig) -> str:
    """What the pre-screen will do: draw from a scored pool, or blind from the whole space."""
    p = cfg.prescreen
    if not p.enabled:
        return "off: candidates drawn from the whole space (blind)"
    table = p.latency_table or "built here, kept in the user cache"
    return (f"on: {p.n} nets scored by {p.proxy} and predicted speed (latency table: {table}); candidates drawn "
            f"from a pool of at least {p.min_pool_size}")


def duration(seconds: float) -> str:
    """A time budget as people say it: minutes from two minutes up, else seconds."""
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def prediction_text(check: PredictionCheck, cfg: StudyConfig) -> str:
    """How the latency table's predictions compared with the measured speeds of the trained pool nets."""
    line = (f"latency table: predicted / measured speed of the {check.nets} trained pool net(s): median "
            f"{check.median:.2f} (from {check.low:.2f} to {check.high:.2f}); predictions only chose the pool, "
            f"every speed above is measured")
    if check.drifted:
        line += (f"\nthe table looks off for this machine now: measure it again with python -m repvgg_nas.bench "
                 f"--latency-table --remeasure --space {cfg.space.name} --batch-size {cfg.measure.batch_size} "
                 f"--resolution {cfg.measure.resolution} --runtime {cfg.measure.runtime}")
    return line


def plan_text(cfg: StudyConfig, *, timeout: float | None, n_trials: int | None, storage: str | None,
              reports_dir: str, workers: int) -> str:
    """``--dry-run``: the validated study and what a run would do, with nothing trained or written."""
    refs = ", ".join(cfg.references) or "none"
    return (
        f"study {cfg.name} ({cfg.path})\n  space {cfg.space.name} (hash {cfg.space.hash}, "
        f"{cfg.space.size()} architectures)\n  references: {refs}\n  data: {cfg.data.to_dict()}\n"
        f"  train: {cfg.train.to_dict()}\n  measure: {cfg.measure.to_dict()}\n"
        f"  objectives: {', '.join(f'{o.direction} {o.name}' for o in cfg.objectives.table)}\n"
        f"  prescreen: {prescreen_text(cfg)}\n"
        f"  budget: {budget_text(cfg, timeout)}\n"
        f"  sampler: {cfg.sampler.name}, seed {cfg.seed}, trials {n_trials or cfg.n_trials}\n"
        f"  storage: {redact_url(storage or default_storage(cfg, reports_dir))}\n"
        f"  workers: {workers}\n"
        "dry run: nothing was trained or written"
    )


def results_text(cfg: StudyConfig, result: SearchResult) -> str:
    """After a run: the front beside the references, the latency table's check, and where the files are."""
    paths = StudyPaths(result.out_dir)
    lines = [f"\nPareto front of {cfg.name!r} beside the references (* = on the front):", pareto_table(result.pareto)]
    check = prediction_check(result.trials)
    if check is not None:
        lines.append(prediction_text(check, cfg))
    lines.append(f"\nresults: {paths.trials_csv}, {paths.pareto_csv.name}, {paths.checkpoints.name}/")
    lines.append(f"report: {paths.report_html} (python -m repvgg_nas.report --study {cfg.name} to refresh)")
    return "\n".join(lines)


def workers_started_text(plan: WorkerPlan) -> str:
    """The ``--workers N`` parent's first line: how many, on which storage and GPUs, and the command."""
    pinned = f", one GPU each of {','.join(plan.gpus)}" if len(plan.gpus) > 1 else ""
    return f"starting {len(plan.commands)} workers on {plan.storage}{pinned}: {shlex.join(plan.shown_command)}"


def workers_ended_lines(result: WorkersResult) -> list[str]:
    """Ctrl-C's line, or one line per worker that did not exit cleanly (the others retry its trials)."""
    if result.interrupted:
        return ["interrupted: workers stopped; completed trials are saved; run the same command again to resume"]
    return [f"worker {i} {f'was killed by {signal.Signals(-c).name}' if c < 0 else f'exited with code {c}'}; "
            f"trials it was running are retried by the others or by the next run" for i, c in result.failed]
