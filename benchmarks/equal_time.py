"""Multi-fidelity vs single-fidelity search at equal wall time, both fronts re-trained with more seeds.

    python -m repvgg_nas.search --study a_family --reports-dir /tmp/eq/mf
    python -m repvgg_nas.search --study a_family --rungs 1 --reports-dir /tmp/eq/sf
    python benchmarks/equal_time.py --mf /tmp/eq/mf --sf /tmp/eq/sf --seeds 1

Issue 14 asks whether rungs find a better front in the same time. The two
studies above run with the same time budget (the study's ``timeout``), but
the trial in flight at the deadline still ends, so this script compares both
at the same time: the earlier of the two runs' last trial ends (``--at``
sets another). Time is the time each study ran (``elapsed_seconds``): a study
searched in two runs of the same command is compared on its two budgets, the
idle time between the runs left out. It then

- prints each study's hypervolume against wall time (the report's
  ``report_hypervolume_time.csv``, one reference point for both: the accuracy
  floor of the multi-fidelity study's references, 0 images/s);
- re-trains every searched member of each final front at the full budget
  with the extra ``--seeds`` (initial weights and shuffle, as ``[trust]
  seeds`` does) and recomputes both hypervolumes on the mean accuracy over
  the study's seed and the extra ones. References are the same nets with the
  same seed in both studies (training is deterministic on one machine), so
  they keep their study figure unless ``--references`` re-trains them too;
- says how long the multi-fidelity run took to reach the single-fidelity
  run's final hypervolume;
- with ``--pool``, the headroom: the hypervolume of the best front that all
  the given studies together found (every architecture any of them trained
  at the full budget, on the study seed), against the single-fidelity run's.
  No search that only finds these nets can beat that ratio, so a target
  above it says more about the search space and the budget than the rule.

Throughput: the two runs measure the same net a few per cent apart (machine
noise; more between runs hours apart), enough to move a hypervolume by as
much as the rule does. By default (``--speed pooled``) every net's speed is
the median of all the measurements the given studies made of it, so the
comparison is about which nets each run found and when; ``--speed own``
keeps each study's own figure. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import optuna
import pandas as pd

from repvgg_nas.attrs import SPEC
from repvgg_nas.data import load_data
from repvgg_nas.measure import environment
from repvgg_nas.model import reparameterize
from repvgg_nas.report.frames import report_trials_frame
from repvgg_nas.stats import (
    completed, elapsed_seconds, hypervolume_2d, hypervolume_reference, hypervolume_time_frame, pareto_mask,
)
from repvgg_nas.search import load_study_config
from repvgg_nas.spec import RepVGGSpec
from repvgg_nas.train import evaluate, init_model, train


def _load(folder: Path, name: str) -> optuna.Study:
    db = folder / name / "study.db"
    if not db.is_file():
        raise SystemExit(f"error: no study at {db}")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def _relative(trials: pd.DataFrame, reference: str | None, what: str) -> pd.DataFrame:
    """``trials`` with throughput in units of ``reference``'s throughput in the same study (unchanged if None)."""
    if reference:
        ref = trials[trials["reference"] == reference]
        if ref.empty:
            raise SystemExit(f"error: the {what} study has no reference {reference!r}")
        trials["throughput"] = trials["throughput"] / float(ref["throughput"].iloc[0])
    return trials


def _pool_speed(frames: dict[str, pd.DataFrame]) -> None:
    """Set every trial's throughput to the median over all ``frames`` of its architecture's throughput (in place)."""
    done = pd.concat([t[t["throughput"].notna()] for t in frames.values()])
    median = done.groupby("spec_hash")["throughput"].median()
    for t in frames.values():
        t["throughput"] = t["spec_hash"].map(median).fillna(t["throughput"])


def _searched(trials: pd.DataFrame) -> pd.DataFrame:
    """Search trials (no linked re-trainings) completed at the full budget."""
    done = completed(trials)
    done = done[done["accuracy"].notna()]
    for c in ("repeat_of", "train_epochs"):
        if c in done:
            done = done[done[c].isna()]
    return done


def _front(trials: pd.DataFrame, at: float) -> pd.DataFrame:
    """Search trials (no linked re-trainings) completed by ``at`` seconds and on the front then, one per architecture."""
    done = _searched(trials[elapsed_seconds(trials) <= at]).drop_duplicates("spec_hash")
    mask = pareto_mask(done["accuracy"].to_numpy(float), done["throughput"].to_numpy(float))
    return done[mask]


def _read_cache(path: Path | None) -> dict[tuple[str, int], float]:
    if path is None or not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["spec_hash"], int(r["seed"])): float(r["accuracy"]) for r in rows}


def _append_cache(path: Path | None, spec_hash: str, seed: int, accuracy: float) -> None:
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps({"spec_hash": spec_hash, "seed": seed, "accuracy": accuracy}) + "\n")


def _headroom(frames: dict[str, pd.DataFrame], pool: dict[str, pd.DataFrame], ref_point: tuple[float, float],
              sf_hv: float, at: float) -> None:
    """Print the front of every architecture any of the studies trained at the full budget (its study-seed
    accuracy, its median speed over the studies that measured it) and that front's hypervolume over ``sf_hv``."""
    nets = pd.concat([_searched(t).drop_duplicates("spec_hash").assign(study=k)
                      for k, t in {**frames, **pool}.items()])
    union = nets.groupby("spec_hash").agg(accuracy=("accuracy", "mean"), throughput=("throughput", "median"),
                                          studies=("study", "nunique"), arch=("arch", "first")).reset_index()
    front = union[pareto_mask(union["accuracy"].to_numpy(float), union["throughput"].to_numpy(float))]
    hv = hypervolume_2d(list(zip(union["accuracy"], union["throughput"])), ref_point)
    print(f"\nHeadroom: {len(union)} architectures trained at the full budget in {len(frames) + len(pool)} studies. "
          f"The front of all of them:\n")
    print("| arch | accuracy (study seed) | speed (median) | found by (studies) |")
    print("|---|---|---|---|")
    for _, r in front.sort_values("throughput").iterrows():
        print(f"| {r['arch']} | {r['accuracy']:.3f} | {r['throughput']:.2f} | {r['studies']} |")
    print(f"\nIts hypervolume is {hv:.3f}: {hv / sf_hv if sf_hv else float('nan'):.2f}x the single-fidelity run's at "
          f"{at:.0f} s ({sf_hv:.3f}), the most any search that finds only these nets could reach against it.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mf", type=Path, required=True, help="--reports-dir of the multi-fidelity run")
    p.add_argument("--sf", type=Path, required=True, help="--reports-dir of the single-fidelity run")
    p.add_argument("--study", default="a_family")
    p.add_argument("--seeds", type=int, nargs="*", default=[1], help="extra training seeds for the front members "
                   "(none: only the wall-time comparison)")
    p.add_argument("--references", action="store_true", help="re-train the references with the extra seeds too")
    p.add_argument("--relative-to", metavar="REFERENCE", help="measure speed in units of this reference's img/s "
                   "in the same study (e.g. RepVGG-A0): runs hours apart on a shared machine see different speeds")
    p.add_argument("--cache", type=Path, help="JSON-lines file of re-training results (spec hash, seed, accuracy): "
                   "read first and appended to, so a net re-trained for one comparison is not re-trained for the next")
    p.add_argument("--pool", type=Path, nargs="*", default=[], metavar="DIR",
                   help="more --reports-dir folders of the same study, seed and machine (other settings' runs): "
                   "prints the hypervolume of the best front all the studies found together, the headroom")
    p.add_argument("--speed", choices=("pooled", "own"), default="pooled",
                   help="pooled (default): a net's speed is the median of every study's measurement of it; own: "
                   "each study's own measurement")
    p.add_argument("--at", type=float, help="compare at this many seconds of each study's running time "
                   "(default: when the first of the two runs' last trial ended)")
    args = p.parse_args()

    cfg = load_study_config(args.study)
    studies = {"multi-fidelity": _load(args.mf, args.study), "single-fidelity": _load(args.sf, args.study)}
    frames = {k: _relative(report_trials_frame(s), args.relative_to, k) for k, s in studies.items()}
    same = {d.resolve() for d in (args.mf, args.sf)}
    pool = {str(d): _relative(report_trials_frame(_load(d, args.study)), args.relative_to, str(d))
            for d in dict.fromkeys(args.pool) if d.resolve() not in same}
    if args.speed == "pooled":
        _pool_speed({**frames, **pool})
    unit = f"x {args.relative_to}" if args.relative_to else "img/s"
    ref_point, ref_text = hypervolume_reference(frames["multi-fidelity"])
    env = environment("cpu", cfg.measure.resolved())
    print(f"device: {env['cpu_model']}, {env['cpu_count']} cpus, ISA {env['cpu_capability']}, torch {env['torch']}; "
          f"study {args.study}; hypervolume reference point: {ref_text}; speed in {unit} "
          f"({'median over the studies' if args.speed == 'pooled' else 'each study its own'})\n")

    ends = {k: float(elapsed_seconds(t).max()) for k, t in frames.items()}
    at = args.at if args.at is not None else min(ends.values())
    print(f"Compared at {at:.0f} s from each study's start (last trial ended at "
          + ", ".join(f"{v:.0f} s ({k})" for k, v in ends.items()) + ")\n")
    print("| run | trials complete / stopped by then | hypervolume then (study seed) | front then |")
    print("|---|---|---|---|")
    curves, hv_at = {}, {}
    for k, t in frames.items():
        hv = hypervolume_time_frame(t, ref_point)
        curves[k] = hv
        upto = hv[hv["elapsed_s"] <= at]
        hv_at[k] = float(upto["hypervolume"].iloc[-1]) if len(upto) else 0.0
        front = _front(t, at)
        by_then = elapsed_seconds(t) <= at
        names = ", ".join(f"{r}" if isinstance(r, str) else f"trial {n}"
                          for n, r in zip(front["number"], front.get("reference", [None] * len(front))))
        print(f"| {k} | {int(((t['state'] == 'COMPLETE') & by_then).sum())} / "
              f"{int(((t['state'] == 'PRUNED') & by_then).sum())} | {hv_at[k]:.3f} | {names} |")

    sf_final = hv_at["single-fidelity"]
    print(f"\nHypervolume ratio then (study seed): {hv_at['multi-fidelity'] / sf_final if sf_final else float('nan'):.2f}"
          " (one run each; benchmarks/multifidelity_cpu.md reads 0.85-1.08 as ties)")
    reached = curves["multi-fidelity"][curves["multi-fidelity"]["hypervolume"] >= sf_final]
    if reached.empty:
        print(f"The multi-fidelity run never reached the single-fidelity run's hypervolume ({sf_final:.3f}).")
    else:
        t = float(reached["elapsed_s"].iloc[0])
        print(f"The multi-fidelity run reached the single-fidelity run's hypervolume at {at:.0f} s ({sf_final:.3f}) "
              f"after {t:.0f} s ({t / at:.2f} of the time).")

    if args.pool:
        _headroom(frames, pool, ref_point, hv_at["single-fidelity"], at)

    data = load_data(cfg.data)
    print(f"\nRe-training each front's searched members (and references: {args.references}) with seeds "
          f"{args.seeds} at the full budget ({cfg.train.epochs} epochs)\n")
    print(f"| run | trial | reference | {unit} | study seed | " + " | ".join(f"seed {s}" for s in args.seeds)
          + " | mean | train s |")
    print("|---|---|---|---|---|" + "---|" * len(args.seeds) + "---|---|")
    ratios = {}
    trained = _read_cache(args.cache)  # (spec hash, seed) -> accuracy: a net both runs found is trained once
    for k, study in studies.items():
        front = _front(frames[k], at)
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        points = []
        for _, r in front.iterrows():
            ref = r.get("reference")
            is_ref = isinstance(ref, str) and bool(ref)
            accs = [float(r["accuracy"])]
            t0 = time.perf_counter()
            if args.references or not is_ref:
                spec = RepVGGSpec.from_dict(by_number[int(r["number"])].user_attrs[SPEC])
                for s in args.seeds:
                    if (spec.hash, s) not in trained:
                        model = init_model(spec, seed=s)
                        train(model, data, cfg.train.replace(seed=s), "cpu")
                        trained[spec.hash, s] = evaluate(reparameterize(model), data)
                        _append_cache(args.cache, spec.hash, s, trained[spec.hash, s])
                    accs.append(trained[spec.hash, s])
            spent = time.perf_counter() - t0
            mean = statistics.fmean(accs)
            points.append((mean, float(r["throughput"])))
            extra = " | ".join(f"{a:.3f}" for a in accs[1:]) if len(accs) > 1 else " | ".join("" for _ in args.seeds)
            print(f"| {k} | {int(r['number'])} | {ref if is_ref else ''} | {r['throughput']:.2f} | {accs[0]:.3f} | "
                  f"{extra} | {mean:.3f} | {spent:.0f} |", flush=True)
        ratios[k] = hypervolume_2d(points, ref_point)
    mf, sf = ratios["multi-fidelity"], ratios["single-fidelity"]
    print(f"\nhypervolume on mean accuracy: multi-fidelity {mf:.3f}, single-fidelity {sf:.3f}, "
          f"ratio {mf / sf if sf else float('nan'):.2f}")


if __name__ == "__main__":
    main()
