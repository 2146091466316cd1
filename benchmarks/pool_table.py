"""A tabular benchmark of a study's pre-screened pool: the ground truth that proxies and samplers are judged on.

    python benchmarks/pool_table.py                      # a_family, 48 members, 16 of them at a second seed
    python benchmarks/pool_table.py --measure            # then: lockstep speeds of every tabled net (quiet CPU)
    python benchmarks/pool_table.py --retime             # re-time the training of nets trained under load

The study's pool is made as the search makes it (latency table + zero-cost
proxy). ``--members`` of it, spread evenly over predicted speed, are each
trained as the main job trains a candidate: every rung of ``[fidelity]`` as
a run of its own budget (retrain mode: 1, 2 and 6 epochs for a_family) at
the study's seed, fused and scored; ``--second-seed`` of them (every k-th)
train the full budget once more at seed + 1, for the noise. The study's
references train the full budget (the references-only front). Each net's
row is appended to ``--out`` (JSON lines) as soon as it is done, so the run
resumes where it stopped; a row names the other processes' share of the CPU
while it trained (``other_load``): training seconds from a loaded CPU are
re-timed by ``--retime`` (one epoch on a quiet CPU, scaled by the epochs),
and accuracies do not depend on load (CPU training is deterministic).
``--measure`` times every tabled net in lockstep (the search's measurement
settings) and writes ``<out>.speeds.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from repvgg_nas import zoo
from repvgg_nas.data import load_data
from repvgg_nas.measure import OtherLoad, build_latency_table, cpu_isa, device_name, environment, measure_specs
from repvgg_nas.model import reparameterize
from repvgg_nas.search import ensure_pool, load_study_config
from repvgg_nas.search.rungs import rung_train_config
from repvgg_nas.spec import RepVGGSpec
from repvgg_nas.train import evaluate, init_model, train

HERE = Path(__file__).resolve().parent
QUIET = 0.10  # a net trained while others used more than this share of the CPU is re-timed


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="a_family")
    p.add_argument("--members", type=int, default=48, help="pool members, spread evenly over predicted speed")
    p.add_argument("--second-seed", type=int, default=16, help="of them, how many also train at seed + 1")
    p.add_argument("--out", type=Path, default=HERE / "pool_table_cpu.jsonl")
    p.add_argument("--measure", action="store_true", help="lockstep speeds of every tabled net, then stop")
    p.add_argument("--retime", action="store_true", help="re-time nets trained under load, then stop")
    p.add_argument("--limit-s", type=float, default=None, help="stop starting new nets after this many seconds")
    return p.parse_args()


def _done(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.is_file() else []
    return {(r["spec_hash"], r["seed"]): r for r in rows}


def _append(out: Path, row: dict[str, Any]) -> None:
    with out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def _plan(cfg: Any, data: Any, measure: Any, members: int, second: int) -> tuple[list[dict[str, Any]], int]:
    """What to train, in order: the references, then the chosen pool members (seed 0), then the second seeds."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    pool, _ = ensure_pool(study, cfg, measure, data.num_classes, data.in_channels)
    assert pool is not None, "the study has no [prescreen] pool"
    ranks = sorted({int(round(x)) for x in np.linspace(0, len(pool.members) - 1, members)})
    table = build_latency_table(cfg.space, measure, num_classes=data.num_classes, in_channels=data.in_channels)
    plan = []
    for name in cfg.references:  # not pool members: their speed is predicted here, by the same (cached) table
        params = cfg.space.params_for(zoo.get_entry(name))
        predicted = table.predict_throughput(cfg.space.build(params, data.num_classes, data.in_channels))
        plan.append({"role": "reference", "reference": name, "params": params, "rank": None,
                     "predicted": predicted, "proxy": None, "seed": cfg.seed, "rungs": False})
    chosen = [pool.members[r] for r in ranks]
    for r, m in zip(ranks, chosen):
        plan.append({"role": "member", "reference": None, "params": dict(m.params), "rank": r,
                     "predicted": m.throughput, "proxy": m.proxy, "seed": cfg.seed, "rungs": True})
    step = max(1, len(chosen) // max(second, 1))
    for r, m in list(zip(ranks, chosen))[::step][:second]:
        plan.append({"role": "member", "reference": None, "params": dict(m.params), "rank": r,
                     "predicted": m.throughput, "proxy": m.proxy, "seed": cfg.seed + 1, "rungs": False})
    return plan, len(pool.members)


def _train_one(cfg: Any, data: Any, device: torch.device, spec: RepVGGSpec, seed: int, epochs: int) -> dict[str, Any]:
    """One run of ``epochs`` (its own schedule, as a retrained rung) at ``seed``: accuracy of the fused net."""
    train_cfg = rung_train_config(cfg.train, epochs) if epochs != cfg.train.epochs else cfg.train
    if seed != cfg.seed:
        train_cfg = dataclasses.replace(train_cfg, seed=seed)
    model = init_model(spec, seed=seed, device=device)
    load = OtherLoad()
    result = train(model, data, train_cfg, device)
    other = load.stop()
    deploy = reparameterize(model.eval())
    return {"epochs": epochs, "accuracy": evaluate(deploy, data, device), "train_seconds": round(result.seconds, 2),
            "other_load": None if other is None else round(other, 3)}


def _row(cfg: Any, item: dict[str, Any], spec: RepVGGSpec, runs: list[dict[str, Any]]) -> dict[str, Any]:
    full = runs[-1]
    return {"spec_hash": spec.hash, "seed": item["seed"], "role": item["role"], "reference": item["reference"],
            "pool_rank": item["rank"], "params": item["params"], "spec": spec.to_dict(), "arch": spec.summary(),
            "predicted_images_per_s": item["predicted"], "proxy": item["proxy"], "accuracy": full["accuracy"],
            "train_seconds": round(sum(r["train_seconds"] for r in runs), 2), "runs": runs,
            "other_load": max((r["other_load"] or 0.0) for r in runs), "threads": torch.get_num_threads(),
            "cpu": device_name("cpu"), "cpu_isa": cpu_isa(), "torch": torch.__version__,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _train_all(cfg: Any, data: Any, device: torch.device, plan: list[dict[str, Any]], out: Path,
               limit_s: float | None) -> None:
    start = time.monotonic()
    done = _done(out)
    budgets = cfg.fidelity.budgets(cfg.train.epochs)
    for i, item in enumerate(plan):
        spec = cfg.space.build(item["params"], data.num_classes, data.in_channels)
        if (spec.hash, item["seed"]) in done:
            continue
        if limit_s is not None and time.monotonic() - start > limit_s:
            print(f"time limit reached after {i} of {len(plan)} nets; run again to resume", flush=True)
            return
        epochs = budgets if item["rungs"] else (cfg.train.epochs,)
        runs = [_train_one(cfg, data, device, spec, item["seed"], e) for e in epochs]
        row = _row(cfg, item, spec, runs)
        _append(out, row)
        accs = " / ".join(format(r["accuracy"], ".3f") for r in runs)
        print(f"[{i + 1}/{len(plan)}] {row['arch']} seed {row['seed']}: {accs} in {row['train_seconds']:.0f} s "
              f"(others {row['other_load']:.0%})", flush=True)


def _retime(cfg: Any, data: Any, device: torch.device, out: Path) -> None:
    """Re-time the training of rows trained under load: one epoch on a quiet CPU, scaled to each run's epochs."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    for row in rows:
        if row["other_load"] <= QUIET or row.get("retimed"):
            continue
        spec = RepVGGSpec.from_dict(row["spec"])
        one = _train_one(cfg, data, device, spec, row["seed"], 1)
        if (one["other_load"] or 0.0) > QUIET:
            print(f"{row['arch']} seed {row['seed']}: loaded again ({one['other_load']:.0%}); not re-timed", flush=True)
            continue
        for r in row["runs"]:
            r["train_seconds_loaded"], r["train_seconds"] = r["train_seconds"], round(one["train_seconds"] * r["epochs"], 2)
        row["train_seconds"] = round(sum(r["train_seconds"] for r in row["runs"]), 2)
        row["retimed"] = {"one_epoch_s": one["train_seconds"], "other_load": one["other_load"]}
        print(f"re-timed {row['arch']} seed {row['seed']}: {row['train_seconds']:.0f} s", flush=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out)


def _measure(cfg: Any, measure: Any, out: Path) -> None:
    """Every tabled architecture timed in lockstep with the search's measurement settings."""
    rows = {r["spec_hash"]: r for r in _done(out).values()}
    specs = {h: RepVGGSpec.from_dict(r["spec"]) for h, r in rows.items()}
    got = measure_specs(specs, measure)
    record = {"measure": measure.to_dict() if hasattr(measure, "to_dict") else str(measure),
              "environment": environment(measure.device, measure),
              "archs": {h: {"images_per_s": m.images_per_s, "images_per_s_iqr": m.images_per_s_iqr,
                            "contended": m.contended, "other_load": m.env.get("other_cpu_load")}
                        for h, m in got.items()}}
    path = out.with_suffix(".speeds.json")
    path.write_text(json.dumps(record, indent=1))
    print(f"{len(got)} nets measured in lockstep: {path}", flush=True)


def main() -> int:
    a = _args()
    cfg = load_study_config(a.study)
    measure = cfg.measure.resolved()
    device = torch.device("cpu")
    data = load_data(cfg.data, device=device)
    print(f"{device_name('cpu')} ({cpu_isa()}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{data.describe()}", flush=True)
    if a.measure:
        _measure(cfg, measure, a.out)
        return 0
    if a.retime:
        _retime(cfg, data, device, a.out)
        return 0
    plan, pool_size = _plan(cfg, data, measure, a.members, a.second_seed)
    print(f"pool of {pool_size}: {len(plan)} trainings planned ({a.out})", flush=True)
    _train_all(cfg, data, device, plan, a.out, a.limit_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
