"""Does the per-layer latency table predict whole nets? Predicted vs lockstep-measured throughput.

    python benchmarks/latency_table.py                       # a_family, 30 nets, torch + onnxruntime,
                                                             # batch 16 at 224 (the a_family study's [measure])
    python benchmarks/latency_table.py --nets 3 --resolution 32 --batch 2   # a smoke run in seconds

For each runtime: the table of every distinct deploy layer of ``--space`` is
built fresh (in a temporary folder, so its build time is the real one; or
``--table-dir DIR`` keeps and reuses it), ``--nets`` random nets of the space
are drawn (seeded) and measured whole, every net of every runtime in ONE
lockstep run (:func:`repvgg_nas.measure.measure_models`), and the table's
predicted throughput (batch / sum of layer latencies) is compared with the
measured one: Spearman and Kendall rank correlations (scipy.stats), the
median and worst relative error, the median predicted/measured ratio (the
bias), the table's build time and the prediction time per net. The result is
a markdown block (CPU name and ISA, versions, settings, the command) for
``benchmarks/latency_table_cpu.md``; ``--out FILE`` also writes it there.
The issue's goal: Spearman >= 0.95 and median error <= 10 %.
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from scipy import stats

from repvgg_nas import RepVGGSpec, build_model
from repvgg_nas.measure import (
    LatencyTable,
    MeasureSettings,
    build_latency_table,
    distinct_layers,
    environment,
    measure_models,
    space_specs,
)
from repvgg_nas.study import load_space

GOAL_SPEARMAN, GOAL_MEDIAN_ERROR = 0.95, 0.10


def sample_specs(space: Any, n: int, seed: int, num_classes: int) -> list[RepVGGSpec]:
    """``n`` distinct random nets of ``space`` (every net when it holds fewer): each dimension drawn uniformly."""
    if space.size() <= n:
        return list(space_specs(space, num_classes))
    rng = random.Random(seed)
    out: dict[str, RepVGGSpec] = {}
    while len(out) < n:
        values = {d.name: rng.choice(d.values()) for d in space.dims()}
        spec = space.build(values, num_classes)
        out.setdefault(spec.hash, spec)
    return list(out.values())


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def evaluate(
    table: LatencyTable, specs: list[RepVGGSpec], measured: dict[int, float]
) -> dict[str, Any]:
    """Rank correlations and relative errors of the table's predictions against measured img/s."""
    t0 = time.perf_counter()
    predicted = [table.predict_throughput(s) for s in specs]
    per_net_us = (time.perf_counter() - t0) / len(specs) * 1e6
    meas = [measured[i] for i in range(len(specs))]
    errors = [abs(p - m) / m for p, m in zip(predicted, meas)]
    ratios = [p / m for p, m in zip(predicted, meas)]
    worst = max(range(len(specs)), key=errors.__getitem__)
    rho = stats.spearmanr(predicted, meas).statistic if len(specs) > 2 else float("nan")
    tau = stats.kendalltau(predicted, meas).statistic if len(specs) > 2 else float("nan")
    return {
        "spearman": float(rho), "kendall": float(tau),
        "median_error": statistics.median(errors), "worst_error": errors[worst],
        "worst_net": specs[worst].summary(), "median_ratio": statistics.median(ratios),
        "predict_us": per_net_us, "predicted": predicted, "measured": meas,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", default="a_family")
    p.add_argument("--nets", type=int, default=30, help="random nets of the space to measure whole")
    p.add_argument("--runtime", default="torch,onnxruntime", help="comma-separated runtimes")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's count)")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the head (the study's data)")
    p.add_argument("--repeats", type=int, default=5, help="minimum timed repeats per layer and per net")
    p.add_argument("--max-repeats", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=5.0, help="timed-loop budget per measured module")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table-dir", type=Path, default=None,
                   help="keep the tables here (reused by a rerun); default: a fresh temporary folder")
    p.add_argument("--per-net", action="store_true", help="also list every net's predicted and measured img/s")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown block to this file")
    args = p.parse_args(argv)

    runtimes = [r.strip() for r in args.runtime.split(",") if r.strip()]
    base = MeasureSettings(
        device="cpu", batch_size=args.batch, resolution=args.resolution, threads=args.threads,
        min_repeats=args.repeats, max_repeats=max(args.repeats, args.max_repeats), max_seconds=args.max_seconds,
    ).resolved()
    space = load_space(args.space)
    specs = sample_specs(space, args.nets, args.seed, args.num_classes)
    n_layers = len(distinct_layers(space_specs(space, args.num_classes), args.resolution))
    env = environment("cpu", base)
    print(f"{env['cpu_model']}, {env['cpu_count']} cpus, ISA {env['cpu_capability']}; space {space.name} "
          f"({space.size()} nets, {n_layers} distinct layers at {args.resolution}); {len(specs)} nets; "
          f"runtimes {', '.join(runtimes)}", file=sys.stderr)

    tables: dict[str, LatencyTable] = {}
    wall: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
        folder = args.table_dir or Path(tmp)
        for rt in runtimes:
            s = replace(base, runtime=rt)

            def progress(pr: Any, rt: str = rt) -> None:
                if pr.measured:
                    print(f"  [{rt}] {pr.done}/{pr.total} layers, {pr.elapsed_s:.0f} s", file=sys.stderr)

            t0 = time.perf_counter()
            tables[rt] = build_latency_table(space, s, folder / f"{rt}.json", progress,
                                             num_classes=args.num_classes)
            wall[rt] = time.perf_counter() - t0
            print(f"[{rt}] table: {len(tables[rt].entries)} layers in {wall[rt]:.0f} s", file=sys.stderr)

    print(f"measuring {len(specs)} nets x {len(runtimes)} runtimes whole, in one lockstep run ...", file=sys.stderr)
    nets = {f"{rt}/{i}": build_model(spec, deploy=True) for rt in runtimes for i, spec in enumerate(specs)}
    t0 = time.perf_counter()
    ms = measure_models(nets, base, copy_models=False, runtimes={k: k.split("/")[0] for k in nets})
    measure_s = time.perf_counter() - t0
    other = next(iter(ms.values())).env.get("other_cpu_load")

    results = {rt: evaluate(tables[rt], specs, {i: ms[f"{rt}/{i}"].images_per_s for i in range(len(specs))})
               for rt in runtimes}
    contended = sum(m.contended for m in ms.values())
    lines = [
        f"### {space.name}: {len(specs)} random nets, batch {args.batch} at {args.resolution}x{args.resolution}",
        "",
        f"- CPU: {env['cpu_model']}, {env['cpu_count']} cpus, ISA {env['cpu_capability']}; threads {base.threads}; "
        f"torch {env['torch']}"
        + "".join(f", onnxruntime {m.env['onnxruntime']}" for m in list(ms.values())[-1:] if m.env.get("onnxruntime")),
        f"- command: `python {' '.join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])}`",
        f"- space: {space.size()} nets, {n_layers} distinct deploy layers; nets measured whole in one lockstep "
        f"run of {measure_s:.0f} s ({contended} contended); other processes used "
        + (f"{other:.0%}" if other is not None else "?") + " of the CPU meanwhile",
        "",
        "| runtime | Spearman | Kendall | median error | worst error (net) | median predicted/measured "
        "| table build | prediction per net |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rt, r in results.items():
        lines.append(
            f"| {rt} | {r['spearman']:.3f} | {r['kendall']:.3f} | {_pct(r['median_error'])} | "
            f"{_pct(r['worst_error'])} ({r['worst_net']}) | {r['median_ratio']:.3f} | "
            f"{len(tables[rt].entries)} layers, {tables[rt].build_s:.0f} s measuring ({wall[rt]:.0f} s wall) | "
            f"{r['predict_us']:.0f} us |"
        )
    lines.append("")
    for rt, r in results.items():
        ok = r["spearman"] >= GOAL_SPEARMAN and r["median_error"] <= GOAL_MEDIAN_ERROR
        lines.append(f"- {rt}: goal (Spearman >= {GOAL_SPEARMAN}, median error <= {_pct(GOAL_MEDIAN_ERROR)}) "
                     f"{'met' if ok else 'NOT met'}")
    if args.per_net:
        lines += ["", "| net | " + " | ".join(f"{rt} predicted / measured img/s" for rt in runtimes) + " |",
                  "|---|" + "---|" * len(runtimes)]
        for i, spec in enumerate(specs):
            cells = " | ".join(f"{results[rt]['predicted'][i]:.1f} / {results[rt]['measured'][i]:.1f}"
                               for rt in runtimes)
            lines.append(f"| {spec.summary()} | {cells} |")
    block = "\n".join(lines)
    print(block)
    if args.out is not None:
        args.out.write_text(block + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
