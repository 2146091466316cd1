"""The main job: ``python -m repvgg_nas.search --study a_family``.

One trial = sample a spec -> train the train-form net briefly on proxy data ->
fuse -> record the fused/unfused error -> evaluate the deploy net -> measure
its throughput (cached by spec) -> report (accuracy, images/s) to Optuna with
the figures as user attrs. The paper's reference configs are enqueued first
and trained with the same budget, so the front is compared like with like.

This module is the CLI only: it parses, calls :func:`run_search`, and draws
the events the search reports (lines, the ``trials`` bar, the per-trial
training bar) and the Pareto table.
"""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from .. import lifecycle
from ..attrs import (
    ARCH, DUPLICATE_OF, FAIL_REASON, MEASURE_CONTENDED, PARAMS, PRUNE_REASON, REFERENCE, REPEAT_OF, TRAIN_EPOCHS,
    TRAIN_SEED,
)
from ..cli import ArgumentParser, StepBar, format_table, run_cli
from ..config import Override
from ..files import ensure_dir
from ..errors import ConfigError
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths
from ..storage import DEFAULT_HEARTBEAT_INTERVAL, redact_url, storage_kind, study_heartbeat
from ..measure.latency import LatencyProgress
from ..train import TrainStep
from .connect import connect, default_storage, recover_interrupted
from .events import (
    Interrupted, LinkedQueued, PoolReady, PruneFailed, PruningFrontMember, Remeasured, RungDecided, SearchEvent,
    StudyStarted,
    TimeUp, TrialFinished, TrialTakenOver, Waiting,
)
from .launch import launch_workers, visible_gpus, worker_argv, worker_env
from .run import run_search
from ..objectives import BASE_OBJECTIVES, EXTRA_OBJECTIVES, Objective
from ..study.promotion import PROMOTION_RULES, RuleSettings
from ..study import StudyConfig, load_study_config
from ..stats import PredictionCheck, prediction_check

__all__ = ["main", "pareto_table", "trial_line"]

TrialState = optuna.trial.TrialState


def _say(text: str) -> None:
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
        return f"trial {t.number}{ref}: {lifecycle.short_reason(t)} | {ua.get(ARCH, '')}"  # left to the next run
    return f"trial {t.number}{ref}: {t.state.name.lower()} ({reason}) | {ua.get(ARCH, '')}"


class Console:
    """Draws :func:`run_search`'s events on stderr.

    With ``progress``: the study line, a progress bar (single process only:
    of the time budget when the run has one, its ETA the budget's end, else
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
            _say(f"study {e.name!r}: {e.done} trial(s) done, {e.remaining} to run | data {e.data} | "
                 f"device {e.device} | storage {e.storage}")
        from tqdm.auto import tqdm

        self.close()
        self.done, self.target, self.started = min(e.done, e.target), e.target, time.monotonic()
        hide = not self.progress or e.role != "all"
        if self.budget is not None:  # the budget bounds the run: its bar counts seconds, its ETA is the budget's end
            self.bar = tqdm(total=round(self.budget), desc="time budget", position=0, disable=hide,
                            mininterval=0.5 if sys.stderr.isatty() else 60.0,  # a log file gets a line a minute
                            smoothing=0,  # the mean rate (one second a second): its ETA is the budget's end
                            dynamic_ncols=True, unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s "
                            "[{elapsed}<{remaining}{postfix}]")
            self.bar.set_postfix_str(f"{self.done}/{self.target} trials", refresh=False)
        else:
            self.bar = tqdm(total=e.target, initial=self.done, desc="trials", position=0, disable=hide,
                            dynamic_ncols=True, unit="trial")

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
                self.bar.set_postfix_str(f"{self.done}/{self.target} trials", refresh=False)
        if self.progress:
            self._write(trial_line(e.trial, self.objectives))

    def _waiting(self, e: Waiting) -> None:
        if self.progress:
            _say(f"waiting: {e.running} trial(s) still running in other workers "
                 f"({e.done}/{e.target} done); a dead one will be retried here")

    def _taken_over(self, e: TrialTakenOver) -> None:
        _say(f"a trial of this worker was taken over by another ({e.message})")

    def _pruning(self, e: PruningFrontMember) -> None:
        if self.progress:
            _say(f"pruning front member trial {e.trial} ({e.settings})")

    def _prune_failed(self, e: PruneFailed) -> None:
        _say(f"pruning trial {e.trial} failed: {e.reason}")

    def _linked(self, e: LinkedQueued) -> None:
        if self.progress:
            _say(f"[trust] re-training the front and the references: {e.seeds} extra-seed and {e.long} "
                 f"long run(s) queued, {e.waiting} to run")

    def _remeasured(self, e: Remeasured) -> None:
        if self.progress:
            load = "unknown" if e.other_load is None else f"{e.other_load:.0%}"
            _say(f"re-measured {e.nets} front and reference nets together (lockstep) at {e.at}, other load "
                 f"{load}" + (" - CONTENDED: speed ratios are suspect" if e.contended else ""))

    def _rung(self, e: RungDecided) -> None:
        if self.progress and e.promoted and not e.paused:  # a stop or a pause shows in the trial's own line
            ref = f" [{e.reference}]" if e.reference else ""
            self._write(f"trial {e.trial}{ref} rung {e.rung + 1}/{e.rungs} ({e.epochs} epoch{'s' * (e.epochs != 1)}): "
                        f"acc {e.accuracy:.3f}, {e.throughput:.0f} img/s -> climbs to rung {e.rung + 2}")

    def _time_up(self, e: TimeUp) -> None:
        mid = (f", {e.paused} candidate{'s' * (e.paused != 1)} paused mid-climb" if e.paused else "")
        again = "continue " + ("them" if e.paused > 1 else "it") + " and " if e.paused else ""
        self._write(f"time budget of {_duration(e.timeout)} spent: {e.done} of {e.target} trials finished{mid}; run "
                    f"the same command again to {again}search for another {_duration(e.timeout)} "
                    f"(--timeout SECONDS sets the budget)")

    def _interrupted(self, e: Interrupted) -> None:
        _say("interrupted: completed trials are saved; run the same command again to resume")

    def _latency(self, e: LatencyProgress) -> None:
        """The latency table's layers being measured (once per machine and settings)."""
        if not self.progress or e.total == 0:  # the cached table covers the space: nothing to say
            return
        if self.layers is None:
            from tqdm.auto import tqdm

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
            _say(line)

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
    return (f"{text}; time budget {_duration(timeout)}: no trial starts after it"
            + (", and a candidate climbs only to a rung it can finish within it (else it pauses there for the "
               "next run)" if f.multi else ""))


def _prescreen_text(cfg: StudyConfig) -> str:
    p = cfg.prescreen
    if not p.enabled:
        return "off: candidates drawn from the whole space (blind)"
    table = p.latency_table or "built here, kept in the user cache"
    return (f"on: {p.n} nets scored by {p.proxy} and predicted speed (latency table: {table}); candidates drawn "
            f"from a pool of at least {p.pool_size}")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m repvgg_nas.search",
        description="Search RepVGG architectures for the accuracy/throughput Pareto front on "
        "this machine: each trial trains a sampled net briefly on proxy data, fuses it, "
        "checks the fused net is the same function, evaluates it and measures its real "
        "throughput. Re-running the same command resumes the study.",
    )
    parser.add_argument("--study", required=True, help="study name in studies/ (a_family, b_family, quick) or a .toml path")
    parser.add_argument("--n-trials", type=int, help="total finished trials wanted (default: the study's n_trials)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="time budget of this run (default: the "
                        "study's timeout; 0: none): no trial starts after it, and a candidate whose next rung would "
                        "end after it pauses; the same command again continues it and searches for another budget ([trust] re-trainings "
                        "and [prune], which follow n_trials, are not bounded by it)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train and measure on this device (sets [measure].device)")
    parser.add_argument("--storage", help="Optuna storage URL: sqlite:///PATH, postgresql://USER@HOST/DB or "
                        "journal:PATH; several processes may share one (default sqlite:///reports/<study>/study.db)")
    parser.add_argument("--workers", type=int, default=1, help="start N local worker processes on one shared --storage "
                        "(journal:PATH or postgresql://...); with several GPUs each worker gets one (default 1)")
    parser.add_argument("--heartbeat-interval", type=int, default=DEFAULT_HEARTBEAT_INTERVAL,
                        help=f"RDB storage: seconds between a running trial's heartbeats (default {DEFAULT_HEARTBEAT_INTERVAL})")
    parser.add_argument("--grace-period", type=int, help="RDB storage: seconds without a heartbeat before a trial's "
                        "worker counts as dead and the trial is retried (default twice the interval)")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its children
    data = parser.add_argument_group("data (each flag sets a key of the study's [data] table before it is validated)")
    data.add_argument("--dataset", metavar="NAME", help="dataset: synthetic, cifar10, cifar100 or imagefolder (sets [data].name)")
    data.add_argument("--data", metavar="PATH", help="local dataset folder (sets [data].root; never downloads): "
                      "an ImageFolder tree (one sub-folder per class) or torchvision's CIFAR folder")
    data.add_argument("--data-resolution", type=int, metavar="N", help="TRAINING resolution: images are resized "
                      "to NxN for training and accuracy (sets [data].resolution)")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, help="random horizontal flips in "
                      "training (sets [data].hflip; default on for real data; --no-hflip for digits, text, signs)")
    parser.add_argument("--measure-resolution", type=int, metavar="N", help="DEPLOYMENT resolution: throughput, "
                        "params and MACs at NxN input (sets [measure].resolution)")
    parser.add_argument("--rungs", type=int, metavar="R", help="training budget per candidate: each trains "
                        "train.epochs/reduction_factor^(R-1) epochs first and climbs toward the full budget only while "
                        "no result at its rung dominates it (sets [fidelity].rungs; 1: every candidate trains fully)")
    screen = parser.add_argument_group("pre-screen (the [prescreen] table)")
    screen.add_argument("--prescreen", type=_on_off, metavar="on|off", help="on: draw candidates only from the pool "
                        "a zero-cost proxy and the per-layer latency table pick out of the whole space (made once per "
                        "study, before any training); off: draw them from the whole space, blind (sets "
                        "[prescreen].enabled)")
    screen.add_argument("--latency-table", metavar="FILE", help="predict speeds with this latency table file, "
                        "built on the deployment machine (python -m repvgg_nas.bench --latency-table "
                        "--latency-table-file FILE), even when it was measured on another device (sets "
                        "[prescreen].latency_table; default: build it here and keep it in the user cache)")
    parser.add_argument("--retrain-references", action="store_true", help="train the paper references even when "
                        "an earlier study trained them with the same spec, data, budget and seed (the cache is "
                        "then written anew)")
    parser.add_argument("--seed", type=int, help="override the study seed (sets seed)")
    parser.add_argument("--reports-dir", default=DEFAULT_REPORTS_DIR, help="where results go (default: reports/)")
    parser.add_argument("--dry-run", action="store_true", help="validate the study and show the plan; write nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-trial lines")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.n_trials is not None and args.n_trials < 1:
        parser.error(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and not (args.timeout >= 0 and math.isfinite(args.timeout)):
        parser.error(f"--timeout must be a number of seconds >= 0 (0: no time budget), got {args.timeout}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.heartbeat_interval < 1:
        raise ConfigError(f"--heartbeat-interval must be >= 1 second, got {args.heartbeat_interval}")
    if args.grace_period is not None and args.grace_period <= args.heartbeat_interval:
        raise ConfigError(f"--grace-period ({args.grace_period}s) must be longer than --heartbeat-interval "
                          f"({args.heartbeat_interval}s), or live workers' trials would be retried")


# (flag, attribute, dotted study key): command-line settings applied to the raw study table.
OVERRIDES = (
    ("--dataset", "dataset", "data.name"),
    ("--data", "data", "data.root"),
    ("--data-resolution", "data_resolution", "data.resolution"),
    ("--hflip", "hflip", "data.hflip"),
    ("--measure-resolution", "measure_resolution", "measure.resolution"),
    ("--device", "device", "measure.device"),
    ("--seed", "seed", "seed"),
    ("--rungs", "rungs", "fidelity.rungs"),
    ("--prescreen", "prescreen", "prescreen.enabled"),
    ("--latency-table", "latency_table", "prescreen.latency_table"),
)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"must be on or off, got {text!r}")
    return text == "on"


def _study(args: argparse.Namespace) -> StudyConfig:
    """The study config with the command line's overrides applied before validation."""
    overrides = [Override(key, getattr(args, attr), flag) for flag, attr, key in OVERRIDES
                 if getattr(args, attr) is not None]
    try:
        cfg = load_study_config(args.study, overrides)
    except ConfigError as e:
        if args.data is not None and args.dataset is None and "not used by the synthetic dataset" in str(e):
            raise ConfigError(f"{e}: the study uses the embedded synthetic dataset; add --dataset imagefolder "
                              f"(or cifar10, cifar100) to train on {args.data!r}") from None
        raise
    ensure_dir(args.reports_dir, "--reports-dir", create=False)
    if args.workers > 1 and (args.storage is None or storage_kind(args.storage) == "sqlite"):
        raise ConfigError(
            f"--workers {args.workers} needs a storage several processes can write at once: "
            f"--storage journal:{StudyPaths.of(cfg.name, args.reports_dir).journal.as_posix()} (one machine or a "
            f"shared filesystem) or --storage postgresql://USER@HOST/DB (any number of machines); "
            f"SQLite takes one writer at a time"
        )
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _check(parser, args)
    cfg = _study(args)
    if args.dry_run:
        refs = ", ".join(cfg.references) or "none"
        print(
            f"study {cfg.name} ({cfg.path})\n  space {cfg.space.name} (hash {cfg.space.hash}, "
            f"{cfg.space.size()} architectures)\n  references: {refs}\n  data: {cfg.data.to_dict()}\n"
            f"  train: {cfg.train.to_dict()}\n  measure: {cfg.measure.to_dict()}\n"
            f"  objectives: {', '.join(f'{o.direction} {o.name}' for o in cfg.objectives.table)}\n"
            f"  prescreen: {_prescreen_text(cfg)}\n"
            f"  budget: {budget_text(cfg, args.timeout)}\n"
            f"  sampler: {cfg.sampler.name}, seed {cfg.seed}, trials {args.n_trials or cfg.n_trials}\n"
            f"  storage: {redact_url(args.storage or default_storage(cfg, args.reports_dir))}\n"
            f"  workers: {args.workers}\n"
            "dry run: nothing was trained or written"
        )
        return 0
    console = Console(progress=not args.no_progress, objectives=cfg.objectives.table,
                      budget=cfg.time_budget(args.timeout))
    common = dict(
        storage=args.storage, n_trials=args.n_trials, timeout=args.timeout, device=args.device,
        reports_dir=args.reports_dir, progress=not args.no_progress,
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period, on_event=console,
        retrain_references=args.retrain_references,
    )
    try:
        if args.worker_index is not None:
            return 130 if run_search(cfg, role="worker", **common).interrupted else 0
        failed = 0
        if args.workers > 1:
            failed = _run_workers(cfg, args, argv)
            if failed == 130:
                return 130
        result = run_search(cfg, role="finalize" if args.workers > 1 else "all", **common)
    finally:
        console.close()
    paths = StudyPaths(result.out_dir)
    print(f"\nPareto front of {cfg.name!r} beside the references (* = on the front):")
    print(pareto_table(result.pareto))
    check = prediction_check(result.trials)
    if check is not None:
        print(prediction_text(check, cfg))
    print(f"\nresults: {paths.trials_csv}, {paths.pareto_csv.name}, {paths.checkpoints.name}/")
    print(f"report: {paths.report_html} (python -m repvgg_nas.report --study {cfg.name} to refresh)")
    if failed:
        return failed
    return 130 if result.interrupted else 0


# A table whose predictions are this far off the measured speeds (either way) is worth measuring again.
PREDICTION_DRIFT = 0.25


def prediction_text(check: PredictionCheck, cfg: StudyConfig) -> str:
    """How the latency table's predictions compared with the measured speeds of the trained pool nets."""
    line = (f"latency table: predicted / measured speed of the {check.nets} trained pool net(s): median "
            f"{check.median:.2f} (from {check.low:.2f} to {check.high:.2f}); predictions only chose the pool, "
            f"every speed above is measured")
    if abs(check.median - 1) > PREDICTION_DRIFT:
        line += (f"\nthe table looks off for this machine now: measure it again with python -m repvgg_nas.bench "
                 f"--latency-table --remeasure --space {cfg.space.name} --batch-size {cfg.measure.batch_size} "
                 f"--resolution {cfg.measure.resolution} --runtime {cfg.measure.runtime}")
    return line


def _run_workers(cfg: StudyConfig, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--workers N``: prepare the study once, run N worker processes, return 0, 1 (a worker failed) or 130.

    The parent creates the study (so the references are queued exactly once)
    and re-queues trials interrupted by an earlier Ctrl-C before any worker
    starts; the workers then only run trials. Each worker gets this command's
    own arguments, less ``--workers N``, plus ``--worker-index i``. The caller
    writes the outputs.
    """
    study, shown = connect(cfg, args.storage, args.reports_dir, heartbeat_interval=args.heartbeat_interval,
                           grace_period=args.grace_period)
    recover_interrupted(study, running=study_heartbeat(study) is None)
    base = [sys.executable, "-m", "repvgg_nas.search"]
    commands = [[*base, *worker_argv(argv, i)] for i in range(args.workers)]
    gpus = visible_gpus() if (args.device or cfg.measure.device) != "cpu" else []
    envs = [worker_env(i, gpus) for i in range(args.workers)]
    pinned = f", one GPU each of {','.join(gpus)}" if len(gpus) > 1 else ""
    shown_cmd = _hide(commands[0][:-2], args.storage, shown)  # no password on screen
    _say(f"starting {args.workers} workers on {shown}{pinned}: {shlex.join(shown_cmd)}")
    try:
        codes = launch_workers(commands, envs, out=sys.stderr)
    except KeyboardInterrupt:
        _say("interrupted: workers stopped; completed trials are saved; run the same command again to resume")
        return 130
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, c in bad:
        how = f"was killed by {signal.Signals(-c).name}" if c < 0 else f"exited with code {c}"
        _say(f"worker {i} {how}; trials it was running are retried by the others or by the next run")
    if bad and all(c == 130 for _, c in bad):
        return 130
    return 1 if bad else 0


def _hide(command: Sequence[str], url: str, shown: str) -> list[str]:
    """``command`` with the storage URL (``--storage URL`` or ``--storage=URL``) shown password-free."""
    out = []
    for a in command:
        flag, eq, value = a.partition("=")
        out.append(shown if a == url else f"{flag}={shown}" if eq and value == url and flag.startswith("--") else a)
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
