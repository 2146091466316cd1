"""``python -m repvgg_nas.prune``: prune a deploy model by a channel ratio or to a measured speed-up."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import load_model, save_checkpoint
from ..cli import format_table, run_cli
from ..data import DataConfig, load_data
from ..errors import CheckpointError, ConfigError
from ..measure import MeasureSettings, ThroughputCache
from ..train import TrainConfig
from . import FINETUNE_MODES, IMPORTANCES, PruneJob, PruneSettings, run_prune

def _source(args: argparse.Namespace) -> tuple[Path, DataConfig, MeasureSettings, TrainConfig, Path]:
    """Checkpoint path, data, measurement and training settings, and the default output."""
    if args.study is not None:
        from ..study import load_study_config

        cfg = load_study_config(args.study)
        ckpt_dir = Path(args.reports_dir) / cfg.name / "checkpoints"
        path = ckpt_dir / f"trial_{args.trial:04d}.pt"
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no checkpoint for trial {args.trial} of study {cfg.name!r}; checkpoints "
                f"are kept for Pareto-front members and references (see reports/{cfg.name}/pareto.csv)"
            )
        return path, cfg.data, cfg.measure, cfg.train, ckpt_dir / f"pruned_trial_{args.trial:04d}.pt"
    path = Path(args.checkpoint)
    _, ckpt = load_model(path)
    data = DataConfig.from_dict(ckpt.meta.get("data") or {})
    return path, data, MeasureSettings(), TrainConfig(), path.with_name(f"{path.stem}_pruned.pt")


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
    parser.add_argument("--reports-dir", default="reports", help="where studies live (default reports/)")
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
        progress=not args.no_progress and sys.stderr.isatty(), log=log,
    )
    dest = args.out or default_out
    save_checkpoint(dest, out.model, meta={
        **ckpt.meta, "parent_checkpoint": str(path), "prune": job.to_dict(),
        "accuracy": out.rows[-1]["accuracy"], "throughput": out.rows[-1]["img/s"],
        "data": data_cfg.to_dict(),
    })
    print(format_table(out.rows))
    if out.note:
        print(out.note)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
