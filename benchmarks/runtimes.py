"""RepVGG-A0 deploy in torch fp32, onnxruntime fp32 and onnxruntime INT8; RepVGG vs QARepVGG under INT8 PTQ.

    python benchmarks/runtimes.py speed                  # one lockstep run, 224x224, batch 16
    python benchmarks/runtimes.py accuracy --seeds 0 1 2 # proxy accuracy, float and INT8, both blocks

``speed`` times the three runtimes of one net in ONE lockstep run
(``measure_models(..., runtimes=...)``), so their ratios hold on a shared,
drifting CPU. ``accuracy`` trains A0 (10 classes) with each train-form block
on the default proxy data and budget (the search's), fuses it and reports the
validation accuracy of the fp32 deploy net and of its INT8 (QDQ, per-tensor,
calibrated on 256 proxy training images) onnxruntime version. Results are
printed as markdown rows for ``benchmarks/runtimes_cpu.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time


from repvgg_nas import build_model, reparameterize, zoo
from repvgg_nas.data import load_data
from repvgg_nas.evaluation import runtime_accuracy
from repvgg_nas.measure import MeasureSettings, environment, measure_models
from repvgg_nas.train import TrainConfig, evaluate, init_model, train

RUNS = {"torch fp32": "torch", "onnxruntime fp32": "onnxruntime", "onnxruntime int8": "onnxruntime-int8"}


def speed(args: argparse.Namespace) -> None:
    settings = MeasureSettings(
        device="cpu", batch_size=args.batch, resolution=args.resolution, threads=args.threads,
        max_seconds=args.max_seconds, max_repeats=args.max_repeats,
    )
    net = build_model(zoo.get(args.model), deploy=True)
    env = environment("cpu", settings.resolved())
    print(f"device: {env['cpu_model']}, {env['cpu_count']} cpus, ISA {env['cpu_capability']}, "
          f"torch {env['torch']}, load avg {env['load_avg_1m']:.2f} before")
    t0 = time.perf_counter()
    out = measure_models({name: net for name in RUNS}, settings, copy_models=True,
                         runtimes={name: rt for name, rt in RUNS.items()})
    wall = time.perf_counter() - t0
    base = out["torch fp32"].images_per_s
    print(f"settings: {settings.resolved().to_dict()}  ({wall:.0f} s)")
    print("| runtime | img/s (median) | IQR img/s | ms/batch | robust CV | repeats (dropped) | contended | vs torch fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in out.items():
        print(f"| {name} | {m.images_per_s:.1f} | {m.images_per_s_iqr:.1f} | {m.latency_ms:.1f} | "
              f"{m.robust_cv:.1%} | {m.repeats} ({m.dropped_repeats}) | {m.contended} | "
              f"{m.images_per_s / base:.2f}x |")
    other = next(iter(out.values())).env.get("other_cpu_load")
    print(f"other processes used {other:.0%} of the cpu during the timed loop" if other is not None else "")
    print(f"onnxruntime {next(m.env.get('onnxruntime') for m in out.values() if m.env.get('onnxruntime'))}")


def accuracy(args: argparse.Namespace) -> None:
    data = load_data({"name": "synthetic"})
    cfg = TrainConfig()
    rows = []
    for block in args.blocks:
        spec = zoo.get(args.model, num_classes=data.num_classes).replace(block=block)
        for seed in args.seeds:
            t0 = time.perf_counter()
            model = init_model(spec, seed=seed)
            train(model, data, cfg, "cpu")
            deploy = reparameterize(model)
            fp32 = evaluate(deploy, data)
            int8 = runtime_accuracy(deploy, data, "onnxruntime-int8")
            rows.append((block, seed, fp32, int8))
            print(f"| {block} | {seed} | {fp32:.2%} | {int8:.2%} | {int8 - fp32:+.2%} | "
                  f"{time.perf_counter() - t0:.0f} s |", flush=True)
    print("\n| block | seeds | float (mean) | INT8 (mean) | drop (mean) | drop range |")
    print("|---|---|---|---|---|---|")
    for block in args.blocks:
        r = [x for x in rows if x[0] == block]
        drops = [x[3] - x[2] for x in r]
        print(f"| {block} | {len(r)} | {statistics.fmean(x[2] for x in r):.2%} | "
              f"{statistics.fmean(x[3] for x in r):.2%} | {statistics.fmean(drops):+.2%} | "
              f"{min(drops):+.2%} .. {max(drops):+.2%} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--model", default="A0")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--resolution", type=int, default=224)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--max-seconds", type=float, default=60.0)
    s.add_argument("--max-repeats", type=int, default=30)
    a = sub.add_parser("accuracy")
    a.add_argument("--model", default="A0")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a.add_argument("--blocks", nargs="+", default=["repvgg", "qarepvgg"])
    args = p.parse_args()
    (speed if args.what == "speed" else accuracy)(args)


if __name__ == "__main__":
    main()
