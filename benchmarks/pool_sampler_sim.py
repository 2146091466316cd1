"""Judge pool samplers on the pool's tabular benchmark: hundreds of simulated main jobs in minutes.

    python benchmarks/pool_sampler_sim.py                      # 200 seeds, the main job's 900 s budget
    python benchmarks/pool_sampler_sim.py --seeds 50 --budget 1800

Each simulated run starts from the references (already trained, as in a
second run of the main job) and spends ``--budget`` seconds of training on
pool members, charging each net the seconds its training took in the table
(``benchmarks/pool_table.py``). A member's accuracy is the table's
(seed 0); its speed the lockstep figure when ``<table>.speeds.json`` exists,
else its predicted speed (said in the output). With rungs, a candidate
trains rung by rung (each rung a run of its own budget) and stops at a rung
whose result another candidate's at the same rung dominates (accuracy at
the rung vs speed), as the main job's default promotion rule does; a rung
that does not fit in the time left ends the run. Strategies:

- ``uniform``: a uniform draw from the untrained members (what the main job's
  NSGA-II does with one pool_rank parameter);
- ``proxy``: the best zero-cost proxy score first;
- ``spread``: evenly over predicted speed (the member farthest in log speed from
  every one chosen so far);
- ``pool``: the pool sampler's rule itself (:func:`repvgg_nas.prescreen.choose`:
  Gaussian-process accuracy model fitted to the references and the nets trained
  so far, expected hypervolume gain at the predicted speed). Its features are
  standardized over the tabled members (the search standardizes over the whole
  pool; the table is spread evenly over it).

Reported per strategy, mean +- standard error over seeds: the hypervolume
ratio against the references-only front, and the fraction of the oracle
hypervolume (the table's whole front with the references).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repvgg_nas.prescreen import DEFAULT_PROXY, choose, features, score
from repvgg_nas.spec import RepVGGSpec
from repvgg_nas.stats import PRIOR_SEED_STD, hypervolume_2d, standard_error

HERE = Path(__file__).resolve().parent
VAL_SIZE = 2000  # the main job's validation images (synthetic data's default): the hypervolume floor's error


@dataclass
class Net:
    rank: int
    accuracy: float
    speed: float  # what the front is judged on: lockstep when measured, else predicted
    predicted: float
    proxy: float
    runs: list[dict]  # rung runs, lowest first; the last is the full budget
    row: np.ndarray  # the accuracy model's features


@dataclass
class Run:
    """One simulated main job: what is trained, what is known, the time spent."""

    refs: list[tuple[float, float]]
    ref_rows: np.ndarray  # the references' features (the accuracy model learns from them too)
    known: dict[int, float] = field(default_factory=dict)  # rank -> full-budget accuracy
    tried: set[int] = field(default_factory=set)
    rung_results: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # rung -> (acc, speed)
    spent: float = 0.0


def load(path: Path) -> tuple[list[tuple[float, float]], np.ndarray, list[Net], str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    speeds_file = path.with_suffix(".speeds.json")
    lockstep = json.loads(speeds_file.read_text())["archs"] if speeds_file.is_file() else {}
    source = "lockstep" if lockstep else "predicted (no lockstep file yet)"

    def speed(r: dict) -> float:
        if r["spec_hash"] in lockstep:
            return float(lockstep[r["spec_hash"]]["images_per_s"])
        return float(r["predicted_images_per_s"] or 0.0)

    ref_rows = [r for r in rows if r["role"] == "reference" and r["seed"] == 0]
    refs = [(r["accuracy"], speed(r)) for r in ref_rows]
    members = [r for r in rows if r["role"] == "member" and r["seed"] == 0 and len(r["runs"]) > 1]
    nets = [Net(r["pool_rank"], r["accuracy"], speed(r), r["predicted_images_per_s"], r["proxy"], r["runs"],
                features(RepVGGSpec.from_dict(r["spec"]), r["proxy"]))
            for r in members]
    ref_specs = [RepVGGSpec.from_dict(r["spec"]) for r in ref_rows]
    ref_features = np.array([features(s, score(DEFAULT_PROXY, s)) for s in ref_specs])  # scored as the pool's
    return refs, ref_features, nets, source


def _reference(refs: list[tuple[float, float]]) -> tuple[float, float]:
    """The study's hypervolume reference point: the lowest reference's accuracy less 2 standard errors (one
    seed: the prior seed spread and the validation set's binomial error), 0 images/s."""
    low = min(a for a, _ in refs)
    return low - 2 * standard_error(low, PRIOR_SEED_STD, 1, VAL_SIZE), 0.0


# ---- strategies: each picks the next rank from the untried ones -------------------------------------------
Pick = Callable[[Run, list[Net], list[int], np.random.Generator], int]


def pick_uniform(run: Run, nets: list[Net], free: list[int], rng: np.random.Generator) -> int:
    return int(rng.choice(free))


def pick_proxy(run: Run, nets: list[Net], free: list[int], rng: np.random.Generator) -> int:
    best = max(nets[i].proxy for i in free)
    return int(rng.choice([i for i in free if nets[i].proxy == best]))


def pick_spread(run: Run, nets: list[Net], free: list[int], rng: np.random.Generator) -> int:
    chosen = [math.log(nets[i].predicted) for i in run.tried]
    if not chosen:
        return int(rng.choice(free))
    far = [min(abs(math.log(nets[i].predicted) - c) for c in chosen) for i in free]
    top = max(far)
    return int(rng.choice([i for i, d in zip(free, far) if d == top]))


def pick_pool(run: Run, nets: list[Net], free: list[int], rng: np.random.Generator) -> int:
    rows = np.array([n.row for n in nets])
    trained = list(run.known)
    observed = np.vstack([run.ref_rows, rows[trained].reshape(-1, rows.shape[1])])
    accuracy = np.array([a for a, _ in run.refs] + [run.known[i] for i in trained])
    points = np.array(run.refs + [(run.known[i], nets[i].speed) for i in trained])  # choose() takes the front
    speeds = np.array([n.predicted for n in nets])
    done = set(range(len(nets))) - set(free)
    return choose(rows, observed, accuracy, points, speeds, done, set(), _reference(run.refs)[0], rng).rank


STRATEGIES: dict[str, Pick] = {"uniform": pick_uniform, "proxy": pick_proxy, "spread": pick_spread, "pool": pick_pool}


# ---- one simulated run ----------------------------------------------------------------------------------------
def _climb(run: Run, net: Net, index: int, budget: float, rungs: bool) -> bool:
    """Train ``net`` (rung by rung with ``rungs``); False when the time budget ends the run."""
    runs = net.runs if rungs else net.runs[-1:]
    for k, r in enumerate(runs):
        if run.spent + r["train_seconds"] > budget:
            return False
        run.spent += r["train_seconds"]
        if k == len(runs) - 1:
            run.known[index] = r["accuracy"]
            return True
        mine = (r["accuracy"], net.speed)
        others = run.rung_results.setdefault(k, [])
        dominated = any(a >= mine[0] and s >= mine[1] and (a > mine[0] or s > mine[1]) for a, s in others)
        others.append(mine)
        if dominated:
            return True
    return True


def simulate(refs: list[tuple[float, float]], ref_rows: np.ndarray, nets: list[Net], pick: Pick, seed: int,
             budget: float, rungs: bool) -> Run:
    run, rng = Run(refs, ref_rows), np.random.default_rng(seed)
    while len(run.tried) < len(nets):
        free = [i for i in range(len(nets)) if i not in run.tried]
        i = pick(run, nets, free, rng)
        run.tried.add(i)
        if not _climb(run, nets[i], i, budget, rungs):
            break
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=HERE / "pool_table_cpu.jsonl")
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--budget", type=float, default=900.0, help="training seconds after the references")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    a = p.parse_args()
    refs, ref_rows, nets, source = load(a.table)
    if any(s <= 0 for _, s in refs):
        print(f"error: {a.table}'s references have no speed yet (they are not pool members, so none is predicted); "
              f"time the tabled nets first: python benchmarks/pool_table.py --measure", file=sys.stderr)
        return 2
    if len(refs) < 1 or len(nets) < 4:
        print(f"error: {a.table} holds {len(refs)} references and {len(nets)} members with rungs; "
              f"run benchmarks/pool_table.py longer", file=sys.stderr)
        return 2
    reference = _reference(refs)
    base = hypervolume_2d(refs, reference)
    oracle = hypervolume_2d(refs + [(n.accuracy, n.speed) for n in nets], reference)
    print(f"{len(nets)} members, {len(refs)} references; speeds: {source}; budget {a.budget:.0f} s; "
          f"{a.seeds} seeds; oracle / references-only hypervolume {oracle / base:.2f}\n")
    print("| strategy | rungs | hypervolume ratio | fraction of oracle | nets completed |")
    print("|---|---|---|---|---|")
    for name in a.strategies.split(","):
        for rungs in (False, True):
            ratios, fractions, counts = [], [], []
            for seed in range(a.seeds):
                run = simulate(refs, ref_rows, nets, STRATEGIES[name], seed, a.budget, rungs)
                found = hypervolume_2d(refs + [(acc, nets[i].speed) for i, acc in run.known.items()], reference)
                ratios.append(found / base)
                fractions.append(found / oracle)
                counts.append(len(run.known))
            se = lambda xs: statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0  # noqa: E731
            print(f"| {name} | {'yes' if rungs else 'no'} | {statistics.mean(ratios):.3f} ± {se(ratios):.3f} | "
                  f"{statistics.mean(fractions):.3f} ± {se(fractions):.3f} | {statistics.mean(counts):.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
