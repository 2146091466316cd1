"""``python -m repvgg_nas.prune``: prune a deploy model by a channel ratio or to a measured speed-up.

The model is a checkpoint of this toolkit (a search's, or ``convert``'s from
official/timm weights) or a trial of a study. Data is named the way a study
names it (``--dataset NAME --data PATH``, at ``--data-resolution``); without
data the net is still pruned, but not recalibrated, fine-tuned or evaluated.
``--new-head`` re-initializes the classifier for the data's classes (transfer
to a new task) and fine-tunes it with the net.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint, load_model, save_checkpoint
from ..cli import ArgumentParser, StepBar, check_output_file, format_table, run_cli
from ..config import Override, Table, apply_overrides, blame_override, build_table, find_study, load_toml
from ..data import DATASETS, DataConfig, load_data
from ..errors import CheckpointError, ConfigError
from ..export import export_checked_onnx
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths, pruned_path
from ..measure import MeasureSettings, ThroughputCache
from ..model import RepVGG
from ..train import TrainConfig
from . import FINETUNE_MODES, IMPORTANCES, PruneJob, PruneResult, PruneSettings, StageFigures, run_prune
from .settings import NEEDS_GRADIENTS

__all__ = ["main", "stage_rows"]

# (flag, attribute, dotted key): data and measurement flags, applied to the raw tables before validation.
DATA_FLAGS = (
    ("--dataset", "dataset", "data.name"),
    ("--data", "data", "data.root"),
    ("--data-resolution", "data_resolution", "data.resolution"),
    ("--hflip", "hflip", "data.hflip"),
)
MEASURE_FLAGS = (
    ("--device", "device", "measure.device"),
    ("--batch-size", "batch_size", "measure.batch_size"),
    ("--measure-resolution", "measure_resolution", "measure.resolution"),
    ("--max-seconds", "max_seconds", "measure.max_seconds"),
)


@dataclass(frozen=True)
class Source:
    """What a pruning run starts from: the model, its checkpoint, data and settings, the default output."""

    path: Path
    model: RepVGG
    ckpt: Checkpoint
    data: DataConfig | None
    measure: MeasureSettings
    train: TrainConfig
    default_out: Path


def _overrides(args: argparse.Namespace, flags: tuple[tuple[str, str, str], ...]) -> list[Override]:
    return [Override(key, getattr(args, attr), flag) for flag, attr, key in flags if getattr(args, attr) is not None]


@dataclass(frozen=True)
class StudyTables:
    """The parts of a study file a pruning run uses: its name (the folder of its checkpoints) and its data,
    measurement and training tables."""

    name: str
    data: DataConfig
    measure: MeasureSettings
    train: TrainConfig


def study_tables(name_or_path: str, overrides: list[Override]) -> StudyTables:
    """Read and validate only the ``[data]``, ``[measure]`` and ``[train]`` tables of a study file, with the
    flags' ``overrides`` applied first (an error they cause names the flag).

    Not :func:`repvgg_nas.study.load_study_config`: the study package imports
    ``prune`` (a study's ``[prune]`` table), so ``prune`` reads the study file
    itself, through the same lower-level readers and validators.
    """
    path = find_study(name_or_path)
    source = f"{path}: "
    try:
        t = Table(apply_overrides(load_toml(path), overrides), "", source)
        return StudyTables(
            name=path.stem,
            data=build_table(source, "data", DataConfig.from_dict, t.get("data", dict, {})),
            measure=build_table(source, "measure", MeasureSettings.from_dict, t.get("measure", dict, {})),
            train=build_table(source, "train", TrainConfig.from_dict, t.get("train", dict, {})),
        )
    except ConfigError as e:
        raise blame_override(e, overrides) from None


def _source(args: argparse.Namespace) -> Source:
    """The checkpoint, its data (the recorded one, or the flags'), measurement and training settings."""
    data_ovr, measure_ovr = _overrides(args, DATA_FLAGS), _overrides(args, MEASURE_FLAGS)
    if args.study is not None:
        study = study_tables(args.study, data_ovr + measure_ovr)
        paths = StudyPaths.of(study.name, args.reports_dir)
        path = paths.checkpoint(args.trial)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no checkpoint for trial {args.trial} of study {study.name!r}; checkpoints "
                f"are kept for Pareto-front members and references (see {paths.pareto_csv})"
            )
        model, ckpt = load_model(path)
        return Source(path, model, ckpt, study.data, study.measure, study.train, paths.pruned_checkpoint(args.trial))
    path = Path(args.checkpoint)
    model, ckpt = load_model(path)
    recorded = ckpt.meta.get("data")
    base = None if args.dataset is not None else recorded  # --dataset starts afresh
    if base is None and args.dataset is None and data_ovr:
        raise ConfigError(
            f"{data_ovr[0].flag} {data_ovr[0].value!r}: {path} records no dataset; name it with "
            f"--dataset ({', '.join(n for n in DATASETS if n != 'synthetic')} or synthetic)"
        )
    raw = apply_overrides({"data": base if isinstance(base, dict) else {}, "measure": {}}, data_ovr + measure_ovr)
    try:
        data = DataConfig.from_dict(raw["data"]) if (base is not None or data_ovr) else None
        measure = MeasureSettings.from_dict(raw["measure"])
    except ConfigError as e:
        raise blame_override(e, data_ovr + measure_ovr) from None
    return Source(path, model, ckpt, data, measure, TrainConfig(), pruned_path(path))


def _row(f: StageFigures, original: StageFigures) -> dict[str, Any]:
    """One table row of a stage's figures (rounded for people; accuracy blank when not measured)."""
    return {
        "stage": f.stage,
        "accuracy": round(f.accuracy, 4) if f.accuracy is not None else None,
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


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m repvgg_nas.prune",
        description="Prune the channels of a plain (deploy) RepVGG with torch-pruning, either by a "
        "channel ratio or until a measured speed-up is reached, then fine-tune briefly. The "
        "output checkpoint carries the pruned per-layer widths and loads with the core loader. "
        "Without data (a converted checkpoint and no --dataset) the net is pruned but not "
        "recalibrated, fine-tuned or evaluated.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("checkpoint", nargs="?", help="a repvgg-nas checkpoint: a search's, or python -m "
                     "repvgg_nas.convert's from official/timm weights (train-form input is fused first)")
    src.add_argument("--study", help="take the checkpoint of a trial of this study (with --trial)")
    parser.add_argument("--trial", type=int, help="trial number in --study")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=float, help="share of channels to remove, in [0, 1)")
    target.add_argument("--target-speedup", type=float, help="prune until measured throughput is this many times "
                        "higher (measured on random input: needs no data)")
    data = parser.add_argument_group(
        "data (default: the data the checkpoint or study was trained on; none for a converted checkpoint)")
    data.add_argument("--dataset", metavar="NAME", help="dataset: synthetic, cifar10, cifar100 or imagefolder "
                      "(as a study's [data].name)")
    data.add_argument("--data", metavar="PATH", help="local dataset folder (as [data].root; never downloads): an "
                      "ImageFolder tree (one sub-folder per class) or torchvision's CIFAR folder")
    data.add_argument("--data-resolution", type=int, metavar="N", help="TRAINING resolution: images are resized to "
                      "NxN for recalibration, fine-tuning and accuracy (as [data].resolution; default 32)")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction,
                      help="random horizontal flips in fine-tuning (default on for real data)")
    data.add_argument("--new-head", action="store_true", help="replace the classifier by a new one for the "
                      "data's classes (re-initialized, then fine-tuned): transfer to a new task")
    parser.add_argument("--importance", default="l2", help=f"channel criterion: {', '.join(IMPORTANCES)} (default l2)")
    parser.add_argument("--global", dest="global_pruning", action="store_true", help="rank channels across stages (layers with --per-layer) instead of cutting each by the same share")
    parser.add_argument("--round-to", type=int, help="keep widths multiples of this (e.g. 8)")
    parser.add_argument("--max-layer-ratio", type=float, default=0.9, help="most any layer may lose (default 0.9)")
    parser.add_argument("--finetune-epochs", type=int,
                        help=f"fine-tuning epochs after pruning (default {PruneJob.finetune_epochs} with data; 0 = none)")
    parser.add_argument("--finetune-mode", default=PruneJob.finetune_mode, choices=FINETUNE_MODES.list(),
                        help="plain: train the bare net (default, better in benchmarks/prune_cpu.md); bn: train with BN re-inserted, then fold it back")
    parser.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                        help="skip re-matching each kept channel's output statistics to the unpruned net's")
    parser.add_argument("--per-layer", dest="align_stages", action="store_false",
                        help="let every layer choose its own channels (default: remove the same channels "
                        "from all identity-linked layers of a stage, which keeps far more accuracy)")
    parser.add_argument("--distill", action="store_true",
                        help="fine-tune against the unpruned net's soft targets as well as the labels")
    measure = parser.add_argument_group("measurement (default: the study's [measure], else 224x224, batch 16)")
    measure.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device for fine-tuning and measurement")
    measure.add_argument("--batch-size", type=int, help="measurement batch size")
    measure.add_argument("--measure-resolution", type=int, metavar="N", help="DEPLOYMENT resolution: throughput, "
                         "params and MACs at NxN input (and the ONNX input size)")
    measure.add_argument("--max-seconds", type=float, help="time budget of one measurement's timed loop")
    parser.add_argument("--reports-dir", default=DEFAULT_REPORTS_DIR,
                        help=f"where studies live (default {DEFAULT_REPORTS_DIR}/)")
    parser.add_argument("--out", type=Path, help="output checkpoint (default: next to the input, *_pruned.pt)")
    parser.add_argument("--onnx", type=Path, help="also export the pruned deploy model to this ONNX file "
                        "(checked against torch in onnxruntime)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _needs_data(args: argparse.Namespace, job: PruneJob) -> str | None:
    """The first flag that needs data, for the error when there is none."""
    if args.new_head:
        return "--new-head"
    if args.finetune_epochs:
        return f"--finetune-epochs {args.finetune_epochs}"
    if args.distill:
        return "--distill"
    if job.settings.importance in NEEDS_GRADIENTS:
        return f"--importance {args.importance}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.study is not None and args.trial is None:
        parser.error("--study needs --trial N")
    if args.trial is not None and args.study is None:
        parser.error("--trial needs --study NAME")
    if args.new_head and args.finetune_epochs == 0:
        parser.error("--new-head needs fine-tuning: --finetune-epochs must be >= 1")

    job = PruneJob(
        ratio=args.ratio,
        target_speedup=args.target_speedup,
        settings=PruneSettings(
            importance=args.importance, global_pruning=args.global_pruning,
            round_to=args.round_to, max_layer_ratio=args.max_layer_ratio, recalibrate=args.recalibrate,
            align_stages=args.align_stages,
        ),
        finetune_epochs=PruneJob.finetune_epochs if args.finetune_epochs is None else args.finetune_epochs,
        finetune_mode=args.finetune_mode,
        distill=args.distill,
    )
    src = _source(args)
    dest = check_output_file(args.out or src.default_out, "--out")
    if args.onnx is not None:
        check_output_file(args.onnx, "--onnx")
    measure = src.measure.resolved()
    needs = _needs_data(args, job)
    if src.data is None and needs:
        raise ConfigError(f"{needs} needs data: give --dataset NAME --data PATH ({src.path} records no dataset)")
    data = load_data(src.data) if src.data is not None else None
    spec = src.ckpt.spec
    if data is not None and data.num_classes != spec.num_classes and not args.new_head:
        raise ConfigError(
            f"{src.path} predicts {spec.num_classes} classes but its data ({data.describe()}) has "
            f"{data.num_classes}; pass --new-head to replace the classifier (re-initialized, then fine-tuned)"
        )
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.no_progress else (lambda s: None)
    shown = data.describe() if data is not None else "no data"
    log(f"pruning {src.path} ({spec.summary()}) on {measure.device}, {shown}, measured at "
        f"{measure.resolution}x{measure.resolution}")
    out = run_prune(
        src.model, job, data, measure, src.train, measure.device, ThroughputCache(),
        progress=StepBar(enabled=not args.no_progress and sys.stderr.isatty()), log=log, new_head=args.new_head,
    )
    table = stage_rows(out)
    # ONNX first, checked before it is moved into place: a failing export leaves no half output.
    onnx = export_checked_onnx(out.model, args.onnx, measure.resolution) if args.onnx is not None else None
    save_checkpoint(dest, out.model, meta={
        **src.ckpt.meta, "parent_checkpoint": str(src.path), "prune": job.to_dict(),
        "accuracy": table[-1]["accuracy"], "throughput": table[-1]["img/s"],
        "data": src.data.to_dict() if src.data is not None else None,
        "speedup": out.final.speedup, "measure_resolution": measure.resolution, "new_head": args.new_head,
    })
    print(format_table(table))
    if out.note:
        print(f"note: {out.note}")
    print(f"wrote {dest}")
    if onnx is not None:
        print(f"wrote ONNX {args.onnx} ({onnx.describe()})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
