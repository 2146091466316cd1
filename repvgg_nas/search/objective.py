"""One trial of the search: the spine of the data flow.

sample a spec -> train the train-form net briefly on proxy data -> fuse ->
record the fused/unfused error -> evaluate the deploy net -> measure its
throughput (cached by spec) -> report (accuracy, images/s) to Optuna with
the figures as user attrs, and keep the deploy checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import optuna
import torch

from ..attrs import (
    ACCURACY, ADMITTED, ARCH, DEVICE, DUPLICATE, DUPLICATE_OF, FAIL_REASON, FINAL_LOSS, FUSION_ERROR,
    INTERRUPTED, LATENCY_MS, MACS, MEASURE_CACHED, MEASURE_EXCLUSIVE, PARAMS, PHASE_SECONDS, PRUNE_REASON,
    REFERENCE, RETRY_OF, SPEC, SPEC_HASH, SURPLUS, THROUGHPUT_IQR, TRAIN_IMAGES_PER_S, TRAIN_SECONDS, WORKER,
    WORKER_START, arch_key,
)
from ..attrs import MEASURE_CONTENDED, OTHER_LOAD, REPEAT_OF, THROUGHPUT_CV, TRAIN_EPOCHS, TRAIN_SEED, VAL_SIZE
from ..attrs import FLOAT_ACCURACY, PRECISION, RUNG_STOPPED, RUNTIME
from ..checkpoint import save_checkpoint
from ..counting import complexity
from ..data import DataBundle
from ..layout import StudyPaths
from ..evaluation import runtime_accuracy
from ..measure import RUNTIMES, ThroughputCache, measure_spec
from ..model import FusionMismatchError, check_fusion, fusion_error, reparameterize
from ..storage import FIXED_PARAMS
from ..train import DivergenceError, StepCallback, evaluate, init_model, train
from .events import EventCallback
from .launch import current_worker
from .locks import DeviceLock
from .rungs import TimeBudgetPaused, climb, discard_paused, out_of_time, record_top
from .slots import admission, repeat_taken
from ..study import StudyConfig

__all__ = ["ARCH_DIMENSIONS", "failure_reason"]

TrialState = optuna.trial.TrialState
ARCH_DIMENSIONS = ("a", "b", "groupwise", "g", "block")  # recorded as arch_<dim> on every trial

# Attrs that describe a trial's own run, never copied from a completed twin.
_OWN_ATTRS = (REFERENCE, RETRY_OF, DUPLICATE_OF, WORKER, WORKER_START, ADMITTED, SURPLUS)


class _QuietPauses(logging.Filter):
    """Drops Optuna's two warnings for a trial cut short by the time budget or by Ctrl-C ("Trial N failed ...
    because of the following error" with its traceback, then "Trial N failed with value None."): an
    expected end of the run, which the trial's own line or the CLI's "interrupted" line already says, and
    which the trial records (``fail_reason``). Every other failure keeps its warning."""

    def __init__(self) -> None:
        super().__init__()
        self._next: str | None = None  # the start of the second warning, right after the first

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (TimeBudgetPaused, KeyboardInterrupt)):
            self._next = record.getMessage().split(" failed ", 1)[0] + " failed with value "
            return False
        follow, self._next = self._next, None
        return not (follow is not None and record.getMessage().startswith(follow))


def _quiet_pauses() -> None:
    log = logging.getLogger("optuna.study._optimize")  # the logger of Optuna's trial loop
    if not any(isinstance(f, _QuietPauses) for f in log.filters):
        log.addFilter(_QuietPauses())


class _Objective:
    """The trial function; holds what every trial shares (data on device, cache, paths).

    ``target`` is the study's wanted number of search trials: a trial first
    claims a slot (:func:`slots.admission`) and, when other workers have
    filled them all, is pruned untrained as surplus. ``lock`` serializes
    throughput measurement against other local workers' training on the device; a
    climbing candidate yields it between rungs (:meth:`DeviceLock.yield_turn`).
    ``on_step`` receives the training progress of each trial, ``on_event``
    the rung decisions of a multi-fidelity search (:mod:`.rungs`); a candidate
    climbs a rung only if it would end before ``deadline`` (:func:`time.monotonic`), else pauses for the
    next run (or stops, when the rung needs more than the run's whole ``budget`` of seconds).
    """

    def __init__(
        self, cfg: StudyConfig, data: DataBundle, device: torch.device, cache: ThroughputCache,
        paths: StudyPaths, on_step: StepCallback | None = None, target: int | None = None,
        lock: DeviceLock | None = None, on_event: EventCallback | None = None, deadline: float | None = None,
        budget: float | None = None,
    ) -> None:
        self.cfg, self.data, self.device, self.cache = cfg, data, device, cache
        self.paths, self.on_step, self.on_event = paths, on_step, on_event
        self.target = target if target is not None else cfg.n_trials
        self.lock = lock if lock is not None else DeviceLock(device)
        self.worker = current_worker()
        self.deadline, self.budget = deadline, budget
        _quiet_pauses()

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        try:
            out = self._run(trial)
        except optuna.TrialPruned:
            self._discard_paused(trial)
            raise
        except KeyboardInterrupt:  # a paused rung net stays on disk: the retry continues it
            trial.set_user_attr(FAIL_REASON, f"{INTERRUPTED}: Ctrl-C")
            raise
        except TimeBudgetPaused as e:  # cut short by the time budget, as by Ctrl-C: the next run continues it
            trial.set_user_attr(FAIL_REASON, f"{INTERRUPTED}: {e}")
            raise
        except Exception as e:
            self._discard_paused(trial)
            trial.set_user_attr(FAIL_REASON, failure_reason(e))
            if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            raise
        self._discard_paused(trial)
        return out

    def _score(self, deploy: torch.nn.Module) -> tuple[float, float | None]:
        """(the accuracy objective, the float accuracy when they differ): under a quantized runtime the
        objective is the quantized net's accuracy in that runtime."""
        acc = evaluate(deploy, self.data, self.device)
        if not RUNTIMES.get(self.cfg.measure.runtime).quantized:
            return acc, None
        return runtime_accuracy(deploy, self.data, self.cfg.measure.runtime, threads=self.cfg.measure.threads), acc

    def _discard_paused(self, trial: optuna.Trial) -> None:
        if self.cfg.fidelity.multi and self.cfg.fidelity.mode == "continue" and not trial.user_attrs.get(SURPLUS):
            discard_paused(self.paths, trial)  # a surplus retry shares its slot's paused net with the live one

    def _claim_slot(self, trial: optuna.Trial) -> None:
        """Record who runs the trial, then take a slot or prune it as surplus (untrained)."""
        trial.set_user_attr(WORKER, self.worker.name)
        if self.worker.start is not None:
            trial.set_user_attr(WORKER_START, self.worker.start)
        trials = trial.study.get_trials(deepcopy=False)
        if trial.user_attrs.get(REPEAT_OF) is not None:  # a linked re-training: no search slot
            why = repeat_taken(trial.number, trials)
            if why is None:
                trial.set_user_attr(ADMITTED, True)
                return
            trial.set_user_attr(SURPLUS, why)
            raise optuna.TrialPruned(f"{SURPLUS}: {why}")
        why = admission(trial.number, trials, self.target)
        if why is None:
            trial.set_user_attr(ADMITTED, True)
            return
        trial.set_user_attr(SURPLUS, why)
        fixed = next((t.system_attrs.get(FIXED_PARAMS) for t in trials if t.number == trial.number), None)
        if fixed is not None and trial.user_attrs.get(RETRY_OF) is None and not why.startswith(DUPLICATE):
            # A queued trial (a reference) that lost the race keeps its place for a longer run.
            keep = {k: v for k, v in trial.user_attrs.items() if k == REFERENCE}
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
        for k in ARCH_DIMENSIONS:
            dim = getattr(cfg.space, k)
            trial.set_user_attr(arch_key(k), p.get(k, dim.choices[0] if dim.fixed else None))
        trial.set_user_attr(SPEC, spec.to_dict())
        trial.set_user_attr(SPEC_HASH, spec.hash)
        trial.set_user_attr(ARCH, spec.summary())
        linked = trial.user_attrs.get(REPEAT_OF) is not None
        # A reference always climbs, and a retry carries on its own climb: neither copies a stopped twin's fate.
        may_stop = not (trial.user_attrs.get(REFERENCE) or trial.user_attrs.get(RETRY_OF) is not None)
        twin = None if linked else _finished_twin(trial, spec.hash, stopped=may_stop)
        if twin is not None:
            # Same architecture, same seed, same budget: training it again would only cost time.
            for k, v in twin.user_attrs.items():
                if k not in _OWN_ATTRS and k not in trial.user_attrs:
                    trial.set_user_attr(k, v)
            trial.set_user_attr(DUPLICATE_OF, twin.number)
            if twin.state == TrialState.PRUNED:  # stopped at a rung: so is its duplicate
                raise optuna.TrialPruned(str(twin.user_attrs.get(PRUNE_REASON)))
            return twin.values[0], twin.values[1]
        cx = complexity(spec, resolution=cfg.measure.resolution)
        trial.set_user_attr(PARAMS, cx.params)
        trial.set_user_attr(MACS, cx.macs)
        lap("sample")

        if ThroughputCache.key(spec, cfg.measure) in self.cache:
            meas = measure_spec(spec, cfg.measure, self.cache)
        else:  # alone on the device: no other local worker trains while this one measures
            with self.lock.exclusive() as alone:
                meas = measure_spec(spec, cfg.measure, self.cache)
            trial.set_user_attr(MEASURE_EXCLUSIVE, alone)
        trial.set_user_attr(LATENCY_MS, meas.latency_ms)
        trial.set_user_attr(THROUGHPUT_IQR, meas.images_per_s_iqr)
        trial.set_user_attr(THROUGHPUT_CV, meas.robust_cv)
        trial.set_user_attr(MEASURE_CONTENDED, meas.contended)
        trial.set_user_attr(OTHER_LOAD, meas.env.get("other_cpu_load"))
        trial.set_user_attr(MEASURE_CACHED, meas.cached)
        trial.set_user_attr(DEVICE, meas.env.get("device_name"))
        trial.set_user_attr(RUNTIME, cfg.measure.runtime)
        trial.set_user_attr(PRECISION, cfg.measure.precision)
        lap("measure")
        for name, value in cfg.objectives.limits.constraints(meas.images_per_s, cx.params, cx.macs).items():
            trial.set_constraint(name, value)
        broken = cfg.objectives.limits.violations(meas.images_per_s, cx.params, cx.macs)
        if broken:
            trial.set_user_attr(PRUNE_REASON, "; ".join(broken))
            raise optuna.TrialPruned("; ".join(broken))

        with self.lock.shared():  # device compute; a measurement elsewhere waits for it
            seed, budget = trial.user_attrs.get(TRAIN_SEED), trial.user_attrs.get(TRAIN_EPOCHS)
            train_cfg = cfg.train
            if seed is not None:  # an extra-seed repeat: other initial weights and another shuffle
                train_cfg = dataclasses.replace(train_cfg, seed=int(seed))
            if budget is not None:  # a long re-training
                train_cfg = dataclasses.replace(train_cfg, epochs=int(budget))
            init_seed = cfg.seed if seed is None else int(seed)
            lap("build")
            climbing = cfg.fidelity.multi and not linked  # linked re-trainings take their whole budget at once
            if climbing:
                model, result = climb(
                    trial, spec, meas.images_per_s, fidelity=cfg.fidelity, train_cfg=train_cfg, init_seed=init_seed,
                    data=data, device=self.device, paths=self.paths, score=self._score, on_step=self.on_step,
                    on_event=self.on_event, deadline=self.deadline, budget=self.budget,
                    pause=self.lock.yield_turn,
                )
            else:
                model = init_model(spec, seed=init_seed, device=self.device)
                result = train(model, data, train_cfg, self.device, progress=self.on_step, desc=f"trial {trial.number}")
            trial.set_user_attr(TRAIN_SECONDS, result.seconds)
            trial.set_user_attr(TRAIN_IMAGES_PER_S, result.images_per_second)
            trial.set_user_attr(FINAL_LOSS, result.final_loss)
            lap("train")
            deploy = reparameterize(model)
            try:
                err = check_fusion(model, deploy, resolution=data.resolution)
            except FusionMismatchError:  # record the error of the failed net too (seeded: same value)
                trial.set_user_attr(FUSION_ERROR, fusion_error(model, deploy, resolution=data.resolution))
                raise
            trial.set_user_attr(FUSION_ERROR, err)
            lap("fuse")
            acc, float_acc = self._score(deploy)
            if float_acc is not None:  # the front of what ships: the INT8 net's accuracy, the float one kept
                trial.set_user_attr(FLOAT_ACCURACY, float_acc)
            if climbing:
                record_top(trial, cfg.fidelity, train_cfg.epochs, acc, float_acc, meas.images_per_s, result.seconds)
        trial.set_user_attr(ACCURACY, acc)
        trial.set_user_attr(VAL_SIZE, data.val_size)
        lap("evaluate")
        save_checkpoint(
            self.paths.checkpoint(trial.number),
            deploy,
            spec,
            meta={
                "study": cfg.name, "trial": trial.number, "accuracy": acc,
                "throughput": meas.images_per_s, "reference": trial.user_attrs.get(REFERENCE),
                "data": cfg.data.to_dict(),
            },
        )
        lap("checkpoint")
        trial.set_user_attr(PHASE_SECONDS, phases)
        return acc, meas.images_per_s


def _finished_twin(trial: optuna.Trial, spec_hash: str, stopped: bool = True) -> optuna.trial.FrozenTrial | None:
    """An earlier search trial of the same architecture that completed or else (``stopped``) was stopped
    at a rung by a result that dominates it; a completed one is preferred. A stop by the time budget says
    nothing about the architecture: such a twin is not copied, the candidate trains again."""
    twins = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
             if t.user_attrs.get(SPEC_HASH) == spec_hash and t.user_attrs.get(REPEAT_OF) is None]
    done = [t for t in twins if t.state == TrialState.COMPLETE]
    if done:
        return done[0]
    if stopped:
        return next((t for t in twins if str(t.user_attrs.get(PRUNE_REASON, "")).startswith(RUNG_STOPPED)
                     and not out_of_time(t)), None)
    return None


def failure_reason(e: BaseException) -> str:
    """The ``fail_reason`` recorded for a trial (or a pruning) that raised ``e``: one line."""
    if isinstance(e, DivergenceError):
        return f"diverged: {e}"
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return f"out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:500]
