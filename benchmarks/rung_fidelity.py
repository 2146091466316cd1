"""Which rung accuracy ranks candidates better for its cost: continuing a run, or re-training at the rung budget?

    python benchmarks/rung_fidelity.py --n 8            # a_family space, default budget, this CPU

Issue 14 asks whether a promoted candidate should continue from its rung
checkpoint (``[fidelity] mode = "continue"``: the rung accuracy is read
part-way through the full budget's one-cycle schedule, at a high learning
rate) or be trained afresh at each rung's budget (``"retrain"``: a complete,
annealed schedule per rung, costing the lower rungs again). For ``--n``
architectures sampled at random from the study's space this trains each one
once through the full budget, reading the fused net's accuracy at every rung
(the continue figures), and once more from scratch at each lower rung's
budget (the retrain figures). It then reports, per rung and mode, Kendall's
tau between the rung accuracy and the full-budget accuracy, the epochs each
mode has paid by then, and how well promotion by non-domination at the rung
(rung accuracy vs measured throughput) predicts the full-budget front.
Prints markdown for ``benchmarks/multifidelity_cpu.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import optuna
from scipy.stats import kendalltau

from repvgg_nas.data import load_data
from repvgg_nas.measure import environment, measure_spec
from repvgg_nas.model import reparameterize
from repvgg_nas.stats import pareto_mask
from repvgg_nas.search import load_study_config
from repvgg_nas.search.rungs import rung_train_config
from repvgg_nas.study import FidelityConfig
from repvgg_nas.train import evaluate, init_model, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="a_family")
    p.add_argument("--n", type=int, default=8, help="architectures sampled from the study's space")
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    p.add_argument("--rungs", type=int, default=3)
    p.add_argument("--reduction-factor", type=int, default=3)
    args = p.parse_args()

    cfg = load_study_config(args.study)
    data = load_data(cfg.data)
    budgets = FidelityConfig(rungs=args.rungs, reduction_factor=args.reduction_factor).budgets(cfg.train.epochs)
    measure = cfg.measure.resolved()
    env = environment("cpu", measure)
    print(f"device: {env['cpu_model']}, {env['cpu_count']} cpus, ISA {env['cpu_capability']}, torch {env['torch']}; "
          f"study {cfg.name}, data {data.describe()}, rung budgets {budgets} epochs, seed {args.seed}\n")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed),
                                        directions=["maximize", "maximize"])
    specs, seen = [], set()
    while len(specs) < args.n:
        spec = cfg.space.sample(sampler_study.ask(), data.num_classes, data.in_channels)
        if spec.hash not in seen:
            seen.add(spec.hash)
            specs.append(spec)

    rows = []
    print("| # | arch | img/s | " + " | ".join(f"continue @{e} ep" for e in budgets) + " | "
          + " | ".join(f"retrain @{e} ep" for e in budgets[:-1]) + " | train s (continue / retrain) |")
    print("|---|---|---|" + "---|" * (2 * len(budgets) - 1) + "---|")
    for i, spec in enumerate(specs):
        thr = measure_spec(spec, measure).images_per_s
        model, state, cont = init_model(spec, seed=args.seed), None, []
        t0 = time.perf_counter()
        for e in budgets:
            r = train(model, data, cfg.train, "cpu", resume=state, stop_epoch=e)
            state = r.state
            cont.append(evaluate(reparameterize(model), data))
        t_cont = time.perf_counter() - t0
        t0 = time.perf_counter()
        fresh = []
        for e in budgets[:-1]:
            m = init_model(spec, seed=args.seed)
            train(m, data, rung_train_config(cfg.train, e), "cpu")
            fresh.append(evaluate(reparameterize(m), data))
        t_fresh = time.perf_counter() - t0
        rows.append({"arch": spec.summary(), "thr": thr, "continue": cont, "retrain": fresh + [cont[-1]]})
        print(f"| {i} | {spec.summary()} | {thr:.1f} | " + " | ".join(f"{a:.3f}" for a in cont) + " | "
              + " | ".join(f"{a:.3f}" for a in fresh) + f" | {t_cont:.0f} / {t_fresh:.0f} |", flush=True)

    full = [r["continue"][-1] for r in rows]
    thr = [r["thr"] for r in rows]
    true_front = pareto_mask(full, thr)
    print(f"\nfull-budget front: {int(true_front.sum())} of {len(rows)} architectures\n")
    print("| rung | epochs | mode | epochs paid per candidate | Kendall tau vs full | promoted | "
          "full-front members promoted | promoted off the full front |")
    print("|---|---|---|---|---|---|---|---|")
    for k, e in enumerate(budgets[:-1]):
        for mode in ("continue", "retrain"):
            acc = [r[mode][k] for r in rows]
            tau = kendalltau(acc, full).statistic
            paid = e if mode == "continue" else sum(budgets[: k + 1])
            promoted = pareto_mask(acc, thr)
            hit = int((promoted & true_front).sum())
            print(f"| {k + 1} | {e} | {mode} | {paid} | {tau:+.2f} | {int(promoted.sum())} | "
                  f"{hit}/{int(true_front.sum())} | {int((promoted & ~true_front).sum())} |")
    gaps = [abs(r["continue"][k] - r["retrain"][k]) for r in rows for k in range(len(budgets) - 1)]
    print(f"\nmean |continue - retrain| rung accuracy: {statistics.fmean(gaps):.3f}")


if __name__ == "__main__":
    main()
