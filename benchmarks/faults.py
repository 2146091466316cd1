"""Fault drill and storage overhead of the distributed search (results: benchmarks/faults.md).

Run from the repository root, in the project venv, with the PostgreSQL 15
server binaries and psycopg installed (the same as tests/test_scale.py):

    python benchmarks/faults.py                    # both parts, a few minutes on 2 CPU cores
    python benchmarks/faults.py --part drill --kills 3 --trials 12
    python benchmarks/faults.py --part overhead --storage-trials 100 --e2e-trials 10

Drill: real worker processes (``python -m repvgg_nas.search``) run a tiny
study on PostgreSQL (Optuna heartbeat, 1 s / 4 s grace), on a journal file,
and on the default single-process SQLite file. Each time a trial is training,
its worker is killed with SIGKILL and a replacement worker is started (for
SQLite: the same command is run again). At the end every slot must hold
exactly one completed result: lost = wanted - slots with a result,
duplicated = completed results beyond one per slot.

Overhead: (1) storage only: the storage traffic of one search trial (the
attrs it records, the slot checks, the front check) with no training, per
storage, median over many trials; (2) end to end: the tiny study itself,
median trial duration per storage. The difference to the default SQLite file
is the price of sharing the study.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from repvgg_nas.report import front_numbers, register_report  # noqa: E402
from repvgg_nas.search import (  # noqa: E402
    admission, current_worker, load_study_config, run_search, slot_state,
)
from repvgg_nas.lifecycle import slot_key  # noqa: E402
from repvgg_nas.storage import make_storage  # noqa: E402
from tests.test_scale import (  # noqa: E402
    HEARTBEAT, child_env, kill_a_training_worker, load, local_postgres, search_cmd, search_trials, write_study,
)

TS = optuna.trial.TrialState


# ---- drill -----------------------------------------------------------------------------------
def drill(label: str, url: str | None, read_url: str, tmp: Path, n: int, kills: int, workers: int) -> dict:
    name = f"drill_{label.split()[0].lower()}"
    study_file = write_study(tmp, name, n, train_size=768, epochs=4)
    extra = ["--storage", url, *HEARTBEAT] if url else []
    cmd = search_cmd(study_file, tmp / "r", *extra)
    env = child_env(tmp)
    logs = tmp / f"{name}.log"
    out = logs.open("w")
    procs = [subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT) for _ in range(workers)]
    t0 = time.monotonic()
    done_kills = []
    for _ in range(kills):
        try:
            kill = kill_a_training_worker(read_url, name, lambda: any(p.poll() is None for p in procs))
        except AssertionError:
            break  # the study finished first
        done_kills.append(kill)
        for p in procs:
            if p.pid == kill["pid"]:
                p.wait()
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))  # replacement
    codes = [p.wait(timeout=600) for p in procs]
    wall = time.monotonic() - t0
    trials = search_trials(load(read_url, name))
    by_number = {t.number: t for t in trials}
    complete = [t for t in trials if t.state == TS.COMPLETE]
    per_key: dict[int, int] = {}
    for t in complete:
        k = slot_key(t, by_number)
        per_key[k] = per_key.get(k, 0) + 1
    killed_keys = {slot_key(by_number[k["trial"]], by_number) for k in done_kills}
    return {
        "storage": label, "workers": workers, "trials": n, "kills": len(done_kills),
        "completed": len(complete), "lost": n - len(per_key),
        "duplicated": sum(v - 1 for v in per_key.values()),
        "killed slots completed": f"{sum(k in per_key for k in killed_keys)}/{len(killed_keys)}",
        "exit codes": ",".join(map(str, codes)), "wall s": round(wall, 1),
    }


# ---- overhead ------------------------------------------------------------------------------------
ATTRS = ("arch_a", "arch_b", "arch_groupwise", "arch_g", "spec", "spec_hash", "arch", "params", "macs",
         "measure_exclusive", "latency_ms", "throughput_iqr", "measure_cached", "device", "train_seconds",
         "train_images_per_s", "final_loss", "fusion_error", "accuracy", "phase_seconds")


def storage_only(url: str, heartbeat: int | None, m: int) -> list[float]:
    """Seconds per trial of one search trial's storage traffic, without training."""
    storage = make_storage(url, heartbeat_interval=heartbeat)
    study = optuna.create_study(study_name="overhead", storage=storage, directions=["maximize", "maximize"])
    me = current_worker()
    spec = {"depths": [1, 1, 2, 2, 1], "widths": [8, 8, 16, 32, 256], "groups": [1] * 7}

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", me.name)
        trial.set_user_attr("worker_start", me.start)
        assert admission(trial.number, study.get_trials(deepcopy=False), m) is None
        trial.set_user_attr("admitted", True)
        for p in ("depth2", "depth3"):
            trial.suggest_int(p, 1, 2)
        trial.suggest_categorical("a", [0.125, 0.25])
        study.get_trials(deepcopy=False, states=(TS.COMPLETE,))  # the completed-twin check
        for k in ATTRS:
            trial.set_user_attr(k, spec if k == "spec" else 0.5)
        return 0.5, 1000.0 + trial.number

    stamps = [time.perf_counter()]

    def after(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        front_numbers(study)
        study.get_trials(deepcopy=False)
        slot_state(study.get_trials(deepcopy=False), m)
        stamps.append(time.perf_counter())

    study.optimize(objective, n_trials=m, callbacks=[after])
    return [b - a for a, b in zip(stamps, stamps[1:])]


def end_to_end(url: str | None, tmp: Path, name: str, n: int) -> tuple[list[float], float]:
    """Trial durations (s) by trial number of the tiny study on one storage, and wall s per trial.

    The sampler is seeded, so trial i samples the same net on every storage:
    durations can be compared pairwise, trial by trial.
    """
    cfg = load_study_config(write_study(tmp, name, n))
    register_report()  # as the CLI does: the wall time per trial includes writing the page
    t0 = time.perf_counter()
    res = run_search(cfg, storage=url, reports_dir=tmp / "r", progress=False)
    wall = (time.perf_counter() - t0) / n
    return [t.duration.total_seconds() if t.duration else float("nan")
            for t in sorted(res.study.trials, key=lambda t: t.number)], wall


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.1f}"


def _p90(xs: list[float]) -> str:
    return f"{sorted(xs)[int(0.9 * (len(xs) - 1))] * 1e3:.1f}"


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "drill", "overhead"], default="all")
    ap.add_argument("--trials", type=int, default=12, help="drill: trials per study")
    ap.add_argument("--kills", type=int, default=3, help="drill: SIGKILLs per study")
    ap.add_argument("--workers", type=int, default=3, help="drill: concurrent workers (PostgreSQL, journal)")
    ap.add_argument("--storage-trials", type=int, default=100, help="overhead: trials per storage, storage only")
    ap.add_argument("--e2e-trials", type=int, default=10, help="overhead: trials per storage and round, end to end")
    ap.add_argument("--rounds", type=int, default=2, help="overhead: interleaved end-to-end rounds")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    print(f"machine: {platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | "
          f"Python {platform.python_version()} | torch {torch.__version__} | optuna {optuna.__version__}")
    with local_postgres(durable=True) as new_db, tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(new_db("probe").replace("postgresql+psycopg://", "postgresql://")) as c:
                print("postgres:", c.execute("select version()").fetchone()[0].split(",")[0])
        if args.part in ("all", "drill"):
            rows = []
            pg = new_db("drill")
            rows.append(drill("PostgreSQL (heartbeat 1 s, grace 4 s)", pg, pg, tmp, args.trials, args.kills, args.workers))
            journal = f"journal:{tmp / 'r' / 'drill_journal' / 'journal.log'}"
            rows.append(drill("journal file", journal, journal, tmp, args.trials, args.kills, args.workers))
            sqlite_read = f"sqlite:///{tmp / 'r' / 'drill_sqlite' / 'study.db'}"
            rows.append(drill("SQLite default (kill + rerun)", None, sqlite_read, tmp, max(4, args.trials // 2),
                              max(1, args.kills - 1), 1))
            print("\n## Fault drill\n")
            print(table(rows))
        if args.part in ("all", "overhead"):
            m = args.storage_trials
            only = {
                "SQLite default (no heartbeat)": storage_only(f"sqlite:///{tmp / 'o1.db'}", None, m),
                "SQLite + heartbeat": storage_only(f"sqlite:///{tmp / 'o2.db'}", 60, m),
                "PostgreSQL + heartbeat": storage_only(new_db("overhead"), 60, m),
                "journal file": storage_only(f"journal:{tmp / 'o.log'}", None, m),
            }
            base = statistics.median(only["SQLite default (no heartbeat)"])
            rows = [{"storage": k, "trials": len(v), "median ms/trial": _ms(v), "p90 ms": _p90(v),
                     "vs SQLite ms": f"{(statistics.median(v) - base) * 1e3:+.1f}"} for k, v in only.items()]
            print("\n## Storage traffic of one trial, no training\n")
            print(table(rows))
            runs: dict[str, tuple[list[float], list[float]]] = {}  # storage -> (durations, walls)
            for r in range(args.rounds):  # interleaved, so a noisy neighbour hits every storage alike
                for label, url in (("SQLite default", None), ("PostgreSQL", new_db(f"e2e{r}")),
                                   ("journal file", f"journal:{tmp / f'e2e{r}.log'}")):
                    name = f"e2e_{label.split()[0].lower()}_{r}"
                    durations, wall = end_to_end(url, tmp, name, args.e2e_trials)
                    d, w = runs.setdefault(label, ([], []))
                    d.extend(durations)
                    w.append(wall)
            base = runs["SQLite default"][0]
            rows = [{"storage": k, "trials": len(d), "median trial s": f"{statistics.median(d):.3f}",
                     "median paired diff vs SQLite ms": f"{statistics.median(x - y for x, y in zip(d, base)) * 1e3:+.1f}",
                     "wall s/trial (incl. start-up, CSV, report)": f"{statistics.median(w):.3f}"}
                    for k, (d, w) in runs.items()]
            print("\n## Tiny study end to end (1 worker)\n")
            print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
