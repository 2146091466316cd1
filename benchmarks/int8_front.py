"""A small a_family study measured in onnxruntime INT8, and its front against the fp32 front of the same nets.

    python benchmarks/int8_front.py --n-trials 8 --reports-dir /tmp/int8_front

Runs ``a_family`` with ``[measure] runtime = "onnxruntime-int8"`` (accuracy =
the INT8 net's, its float accuracy kept as ``float_accuracy``; throughput =
the INT8 onnxruntime net's). Then, for the SAME trained candidates, times
each deploy net in torch fp32 and in onnxruntime INT8 in one lockstep run
and prints both fronts: (float accuracy, torch fp32 img/s), what a default
study would report, and (INT8 accuracy, INT8 img/s), what ships. The fronts
are taken on point values; accuracy gaps under ~2 points are inside one
training's noise (issue 13), so read membership changes driven by accuracy
alone as ties. Prints markdown for ``benchmarks/runtimes_cpu.md``.
"""

from __future__ import annotations

import argparse
import time

import optuna

from repvgg_nas.attrs import ACCURACY, ARCH, FLOAT_ACCURACY, REFERENCE
from repvgg_nas.checkpoint import load_model
from repvgg_nas.layout import StudyPaths
from repvgg_nas.report import register_report
from repvgg_nas.measure import environment, measure_models
from repvgg_nas.stats import pareto_mask
from repvgg_nas.search import load_study_config, run_search

INT8 = "onnxruntime-int8"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="a_family")
    p.add_argument("--n-trials", type=int, default=8)
    p.add_argument("--references", nargs="*", default=["A0", "A1"],
                   help="zoo names trained first (default A0 A1: A2 alone costs ~9 min on a 2-core AVX2 CPU)")
    p.add_argument("--reports-dir", default="/tmp/int8_front")
    args = p.parse_args()

    cfg = load_study_config(args.study, {"measure.runtime": INT8, "n_trials": args.n_trials,
                                         "references": list(args.references)})
    cfg = cfg.replace(name=f"{cfg.name}_int8", timeout=None)  # all --n-trials, however long they take
    env = environment("cpu", cfg.measure.resolved())
    print(f"device: {env['cpu_model']}, {env['cpu_count']} cpus, ISA {env['cpu_capability']}, torch {env['torch']}")
    register_report()  # the study's page, as the search CLI writes it
    t0 = time.perf_counter()
    result = run_search(cfg, reports_dir=args.reports_dir, progress=False)
    print(f"study {cfg.name}: {args.n_trials} trials in {time.perf_counter() - t0:.0f} s "
          f"(runtime {cfg.measure.runtime}, fidelity {cfg.fidelity.to_dict()})\n")

    paths = StudyPaths.of(cfg.name, args.reports_dir)
    done = [t for t in result.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if paths.checkpoint(t.number).is_file()]
    nets, runtimes = {}, {}
    for t in done:
        model, _ = load_model(paths.checkpoint(t.number))
        for rt in ("torch", INT8):
            nets[f"{t.number}/{rt}"], runtimes[f"{t.number}/{rt}"] = model, rt
    settings = cfg.measure.resolved()
    timed = measure_models(nets, settings, copy_models=True, runtimes=runtimes)
    rows = []
    for t in done:
        rows.append({
            "trial": t.number, "ref": t.user_attrs.get(REFERENCE) or "", "arch": t.user_attrs.get(ARCH),
            "float": float(t.user_attrs[FLOAT_ACCURACY]), "int8": float(t.user_attrs[ACCURACY]),
            "fp32_ips": timed[f"{t.number}/torch"].images_per_s, "int8_ips": timed[f"{t.number}/{INT8}"].images_per_s,
        })
    fp32_front = pareto_mask([r["float"] for r in rows], [r["fp32_ips"] for r in rows])
    int8_front = pareto_mask([r["int8"] for r in rows], [r["int8_ips"] for r in rows])
    contended = any(m.contended for m in timed.values())
    print(f"lockstep timing of {len(rows)} nets x 2 runtimes at {settings.resolution}x{settings.resolution}, batch "
          f"{settings.batch_size}{' (CONTENDED: other load on the CPU)' if contended else ''}\n")
    print("| trial | reference | float acc | INT8 acc | INT8 - float | torch fp32 img/s | ort INT8 img/s | speed-up | "
          "fp32 front | INT8 front | arch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r, f, q in zip(rows, fp32_front, int8_front):
        print(f"| {r['trial']} | {r['ref']} | {r['float']:.3f} | {r['int8']:.3f} | {r['int8'] - r['float']:+.3f} | "
              f"{r['fp32_ips']:.1f} | {r['int8_ips']:.1f} | {r['int8_ips'] / r['fp32_ips']:.2f}x | "
              f"{'*' if f else ''} | {'*' if q else ''} | {r['arch']} |")
    both = int((fp32_front & int8_front).sum())
    print(f"\nfp32 front {int(fp32_front.sum())} nets, INT8 front {int(int8_front.sum())} nets, {both} in both; "
          f"only fp32: {[r['trial'] for r, f, q in zip(rows, fp32_front, int8_front) if f and not q]}, "
          f"only INT8: {[r['trial'] for r, f, q in zip(rows, fp32_front, int8_front) if q and not f]}")


if __name__ == "__main__":
    main()
