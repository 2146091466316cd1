"""The main job: ``python -m repvgg_nas.search --study a_family``.

One trial = sample a spec -> train the train-form net briefly on proxy data ->
fuse -> record the fused/unfused error -> evaluate the deploy net -> measure
its throughput (cached by spec) -> report (accuracy, images/s) to Optuna with
the figures as user attrs. The paper's reference configs are enqueued first
and trained with the same budget, so the front is compared like with like.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from .checkpoint import save_checkpoint
from .cli import format_table, run_cli
from .counting import complexity
from .data import DataBundle, load_data
from .errors import ConfigError
from .measure import ThroughputCache, measure_spec
from .model import fusion_error, reparameterize
from .report import write_report
from .results import front_numbers, pareto_frame, trials_frame, write_csv
from .storage import DEFAULT_HEARTBEAT_INTERVAL, has_heartbeat, make_storage, redact_url, storage_kind
from .study import StudyConfig, load_study_config
from .train import DivergenceError, evaluate, init_model, train
from .workers import (
    DUPLICATE, INTERRUPTED, SURPLUS, DeviceLock, admission, current_worker, launch_workers, recover_trials,
    slot_state, visible_gpus, worker_env, worker_seed,
)
from . import zoo

__all__ = ["SearchResult", "run_search", "open_study", "default_storage", "recover_interrupted", "main"]

FUSION_TOLERANCE = 1e-4
TrialState = optuna.trial.TrialState
_DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
ROLES = ("all", "worker", "finalize")


@dataclass
class SearchResult:
    study: optuna.Study
    out_dir: Path
    trials: Any  # pandas.DataFrame
    pareto: Any  # pandas.DataFrame
    interrupted: bool = False


def default_storage(cfg: StudyConfig, reports_dir: Path) -> str:
    return f"sqlite:///{(reports_dir / cfg.name / 'study.db').as_posix()}"


def _counts_as_done(t: optuna.trial.FrozenTrial) -> bool:
    """Finished trials count toward n_trials, except those cut short by the user or a crash,
    pruned variants (added after the search, not sampled) and surplus trials of a worker
    that found every slot taken. (Study-wide counts use :func:`workers.slot_state`.)"""
    return (
        t.state in _DONE
        and not str(t.user_attrs.get("fail_reason", "")).startswith(INTERRUPTED)
        and t.user_attrs.get("parent_trial") is None
        and not t.user_attrs.get(SURPLUS)
    )


def open_study(
    cfg: StudyConfig, storage: str | optuna.storages.BaseStorage, create: bool = True,
    sampler_seed: int | None = None,
) -> optuna.Study:
    """Create or resume the study; refuse to resume one made from a different space.

    ``storage`` is a URL (opened without a heartbeat) or a storage from
    :func:`repvgg_nas.storage.make_storage`. ``sampler_seed`` (default: the
    study seed) seeds this process's sampler only; training uses the study seed.
    """
    sampler = cfg.sampler.build(cfg.seed if sampler_seed is None else sampler_seed)
    label = redact_url(storage if isinstance(storage, str) else str(getattr(storage, "url", type(storage).__name__)))
    if isinstance(storage, str):
        storage = make_storage(storage, heartbeat_interval=None)
    try:
        study = optuna.create_study(
            study_name=cfg.name,
            storage=storage,
            sampler=sampler,
            directions=["maximize", "maximize"],
            load_if_exists=True,
        )
    except (ValueError, ImportError, RuntimeError) as e:
        raise ConfigError(f"cannot open storage {label!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # SQLAlchemy's OperationalError and friends
        raise ConfigError(f"cannot open storage {label!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    stored = study.user_attrs.get("space_hash")
    if stored is not None and stored != cfg.space.hash:
        raise ConfigError(
            f"study {cfg.name!r} in {label} was created with search space "
            f"{study.user_attrs.get('space', '?')!r} hashing to {stored}, but "
            f"{cfg.space.name!r} now hashes to {cfg.space.hash}: the space changed. Restore "
            f"it, or start a new study (another study file name or --storage)"
        )
    if stored is None:
        for k, v in cfg.to_dict().items():
            study.set_user_attr(k, v)
        for ref in cfg.references:
            study.enqueue_trial(cfg.space.params_for(zoo.get_entry(ref)), user_attrs={"reference": ref})
    return study


def recover_interrupted(study: optuna.Study, *, running: bool = True) -> int:
    """Re-enqueue trials that were interrupted (Ctrl-C) or left RUNNING by a dead process.

    Only RUNNING trials whose worker ran on this host and is gone are touched
    (see :func:`workers.recover_trials`), so a second live process on the same
    study keeps its trial. ``running=False`` leaves RUNNING trials to Optuna's
    heartbeat. Returns how many trials were queued again.
    """
    return len(recover_trials(study, running=running, finished=True))


class _Objective:
    """The trial function; holds what every trial shares (data on device, cache, paths).

    ``target`` is the study's wanted number of search trials: a trial first
    claims a slot (:func:`workers.admission`) and, when other workers have
    filled them all, is pruned untrained as surplus. ``lock`` serializes
    throughput measurement against other local workers' training on the device.
    """

    def __init__(
        self, cfg: StudyConfig, data: DataBundle, device: torch.device, cache: ThroughputCache,
        ckpt_dir: Path, progress: bool, target: int | None = None, lock: DeviceLock | None = None,
    ) -> None:
        self.cfg, self.data, self.device, self.cache = cfg, data, device, cache
        self.ckpt_dir, self.progress = ckpt_dir, progress
        self.target = target if target is not None else cfg.n_trials
        self.lock = lock if lock is not None else DeviceLock(device)
        self.worker = current_worker()

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", f"{INTERRUPTED}: Ctrl-C")
            raise
        except Exception as e:
            trial.set_user_attr("fail_reason", _reason(e))
            if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            raise

    def _claim_slot(self, trial: optuna.Trial) -> None:
        """Record who runs the trial, then take a slot or prune it as surplus (untrained)."""
        trial.set_user_attr("worker", self.worker.name)
        if self.worker.start is not None:
            trial.set_user_attr("worker_start", self.worker.start)
        trials = trial.study.get_trials(deepcopy=False)
        why = admission(trial.number, trials, self.target)
        if why is None:
            trial.set_user_attr("admitted", True)
            return
        trial.set_user_attr(SURPLUS, why)
        fixed = next((t.system_attrs.get("fixed_params") for t in trials if t.number == trial.number), None)
        if fixed is not None and trial.user_attrs.get("retry_of") is None and not why.startswith(DUPLICATE):
            # A queued trial (a reference) that lost the race keeps its place for a longer run.
            keep = {k: v for k, v in trial.user_attrs.items() if k == "reference"}
            trial.study.enqueue_trial(dict(fixed), user_attrs=keep)
        trial.study.stop()
        raise optuna.TrialPruned(f"{SURPLUS}: {why}")

    def _run(self, trial: optuna.Trial) -> tuple[float, float]:
        cfg, data = self.cfg, self.data
        self._claim_slot(trial)
        phases: dict[str, float] = {}
        tick = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal tick
            now = time.perf_counter()
            phases[name] = round(now - tick, 4)
            tick = now

        spec = cfg.space.sample(trial, data.num_classes, data.in_channels)
        p = trial.params
        for k in ("a", "b", "groupwise", "g"):
            trial.set_user_attr(f"arch_{k}", p.get(k, getattr(cfg.space, k).choices[0] if getattr(cfg.space, k).fixed else None))
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("spec_hash", spec.hash)
        trial.set_user_attr("arch", spec.summary())
        twin = _completed_twin(trial, spec.hash)
        if twin is not None:
            # Same architecture, same seed, same budget: training it again would only cost time.
            for k, v in twin.user_attrs.items():
                if k not in _OWN_ATTRS and k not in trial.user_attrs:
                    trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of", twin.number)
            return twin.values[0], twin.values[1]
        cx = complexity(spec, resolution=cfg.measure.resolution)
        trial.set_user_attr("params", cx.params)
        trial.set_user_attr("macs", cx.macs)
        lap("sample")

        if ThroughputCache.key(spec, cfg.measure) in self.cache:
            meas = measure_spec(spec, cfg.measure, self.cache)
        else:  # alone on the device: no other local worker trains while this one measures
            with self.lock.exclusive() as alone:
                meas = measure_spec(spec, cfg.measure, self.cache)
            trial.set_user_attr("measure_exclusive", alone)
        trial.set_user_attr("latency_ms", meas.latency_ms)
        trial.set_user_attr("throughput_iqr", meas.images_per_s_iqr)
        trial.set_user_attr("measure_cached", meas.cached)
        trial.set_user_attr("device", meas.env.get("device_name"))
        lap("measure")
        for name, value in cfg.objectives.constraints(meas.images_per_s, cx.params, cx.macs).items():
            trial.set_constraint(name, value)
        broken = cfg.objectives.violations(meas.images_per_s, cx.params, cx.macs)
        if broken:
            trial.set_user_attr("prune_reason", "; ".join(broken))
            raise optuna.TrialPruned("; ".join(broken))

        with self.lock.shared():  # device compute; a measurement elsewhere waits for it
            model = init_model(spec, seed=cfg.seed, device=self.device)
            lap("build")
            result = train(
                model, data, cfg.train, self.device, progress=self.progress and sys.stderr.isatty(), position=1,
                desc=f"trial {trial.number}",
            )
            trial.set_user_attr("train_seconds", result.seconds)
            trial.set_user_attr("train_images_per_s", result.images_per_second)
            trial.set_user_attr("final_loss", result.final_loss)
            lap("train")
            deploy = reparameterize(model)
            err = fusion_error(model, deploy, resolution=data.resolution)
            trial.set_user_attr("fusion_error", err)
            if not err <= FUSION_TOLERANCE:
                raise RuntimeError(f"fused net differs from the train-form net (relative error {err:.2e})")
            lap("fuse")
            acc = evaluate(deploy, data, self.device)
        trial.set_user_attr("accuracy", acc)
        lap("evaluate")
        save_checkpoint(
            self.ckpt_dir / f"trial_{trial.number:04d}.pt",
            deploy,
            spec,
            meta={
                "study": cfg.name, "trial": trial.number, "accuracy": acc,
                "throughput": meas.images_per_s, "reference": trial.user_attrs.get("reference"),
                "data": cfg.data.to_dict(),
            },
        )
        lap("checkpoint")
        trial.set_user_attr("phase_seconds", phases)
        return acc, meas.images_per_s


# Attrs that describe a trial's own run, never copied from a completed twin.
_OWN_ATTRS = ("reference", "retry_of", "duplicate_of", "worker", "worker_start", "admitted", SURPLUS)


def _completed_twin(trial: optuna.Trial, spec_hash: str) -> optuna.trial.FrozenTrial | None:
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("spec_hash") == spec_hash:
            return t
    return None


def _reason(e: BaseException) -> str:
    if isinstance(e, DivergenceError):
        return f"diverged: {e}"
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return f"out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:500]


def _keep_checkpoints(study: optuna.Study, ckpt_dir: Path) -> None:
    """Keep deploy checkpoints of the front and of the references only (bounded disk use).

    Only checkpoints of finished trials are removed: another worker may have
    just written one for a trial it has not reported yet. A finished trial off
    the front never rejoins it, so an older view of the study is safe to act on.
    """
    trials = study.get_trials(deepcopy=False)
    finished = {t.number for t in trials if t.state.is_finished()}
    keep = front_numbers(study) | {
        t.number for t in trials if t.user_attrs.get("reference") or t.user_attrs.get("parent_trial") is not None
    }
    for f in ckpt_dir.glob("trial_*.pt"):
        try:
            n = int(f.stem.split("_")[1])
        except (IndexError, ValueError):
            continue
        if n in finished and n not in keep:
            f.unlink(missing_ok=True)


def prune_front(
    study: optuna.Study, cfg: StudyConfig, data: DataBundle, measure: Any, device: torch.device,
    cache: ThroughputCache, ckpt_dir: Path, progress: bool,
) -> int:
    """Prune every front member not pruned yet; add each result as a trial linked to its parent.

    Pruned variants are real points on the accuracy/speed plane, so they join
    the study (and may join the front) with ``parent_trial`` naming their source.
    """
    from .checkpoint import load_model
    from .prune import run_prune

    assert cfg.prune is not None
    done = {t.user_attrs.get("parent_trial") for t in study.get_trials(deepcopy=False)}
    parents = [
        t for t in study.best_trials
        if t.user_attrs.get("parent_trial") is None and t.number not in done
    ]
    for parent in parents:
        path = ckpt_dir / f"trial_{parent.number:04d}.pt"
        if not path.is_file():
            continue
        model, _ = load_model(path)
        _say(f"pruning front member trial {parent.number} ({cfg.prune.to_dict()})", progress)
        try:
            out = run_prune(model, cfg.prune, data, measure, cfg.train, device, cache, progress=False)
        except Exception as e:  # a failed prune must not lose the search results
            _say(f"pruning trial {parent.number} failed: {_reason(e)}", True)
            continue
        final = out.rows[-1]
        spec = out.model.spec
        attrs = {
            "parent_trial": parent.number,
            "pruned_ratio": cfg.prune.ratio if cfg.prune.ratio is not None else None,
            "prune": cfg.prune.to_dict(),
            "speedup": final["speedup"],
            "prune_target_met": out.met,
            "spec": spec.to_dict(), "spec_hash": spec.hash, "arch": spec.summary(),
            "params": complexity(spec, measure.resolution).params,
            "macs": complexity(spec, measure.resolution).macs,
            "latency_ms": final["latency_ms"], "accuracy": final["accuracy"],
            "device": parent.user_attrs.get("device"),
        }
        for k in ("a", "b", "groupwise", "g"):
            attrs[f"arch_{k}"] = parent.user_attrs.get(f"arch_{k}")
        study.add_trial(optuna.trial.create_trial(
            values=[float(final["accuracy"]), float(final["img/s"])], user_attrs=attrs,
        ))
        number = study.get_trials(deepcopy=False)[-1].number
        save_checkpoint(ckpt_dir / f"trial_{number:04d}.pt", out.model, spec, meta={
            "study": cfg.name, "trial": number, "parent_trial": parent.number,
            "accuracy": final["accuracy"], "throughput": final["img/s"], "data": cfg.data.to_dict(),
        })
    return len(parents)


def write_outputs(study: optuna.Study, out_dir: Path) -> tuple[Any, Any]:
    trials = trials_frame(study)
    pareto = pareto_frame(trials)
    write_csv(trials, out_dir / "trials.csv")
    write_csv(pareto, out_dir / "pareto.csv")
    return trials, pareto


def connect(
    cfg: StudyConfig,
    storage: str | None,
    reports_dir: str | Path = "reports",
    *,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
) -> tuple[optuna.Study, str]:
    """Open (or create) the study on its storage; return it with the URL to show.

    The default SQLite file serves one process and has no heartbeat: a trial
    whose process died is retried when the command runs again. An explicit
    URL may be shared by several workers, so RDB URLs get Optuna's heartbeat
    and each process seeds its sampler differently (:func:`workers.worker_seed`):
    only the default single-process study is reproducible trial by trial.
    The storage is opened before the study's reports folder is made, so an
    unreachable URL leaves no files behind.
    """
    out_dir = Path(reports_dir) / cfg.name
    if storage is None:
        url = default_storage(cfg, Path(reports_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        store = make_storage(url, heartbeat_interval=None)
    else:
        url = storage
        store = make_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        return open_study(cfg, store, sampler_seed=worker_seed(cfg.seed)), redact_url(url)
    return open_study(cfg, store), redact_url(url)


def _work(
    study: optuna.Study, objective: _Objective, after_trial: Any, target: int, timeout: float | None,
    progress: bool,
) -> None:
    """Run trials until the study holds ``target`` finished search trials.

    ``study.optimize`` alone is not enough with several workers: its count is
    per worker, and a worker that stops as soon as every slot is taken could
    leave for good while another worker's running trial is about to die and be
    retried. So this loop runs trials while a slot is free (or a queued retry
    may run), and otherwise waits, checking for dead workers' trials (Optuna's
    heartbeat, or :func:`workers.recover_trials` for storages without one),
    until the target is reached or nothing is in flight any more.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    beat = has_heartbeat(study._storage)
    poll = min(5.0, float(study._storage.get_heartbeat_interval())) if beat else 2.0
    said_wait = False
    while True:
        if beat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        else:
            recover_trials(study, running=True, finished=False)
        state = slot_state(study.get_trials(deepcopy=False), target)
        left = None if deadline is None else deadline - time.monotonic()
        if state.finished or (left is not None and left <= 0):
            return
        if state.runnable:
            try:
                study.optimize(
                    objective, n_trials=None, timeout=left, catch=(Exception,),
                    callbacks=[after_trial], gc_after_trial=True,
                )
            except optuna.exceptions.UpdateFinishedTrialError as e:
                # Another worker declared this one's trial dead (missed heartbeats) and retried it.
                _say(f"a trial of this worker was taken over by another ({str(e).splitlines()[0]})", True)
            said_wait = False
            continue
        if state.running == 0:
            return
        if not said_wait:
            _say(f"waiting: {state.running} trial(s) still running in other workers "
                 f"({state.done}/{target} done); a dead one will be retried here", progress)
            said_wait = True
        time.sleep(poll)


def run_search(
    cfg: StudyConfig,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    reports_dir: str | Path = "reports",
    progress: bool = True,
    role: str = "all",
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
) -> SearchResult:
    """Run (or resume) the study until it has ``n_trials`` finished search trials.

    ``storage`` is an Optuna storage URL (``sqlite:///``, ``postgresql://``,
    ``journal:PATH``); several processes may share one. ``role`` splits the job
    for ``--workers``: ``"worker"`` only runs trials (no pruning, CSV or
    report), ``"finalize"`` only prunes the front and writes the outputs, and
    ``"all"`` (one process) does both.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reports_dir = Path(reports_dir)
    out_dir = reports_dir / cfg.name
    if device is not None:
        cfg = cfg.replace(measure=dataclasses.replace(cfg.measure, device=device))
    measure = cfg.measure.resolved()
    train_device = torch.device(measure.device)
    target = n_trials if n_trials is not None else cfg.n_trials

    data = load_data(cfg.data, device=train_device)  # before anything is written
    study, shown = connect(cfg, storage, reports_dir, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    out_dir.mkdir(parents=True, exist_ok=True)
    if role == "all":
        recover_interrupted(study, running=not has_heartbeat(study._storage))
    cache = ThroughputCache(out_dir / "throughput_cache.json")
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    objective = _Objective(cfg, data, train_device, cache, ckpt_dir, progress, target=target)

    done = slot_state(study.get_trials(deepcopy=False), target).done
    remaining = max(0, target - done) if role != "finalize" else 0
    if role != "finalize":
        _say(f"study {cfg.name!r}: {done} trial(s) done, {remaining} to run | data {data.describe()} | "
             f"device {measure.device} | storage {shown}", progress)

    from tqdm.auto import tqdm

    bar = tqdm(total=target, initial=min(done, target), desc="trials", position=0,
               disable=not progress or role != "all", dynamic_ncols=True, unit="trial")

    def after_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        if _counts_as_done(t):
            bar.update(1)
        if progress:
            bar.write(_trial_line(t), file=sys.stderr)
        _keep_checkpoints(study, ckpt_dir)
        state = slot_state(study.get_trials(deepcopy=False), target)
        if state.finished or not state.runnable:
            study.stop()

    interrupted = False
    try:
        if remaining:
            _work(study, objective, after_trial, target, timeout, progress)
        if cfg.prune is not None and role != "worker":
            prune_front(study, cfg, data, measure, train_device, cache, ckpt_dir, progress)
    except KeyboardInterrupt:
        interrupted = True
        _say("interrupted: completed trials are saved; run the same command again to resume", True)
    finally:
        bar.close()
    if role == "worker":
        return SearchResult(study, out_dir, None, None, interrupted)
    trials, pareto = write_outputs(study, out_dir)
    _keep_checkpoints(study, ckpt_dir)
    write_report(study, out_dir, storage=shown)
    return SearchResult(study, out_dir, trials, pareto, interrupted)


def _say(text: str, enabled: bool) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def _trial_line(t: optuna.trial.FrozenTrial) -> str:
    ua = t.user_attrs
    ref = f" [{ua['reference']}]" if ua.get("reference") else ""
    if ua.get("duplicate_of") is not None:
        ref += f" (same net as trial {ua['duplicate_of']})"
    if t.state == TrialState.COMPLETE:
        return (f"trial {t.number}{ref}: acc {t.values[0]:.3f}, {t.values[1]:.0f} img/s, "
                f"{ua.get('params', 0) / 1e6:.2f}M params | {ua.get('arch', '')}")
    reason = ua.get("fail_reason") or ua.get("prune_reason") or ""
    return f"trial {t.number}{ref}: {t.state.name.lower()} ({reason}) | {ua.get('arch', '')}"


def pareto_table(pareto: Any) -> str:
    """Console table of the front beside the references."""
    if pareto is None or len(pareto) == 0:
        return "no completed trials yet"
    rows = []
    for _, r in pareto.iterrows():
        rows.append({
            "trial": int(r["number"]),
            "front": "*" if r["on_front"] else "",
            "reference": r["reference"] if isinstance(r["reference"], str) else "",
            "accuracy": round(float(r["accuracy"]), 4),
            "img/s": round(float(r["throughput"]), 1),
            "params_M": round(float(r["params_m"]), 3),
            "GMACs": round(float(r["gmacs"]), 3),
            "dominates": r["dominates"],
            "arch": r["arch"],
        })
    return format_table(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repvgg_nas.search",
        description="Search RepVGG architectures for the accuracy/throughput Pareto front on "
        "this machine: each trial trains a sampled net briefly on proxy data, fuses it, "
        "checks the fused net is the same function, evaluates it and measures its real "
        "throughput. Re-running the same command resumes the study.",
    )
    parser.add_argument("--study", required=True, help="study name in studies/ (a_family, b_family, quick) or a .toml path")
    parser.add_argument("--n-trials", type=int, help="total finished trials wanted (default: the study's n_trials)")
    parser.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train and measure on this device (default: the study's measure.device)")
    parser.add_argument("--storage", help="Optuna storage URL: sqlite:///PATH, postgresql://USER@HOST/DB or "
                        "journal:PATH; several processes may share one (default sqlite:///reports/<study>/study.db)")
    parser.add_argument("--workers", type=int, default=1, help="start N local worker processes on one shared --storage "
                        "(journal:PATH or postgresql://...); with several GPUs each worker gets one (default 1)")
    parser.add_argument("--heartbeat-interval", type=int, default=DEFAULT_HEARTBEAT_INTERVAL,
                        help=f"RDB storage: seconds between a running trial's heartbeats (default {DEFAULT_HEARTBEAT_INTERVAL})")
    parser.add_argument("--grace-period", type=int, help="RDB storage: seconds without a heartbeat before a trial's "
                        "worker counts as dead and the trial is retried (default twice the interval)")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its children
    parser.add_argument("--data", help="local dataset folder (sets [data].root; never downloads)")
    parser.add_argument("--seed", type=int, help="override the study seed")
    parser.add_argument("--reports-dir", default="reports", help="where results go (default: reports/)")
    parser.add_argument("--dry-run", action="store_true", help="validate the study and show the plan; write nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-trial lines")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.n_trials is not None and args.n_trials < 1:
        parser.error(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.heartbeat_interval < 1:
        raise ConfigError(f"--heartbeat-interval must be >= 1 second, got {args.heartbeat_interval}")
    if args.grace_period is not None and args.grace_period <= args.heartbeat_interval:
        raise ConfigError(f"--grace-period ({args.grace_period}s) must be longer than --heartbeat-interval "
                          f"({args.heartbeat_interval}s), or live workers' trials would be retried")

    cfg = load_study_config(args.study)
    if args.data is not None:
        if cfg.data.name == "synthetic":
            raise ConfigError(
                f"--data {args.data!r}: study {cfg.name!r} uses the embedded synthetic dataset; "
                f"set [data].name to cifar10, cifar100 or imagefolder in a study file to use local data"
            )
        from .data import DataConfig

        cfg = cfg.replace(data=DataConfig.from_dict({**cfg.data.to_dict(), "root": args.data}))
    if args.seed is not None:
        cfg = cfg.replace(seed=args.seed)
    if args.workers > 1 and (args.storage is None or storage_kind(args.storage) == "sqlite"):
        raise ConfigError(
            f"--workers {args.workers} needs a storage several processes can write at once: "
            f"--storage journal:{Path(args.reports_dir, cfg.name, 'journal.log').as_posix()} (one machine or a "
            f"shared filesystem) or --storage postgresql://USER@HOST/DB (any number of machines); "
            f"SQLite takes one writer at a time"
        )
    if args.dry_run:
        refs = ", ".join(cfg.references) or "none"
        print(
            f"study {cfg.name} ({cfg.path})\n  space {cfg.space.name} (hash {cfg.space.hash}, "
            f"{cfg.space.size()} architectures)\n  references: {refs}\n  data: {cfg.data.to_dict()}\n"
            f"  train: {cfg.train.to_dict()}\n  measure: {cfg.measure.to_dict()}\n"
            f"  sampler: {cfg.sampler.name}, seed {cfg.seed}, trials {args.n_trials or cfg.n_trials}\n"
            f"  storage: {redact_url(args.storage or default_storage(cfg, Path(args.reports_dir)))}\n"
            f"  workers: {args.workers}\n"
            "dry run: nothing was trained or written"
        )
        return 0
    common = dict(
        storage=args.storage, n_trials=args.n_trials, timeout=args.timeout, device=args.device,
        reports_dir=args.reports_dir, progress=not args.no_progress,
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
    )
    failed = 0
    if args.worker_index is not None:
        return 130 if run_search(cfg, role="worker", **common).interrupted else 0
    if args.workers > 1:
        failed = _run_workers(cfg, args, common)
        if failed == 130:
            return 130
    result = run_search(cfg, role="finalize" if args.workers > 1 else "all", **common)
    print(f"\nPareto front of {cfg.name!r} beside the references (* = on the front):")
    print(pareto_table(result.pareto))
    print(f"\nresults: {result.out_dir}/trials.csv, pareto.csv, checkpoints/")
    print(f"report: {result.out_dir}/index.html (python -m repvgg_nas.report --study {cfg.name} to refresh)")
    if failed:
        return failed
    return 130 if result.interrupted else 0


def _run_workers(cfg: StudyConfig, args: argparse.Namespace, common: dict[str, Any]) -> int:
    """``--workers N``: prepare the study once, run N worker processes, return 0, 1 (a worker failed) or 130.

    The parent creates the study (so the references are queued exactly once)
    and re-queues trials interrupted by an earlier Ctrl-C before any worker
    starts; the workers then only run trials. The caller writes the outputs.
    """
    study, shown = connect(cfg, args.storage, args.reports_dir, heartbeat_interval=args.heartbeat_interval,
                           grace_period=args.grace_period)
    recover_interrupted(study, running=not has_heartbeat(study._storage))
    base = [sys.executable, "-m", "repvgg_nas.search", "--study", args.study, "--storage", args.storage,
            "--reports-dir", str(args.reports_dir), "--heartbeat-interval", str(args.heartbeat_interval)]
    for flag, value in (("--n-trials", args.n_trials), ("--timeout", args.timeout), ("--device", args.device),
                        ("--data", args.data), ("--seed", args.seed), ("--grace-period", args.grace_period)):
        if value is not None:
            base += [flag, str(value)]
    if args.no_progress:
        base.append("--no-progress")
    gpus = visible_gpus() if (args.device or cfg.measure.device) != "cpu" else []
    commands = [[*base, "--worker-index", str(i)] for i in range(args.workers)]
    envs = [worker_env(i, gpus) for i in range(args.workers)]
    pinned = f", one GPU each of {','.join(gpus)}" if len(gpus) > 1 else ""
    shown_cmd = [shown if a == args.storage else a for a in commands[0][:-2]]  # no password on screen
    _say(f"starting {args.workers} workers on {shown}{pinned}: {shlex.join(shown_cmd)}", True)
    try:
        codes = launch_workers(commands, envs)
    except KeyboardInterrupt:
        _say("interrupted: workers stopped; completed trials are saved; run the same command again to resume", True)
        return 130
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, c in bad:
        how = f"was killed by {signal.Signals(-c).name}" if c < 0 else f"exited with code {c}"
        _say(f"worker {i} {how}; trials it was running are retried by the others or by the next run", True)
    if bad and all(c == 130 for _, c in bad):
        return 130
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
