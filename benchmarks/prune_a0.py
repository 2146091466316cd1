"""Pruning benchmark: an A0-shaped net trained on the default proxy data, then pruned.

For ratios 0.25 / 0.5 and measured speed-up targets 1.5x / 2x, reports MACs
reduction, measured speed-up, and accuracy before pruning, right after
pruning (raw, and after the statistics recalibration), and after fine-tuning.
Variants: stage-aligned channel choice (the default) fine-tuned plain (the
default), plain with the unpruned net as teacher, or with BN re-inserted;
and per-layer channel choice (torch-pruning's BasePruner as is). A control
fine-tunes the *unpruned* net for the same epochs, so the gain from extra
training alone is visible, and a second table compares the importance
criteria at 1.5x.
Writes a markdown note to stdout (and --out).

    python benchmarks/prune_a0.py --out benchmarks/prune_cpu.md
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import time
from pathlib import Path

import torch

from repvgg_nas import zoo
from repvgg_nas.data import DataConfig, load_data
from repvgg_nas.counting import complexity
from repvgg_nas.measure import MeasureSettings, ThroughputCache, environment, measure_specs
from repvgg_nas.model import reparameterize
from repvgg_nas.prune import (
    FINETUNE_DEFAULTS,
    IMPORTANCES,
    PruneJob,
    PruneSettings,
    finetune,
    prune_channels,
    prune_to_speedup,
    recalibrate,
)
from repvgg_nas.train import TrainConfig, evaluate, init_model, train

# (label, stage-aligned, fine-tune mode, distill)
VARIANTS = [
    ("aligned, plain (default)", True, "plain", False),
    ("aligned, plain + teacher", True, "plain", True),
    ("aligned, bn", True, "bn", False),
    ("per-layer, plain", False, "plain", False),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--finetune-epochs", type=int, default=PruneJob.finetune_epochs)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    measure = MeasureSettings(device=args.device, batch_size=args.batch_size, resolution=args.resolution).resolved()
    device = torch.device(measure.device)
    data = load_data(DataConfig(), device=device)
    train_cfg = TrainConfig()
    spec = zoo.get("A0", num_classes=data.num_classes)
    model = init_model(spec, seed=0, device=device)
    t0 = time.perf_counter()
    train(model, data, train_cfg, device)
    train_s = time.perf_counter() - t0
    deploy = reparameterize(model).eval()
    acc0 = evaluate(deploy, data, device)
    cache = ThroughputCache()
    epochs = args.finetune_epochs
    lines = [
        "# Pruning RepVGG-A0 (deploy form) on the default proxy data",
        "",
        f"- machine: {environment(device, measure).get('device_name')}, {platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- A0 trained with the default proxy budget ({train_cfg.epochs} epochs, {train_s:.0f} s); "
        f"deploy-form val accuracy {acc0:.4f}",
        f"- throughput measured with `repvgg_nas.measure` at batch {measure.batch_size}, "
        f"{measure.resolution}x{measure.resolution}, {measure.dtype}, channels_last={measure.channels_last}",
        f"- fine-tuning: {epochs} epochs, lr {FINETUNE_DEFAULTS['lr']} cosine; L2 magnitude importance unless noted",
        f"- validation set: {data.val_size} images, so one accuracy figure has a standard error of about "
        f"{100 * (acc0 * (1 - acc0) / data.val_size) ** 0.5:.1f} points",
        "- reproduce: `python benchmarks/prune_a0.py --out benchmarks/prune_cpu.md`",
        "",
    ]
    for kd in (False, True):
        ctrl = finetune(copy.deepcopy(deploy), data, epochs, "plain", train_cfg, device,
                        teacher=copy.deepcopy(deploy) if kd else None)
        lines.append(f"- control: the unpruned net fine-tuned the same way{' with itself as teacher' if kd else ''}: "
                     f"{evaluate(ctrl, data, device):.4f}")
    lines += [
        "",
        "Each target is pruned once per channel choice (the speed-up loop measures the unpruned and",
        "the pruned net in lockstep); the fine-tuning variants start from that same pruned net.",
        "",
        "| target | channels, fine-tune | MACs cut | measured speed-up | speed-up / MACs cut | acc before | "
        "after prune (raw) | after recalibration | after fine-tune | widths |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    jobs = [("ratio 0.25", 0.25, None), ("ratio 0.5", 0.5, None),
            ("speed-up 1.5x", None, 1.5), ("speed-up 2x", None, 2.0)]
    for label, ratio, target in jobs:
        for align in (True, False):
            raw, recal, speedup, met = _prune(deploy, data, measure, cache, ratio, target,
                                              PruneSettings(align_stages=align), device)
            cut = complexity(deploy.spec, measure.resolution).macs / complexity(raw.spec, measure.resolution).macs
            acc_raw, acc_rec = evaluate(raw, data, device), evaluate(recal, data, device)
            for name, v_align, mode, kd in VARIANTS:
                if v_align != align:
                    continue
                tuned = finetune(copy.deepcopy(recal), data, epochs, mode, train_cfg, device,
                                 teacher=copy.deepcopy(deploy) if kd else None)
                lines.append(
                    f"| {label}{'' if met else ' (not met)'} | {name} | {cut:.2f}x | {speedup:.2f}x | "
                    f"{speedup / cut:.2f} | {acc0:.4f} | {acc_raw:.4f} | {acc_rec:.4f} | "
                    f"{evaluate(tuned, data, device):.4f} | {'-'.join(map(str, raw.spec.widths))} |"
                )
                print(lines[-1], flush=True)
    lines += [
        "",
        f"Importance criteria at a measured 1.5x (stage-aligned, fine-tuned plain for {epochs} epochs):",
        "",
        "| criterion | MACs cut | measured speed-up | after prune (raw) | after recalibration | after fine-tune |",
        "|---|---|---|---|---|---|",
    ]
    for crit in IMPORTANCES:
        raw, recal, speedup, _ = _prune(deploy, data, measure, cache, None, 1.5, PruneSettings(importance=crit), device)
        cut = complexity(deploy.spec, measure.resolution).macs / complexity(raw.spec, measure.resolution).macs
        tuned = finetune(copy.deepcopy(recal), data, epochs, "plain", train_cfg, device)
        lines.append(f"| {crit} | {cut:.2f}x | {speedup:.2f}x | {evaluate(raw, data, device):.4f} | "
                     f"{evaluate(recal, data, device):.4f} | {evaluate(tuned, data, device):.4f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


def _prune(deploy, data, measure, cache, ratio, target, settings, device):
    """(raw pruned net, recalibrated copy, measured speed-up, target met) for one target."""
    raw_settings = dataclasses.replace(settings, recalibrate=False)
    if ratio is not None:
        raw = prune_channels(deploy, ratio, raw_settings, data, data.resolution)
        recal = prune_channels(deploy, ratio, settings, data, data.resolution)  # deterministic: same channels
        assert recal.spec == raw.spec
        pair = measure_specs({"original": deploy.spec, "pruned": raw.spec}, measure, cache)
        return raw, recal, pair["pruned"].images_per_s / pair["original"].images_per_s, True
    res = prune_to_speedup(deploy, target, measure, raw_settings, data, cache, data.resolution)
    raw = res.model.to(device)
    recal = recalibrate(copy.deepcopy(raw), deploy, res.kept, data, settings.calibration_images)
    return raw, recal, res.best.speedup, res.met


if __name__ == "__main__":
    main()
