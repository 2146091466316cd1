"""The main job, ``python -m repvgg_nas.search --study a_family``: parse, apply the flags to the study table, register the
report page (the search cannot import the report), call :func:`run_search` and print what :mod:`.console` words."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import optuna

from ..cli import ArgumentParser, on_off, run_cli
from ..config import Override
from ..errors import ConfigError
from ..files import ensure_dir
from ..layout import DEFAULT_REPORTS_DIR
from ..report import register_report
from ..storage import DEFAULT_HEARTBEAT_INTERVAL as BEAT
from . import StudyConfig, check_workers, load_study_config, plan_workers, run_search, run_workers
from .console import Console, plan_text, results_text, say, workers_ended_lines, workers_started_text

__all__ = ["main", "OVERRIDES"]

# (flag, attribute, dotted study key): command-line settings applied to the raw study table.
OVERRIDES = (
    ("--dataset", "dataset", "data.name"), ("--data", "data", "data.root"), ("--hflip", "hflip", "data.hflip"),
    ("--data-resolution", "data_resolution", "data.resolution"), ("--device", "device", "measure.device"),
    ("--measure-resolution", "measure_resolution", "measure.resolution"), ("--seed", "seed", "seed"),
    ("--rungs", "rungs", "fidelity.rungs"), ("--prescreen", "prescreen", "prescreen.enabled"),
    ("--latency-table", "latency_table", "prescreen.latency_table"),
)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m repvgg_nas.search", description="Search RepVGG architectures for the accuracy/"
                       "throughput Pareto front on this machine: each trial trains a sampled net briefly on proxy data, fuses it, "
                       "checks the fused net is the same function, evaluates it and measures its real throughput. Re-running the "
                       "same command resumes the study.")
    p.add_argument("--study", required=True, help="study name in studies/ (a_family, b_family, quick) or a .toml path")
    p.add_argument("--n-trials", type=int, help="total finished trials wanted (default: the study's n_trials)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="time budget of this run (default: the study's timeout; 0: "
                   "none): no trial starts after it, and a candidate whose next rung would end after it pauses; the same command "
                   "again continues it and searches for another budget ([trust] re-trainings and [prune], which follow "
                   "n_trials, are not bounded by it)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train and measure on this device (sets [measure].device)")
    p.add_argument("--storage", help="Optuna storage URL: sqlite:///PATH, postgresql://USER@HOST/DB or journal:PATH; several "
                   "processes may share one (default sqlite:///reports/<study>/study.db)")
    p.add_argument("--workers", type=int, default=1, help="start N local worker processes on one shared --storage "
                   "(journal:PATH or postgresql://...); with several GPUs each worker gets one (default 1)")
    p.add_argument("--heartbeat-interval", type=int, default=BEAT, help=f"RDB storage: seconds between a running trial's "
                   f"heartbeats (default {BEAT})")
    p.add_argument("--grace-period", type=int, help="RDB storage: seconds without a heartbeat before a trial's worker counts "
                   "as dead and the trial is retried (default twice the interval)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its children
    data = p.add_argument_group("data (each flag sets a key of the study's [data] table before it is validated)")
    data.add_argument("--dataset", metavar="NAME", help="dataset: synthetic, cifar10, cifar100 or imagefolder (sets [data].name)")
    data.add_argument("--data", metavar="PATH", help="local dataset folder (sets [data].root; never downloads): an ImageFolder "
                      "tree (one sub-folder per class) or torchvision's CIFAR folder")
    data.add_argument("--data-resolution", type=int, metavar="N", help="TRAINING resolution: images are resized to NxN for "
                      "training and accuracy (sets [data].resolution)")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, help="random horizontal flips in training (sets "
                      "[data].hflip; default on for real data; --no-hflip for digits, text, signs)")
    p.add_argument("--measure-resolution", type=int, metavar="N", help="DEPLOYMENT resolution: throughput, params and MACs at "
                   "NxN input (sets [measure].resolution)")
    p.add_argument("--rungs", type=int, metavar="R", help="training budget per candidate: each trains train.epochs/"
                   "reduction_factor^(R-1) epochs first and climbs toward the full budget only while no result at its rung "
                   "dominates it (sets [fidelity].rungs; 1: every candidate trains fully)")
    screen = p.add_argument_group("pre-screen (the [prescreen] table)")
    screen.add_argument("--prescreen", type=on_off, metavar="on|off", help="on: draw candidates only from the pool a zero-cost "
                        "proxy and the per-layer latency table pick out of the whole space (made once per study, before any "
                        "training); off: draw them from the whole space, blind (sets [prescreen].enabled)")
    screen.add_argument("--latency-table", metavar="FILE", help="predict speeds with this latency table file, built on the "
                        "deployment machine (python -m repvgg_nas.bench --latency-table --latency-table-file FILE), even when "
                        "it was measured on another device (sets [prescreen].latency_table; default: build it here and keep it "
                        "in the user cache)")
    p.add_argument("--retrain-references", action="store_true", help="train the paper references even when an earlier study "
                   "trained them with the same spec, data, budget and seed (the cache is then written anew)")
    p.add_argument("--seed", type=int, help="override the study seed (sets seed)")
    p.add_argument("--reports-dir", default=DEFAULT_REPORTS_DIR, help="where results go (default: reports/)")
    p.add_argument("--dry-run", action="store_true", help="validate the study and show the plan; write nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-trial lines")
    return p


def _study(parser: argparse.ArgumentParser, args: argparse.Namespace) -> StudyConfig:
    """The study config with the command line's overrides applied before validation, once the flags' values pass."""
    if args.n_trials is not None and args.n_trials < 1:
        parser.error(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and not (args.timeout >= 0 and math.isfinite(args.timeout)):
        parser.error(f"--timeout must be a number of seconds >= 0 (0: no time budget), got {args.timeout}")
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
    check_workers(cfg, args.workers, args.storage, args.reports_dir, heartbeat_interval=args.heartbeat_interval,
                  grace_period=args.grace_period)
    return cfg


def _workers(cfg: StudyConfig, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--workers N``: the study prepared once, N workers run; 0, 1 (a worker failed) or 130 (interrupted)."""
    plan = plan_workers(cfg, argv, args.workers, args.storage, args.reports_dir, args.device,
                        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period)
    say(workers_started_text(plan))
    result = run_workers(plan, out=sys.stderr)
    for line in workers_ended_lines(result):
        say(line)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = _study(parser, args)
    if args.dry_run:
        print(plan_text(cfg, timeout=args.timeout, n_trials=args.n_trials, storage=args.storage,
                        reports_dir=args.reports_dir, workers=args.workers))
        return 0
    register_report()  # every run refreshes reports/<study>/index.html
    console = Console(progress=not args.no_progress, objectives=cfg.objectives.table,
                      budget=cfg.time_budget(args.timeout))
    run = dict(storage=args.storage, n_trials=args.n_trials, timeout=args.timeout, device=args.device,
               reports_dir=args.reports_dir, progress=not args.no_progress, heartbeat_interval=args.heartbeat_interval,
               grace_period=args.grace_period, on_event=console, retrain_references=args.retrain_references)
    try:
        if args.worker_index is not None:
            return 130 if run_search(cfg, role="worker", **run).interrupted else 0
        failed = _workers(cfg, args, argv) if args.workers > 1 else 0
        if failed == 130:
            return 130
        result = run_search(cfg, role="finalize" if args.workers > 1 else "all", **run)
    finally:
        console.close()
    print(results_text(cfg, result))
    return failed or (130 if result.interrupted else 0)


if __name__ == "__main__":
    sys.exit(run_cli(main))
