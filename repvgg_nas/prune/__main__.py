"""``python -m repvgg_nas.prune``: prune a deploy model by a channel ratio or to a measured speed-up."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from typing import Any

from ..checkpoint import load_model, save_checkpoint
from ..cli import StepBar, format_table, run_cli
from ..data import DataConfig, load_data
from ..errors import CheckpointError, ConfigError
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths
from ..measure import MeasureSettings, ThroughputCache
from ..search import load_study_config
from ..train import TrainConfig
from . import FINETUNE_MODES, IMPORTANCES, PruneJob, PruneResult, PruneSettings, StageFigures, run_prune


def _source(args: argparse.Namespace) -> tuple[Path, DataConfig, MeasureSettings, TrainConfig, Path]:
    """Checkpoint path, data, measurement and training settings, and the default output."""
    if args.study is not None:
        cfg = load_study_config(args.study)
        paths = StudyPaths.of(cfg.name, args.reports_dir)
        path = paths.checkpoint(args.trial)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no checkpoint for trial {args.trial} of study {cfg.name!r}; checkpoints "
                f"are kept for Pareto-front members and references (see {paths.pareto_csv})"
            )
        return path, cfg.data, cfg.measure, cfg.train, paths.pruned_checkpoint(args.trial)
    path = Path(args.checkpoint)
    _, ckpt = load_model(path)
    data = DataConfig.from_dict(ckpt.meta.get("data") or {})
    return path, data, MeasureSettings(), TrainConfig(), path.with_name(f"{path.stem}_pruned.pt")


def _row(f: StageFigures, original: StageFigures) -> dict[str, Any]:
    """One table row of a stage's figures (rounded for people)."""
    return {
        "stage": f.stage,
        "accuracy": round(f.accuracy, 4),
        "img/s": round(f.images_per_s, 1),
        "latency_ms": round(f.latency_ms, 2),
        "params_M": float(f"{f.params / 1e6:.6g}"),
        "GMACs": float(f"{f.macs / 1e9:.6g}"),
        "widths": "-".join(map(str, f.spec.widths)),
        "speedup": round(round(f.images_per_s, 1) / round(original.images_per_s, 1), 3),
        "MACs_reduction": round(float(f"{original.macs / 1e9:.6g}") / float(f"{f.macs / 1e9:.6g}"), 3),
    }


def stage_rows(result: PruneResult) -> list[dict[str, Any]]:
    """The before / pruned / fine-tuned table of a pruning job."""
    return [_row(f, result.original) for f in result.stages]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repvgg_nas.prune",
        description="Prune the channels of a plain (deploy) RepVGG with torch-pruning, either by a "
        "channel ratio or until a measured speed-up is reached, then fine-tune briefly. The "
        "output checkpoint carries the pruned per-layer widths and loads with the core loader.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("checkpoint", nargs="?", help="a repvgg-nas checkpoint (train-form input is fused first)")
    src.add_argument("--study", help="take the checkpoint of a trial of this study (with --trial)")
    parser.add_argument("--trial", type=int, help="trial number in --study")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=float, help="share of channels to remove, in [0, 1)")
    target.add_argument("--target-speedup", type=float, help="prune until measured throughput is this many times higher")
    parser.add_argument("--importance", default="l2", help=f"channel criterion: {', '.join(IMPORTANCES)} (default l2)")
    parser.add_argument("--global", dest="global_pruning", action="store_true", help="rank channels across stages (layers with --per-layer) instead of cutting each by the same share")
    parser.add_argument("--round-to", type=int, help="keep widths multiples of this (e.g. 8)")
    parser.add_argument("--max-layer-ratio", type=float, default=0.9, help="most any layer may lose (default 0.9)")
    parser.add_argument("--finetune-epochs", type=int, default=PruneJob.finetune_epochs,
                        help=f"fine-tuning epochs after pruning (default {PruneJob.finetune_epochs}; 0 = none)")
    parser.add_argument("--finetune-mode", default=PruneJob.finetune_mode, choices=FINETUNE_MODES.list(),
                        help="plain: train the bare net (default, better in benchmarks/prune_cpu.md); bn: train with BN re-inserted, then fold it back")
    parser.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                        help="skip re-matching each kept channel's output statistics to the unpruned net's")
    parser.add_argument("--per-layer", dest="align_stages", action="store_false",
                        help="let every layer choose its own channels (default: remove the same channels "
                        "from all identity-linked layers of a stage, which keeps far more accuracy)")
    parser.add_argument("--distill", action="store_true",
                        help="fine-tune against the unpruned net's soft targets as well as the labels")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device for fine-tuning and measurement")
    parser.add_argument("--batch-size", type=int, help="measurement batch size")
    parser.add_argument("--resolution", type=int, help="measurement resolution")
    parser.add_argument("--reports-dir", default=DEFAULT_REPORTS_DIR,
                        help=f"where studies live (default {DEFAULT_REPORTS_DIR}/)")
    parser.add_argument("--out", type=Path, help="output checkpoint (default: next to the input, *_pruned.pt)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.study is not None and args.trial is None:
        parser.error("--study needs --trial N")
    if args.trial is not None and args.study is None:
        parser.error("--trial needs --study NAME")

    job = PruneJob(
        ratio=args.ratio,
        target_speedup=args.target_speedup,
        settings=PruneSettings(
            importance=args.importance, global_pruning=args.global_pruning,
            round_to=args.round_to, max_layer_ratio=args.max_layer_ratio, recalibrate=args.recalibrate,
            align_stages=args.align_stages,
        ),
        finetune_epochs=args.finetune_epochs,
        finetune_mode=args.finetune_mode,
        distill=args.distill,
    )
    path, data_cfg, measure, train_cfg, default_out = _source(args)
    overrides = {k: v for k, v in (("device", args.device), ("batch_size", args.batch_size),
                                   ("resolution", args.resolution)) if v is not None}
    try:
        measure = dataclasses.replace(measure, **overrides).resolved()
    except TypeError as e:
        raise ConfigError(str(e)) from None
    model, ckpt = load_model(path)
    data = load_data(data_cfg)
    if data.num_classes != ckpt.spec.num_classes:
        raise ConfigError(
            f"{path} predicts {ckpt.spec.num_classes} classes but its data ({data_cfg.name}) has "
            f"{data.num_classes}; prune it with --study/--trial or a checkpoint made by the search"
        )
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.no_progress else (lambda s: None)
    log(f"pruning {path} ({ckpt.spec.summary()}) on {measure.device}")
    out = run_prune(
        model, job, data, measure, train_cfg, measure.device, ThroughputCache(),
        progress=StepBar(enabled=not args.no_progress and sys.stderr.isatty()), log=log,
    )
    dest = args.out or default_out
    table = stage_rows(out)
    save_checkpoint(dest, out.model, meta={
        **ckpt.meta, "parent_checkpoint": str(path), "prune": job.to_dict(),
        "accuracy": table[-1]["accuracy"], "throughput": table[-1]["img/s"],
        "data": data_cfg.to_dict(),
    })
    print(format_table(table))
    if out.note:
        print(out.note)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
