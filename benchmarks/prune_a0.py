"""Pruning benchmark: an A0-shaped net trained on the default proxy data, then pruned.

For ratios 0.25 / 0.5 and measured speed-up targets 1.5x / 2x, with both
fine-tuning modes (plain, and BN re-inserted then folded back), reports MACs
reduction, measured speed-up, and accuracy before pruning, after pruning and
after fine-tuning. Writes a markdown table to stdout (and --out).

    python benchmarks/prune_a0.py --out benchmarks/prune_cpu.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch

from repvgg_nas import zoo
from repvgg_nas.data import DataConfig, load_data
from repvgg_nas.measure import MeasureSettings, ThroughputCache, environment
from repvgg_nas.prune import PruneJob, PruneSettings, run_prune
from repvgg_nas.train import TrainConfig, evaluate, init_model, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    measure = MeasureSettings(device=args.device, batch_size=args.batch_size, resolution=args.resolution).resolved()
    device = torch.device(measure.device)
    data = load_data(DataConfig(), device=device)
    train_cfg = TrainConfig()
    spec = zoo.get("A0", num_classes=data.num_classes)
    model = init_model(spec, seed=0, device=device)
    t0 = time.perf_counter()
    train(model, data, train_cfg, device, progress=False)
    train_s = time.perf_counter() - t0
    cache = ThroughputCache()
    lines = [
        "# Pruning RepVGG-A0 (deploy form) on the default proxy data",
        "",
        f"- machine: {environment(device, measure).get('device_name')}, {platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- A0 trained with the default proxy budget ({train_cfg.epochs} epochs, {train_s:.0f} s); "
        f"train-form val accuracy {evaluate(model, data, device):.4f}",
        f"- throughput measured with `repvgg_nas.measure` at batch {measure.batch_size}, "
        f"{measure.resolution}x{measure.resolution}, {measure.dtype}, channels_last={measure.channels_last}",
        f"- fine-tuning: {args.finetune_epochs} epochs; per-layer L2 magnitude importance",
        "- reproduce: `python benchmarks/prune_a0.py`",
        "",
        "| target | fine-tune | MACs cut | measured speed-up | speed-up / MACs cut | acc before | after prune | after fine-tune | widths |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    jobs = [("ratio 0.25", dict(ratio=0.25)), ("ratio 0.5", dict(ratio=0.5)),
            ("speed-up 1.5x", dict(target_speedup=1.5)), ("speed-up 2x", dict(target_speedup=2.0))]
    for label, kw in jobs:
        for mode in ("plain", "bn"):
            job = PruneJob(settings=PruneSettings(), finetune_epochs=args.finetune_epochs, finetune_mode=mode, **kw)
            out = run_prune(copy.deepcopy(model), job, data, measure, train_cfg, device, cache, progress=False)
            before, pruned, tuned = out.rows[0], out.rows[1], out.rows[-1]
            cut = before["GMACs"] / pruned["GMACs"]
            lines.append(
                f"| {label}{'' if out.met else ' (not met)'} | {mode} | {cut:.2f}x | {pruned['speedup']:.2f}x | "
                f"{pruned['speedup'] / cut:.2f} | {before['accuracy']:.4f} | {pruned['accuracy']:.4f} | "
                f"{tuned['accuracy']:.4f} | {pruned['widths']} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
