"""One trial of the search: the spine of the data flow.

sample a spec -> measure it (every measured objective, from the table) ->
train the train-form net briefly on proxy data (rung by rung in a
multi-fidelity study) -> fuse -> record the fused/unfused error ->
evaluate the deploy net -> return the objective values, with the figures as
user attrs, and keep the deploy checkpoint.

:class:`TrialRunner` only returns values or raises (:mod:`.ends`); how a
trial ended is decided and recorded by the worker loop (:mod:`.loop`).
Training, scoring and measuring reach it as callables (:class:`TrialTools`,
the real ones by default), so tests pass fakes instead of patching modules.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch

from .. import lifecycle
from ..attrs import (
    ACCURACY, ARCH, ARCH_DIMENSIONS, DEVICE, DUPLICATE_OF, FINAL_LOSS, FUSION_ERROR, LATENCY_MS, MACS, MEASURE_CACHED,
    MEASURE_EXCLUSIVE, OUTCOME, PARAMS, PHASE_SECONDS, PRUNE_REASON, REFERENCE, RETRY_OF, ROLE, SPEC, SPEC_HASH,
    THROUGHPUT_IQR, TRAIN_IMAGES_PER_S, TRAIN_SECONDS, WORKER, WORKER_START, arch_key,
)
from ..attrs import ADMITTED, MEASURE_CONTENDED, OTHER_LOAD, THROUGHPUT_CV, TRAIN_EPOCHS, TRAIN_SEED, VAL_SIZE
from ..attrs import FLOAT_ACCURACY, PRECISION, RUNTIME
from ..attrs import EXPECTED_GAIN, PREDICTED_ACCURACY, PREDICTED_ACCURACY_SD
from ..attrs import PREDICTED_IMAGES_PER_S, REFERENCE_CACHED, REPEAT_OF, ZERO_COST
from ..checkpoint import save_checkpoint
from ..counting import Complexity, complexity
from ..data import DataBundle
from ..evaluation import runtime_accuracy
from ..layout import StudyPaths
from ..lifecycle import Outcome
from ..measure import RUNTIMES, MeasureMany, Measurement, ThroughputCache, measure_spec, measure_specs
from ..model import FusionMismatchError, check_fusion, fusion_error, reparameterize
from ..objectives import Measured, measured_values, trial_values
from ..prescreen import Pool, PoolSampler
from ..spec import RepVGGSpec
from ..study import StudyConfig
from ..train import StepCallback, TrainConfig, TrainResult, evaluate, init_model, train
from .ends import Stopped
from .events import EventCallback
from .launch import current_worker
from .locks import DeviceLock
from .refcache import CACHED_FIGURES, CachedReference, ReferenceCache, reference_key
from .rungs import Climber, discard_paused, record_top
from .screening import POOL_RANK, pool_member

__all__ = ["TrialRunner", "TrialTools"]

TrialState = optuna.trial.TrialState

# Attrs that describe a trial's own run, never copied from a completed twin.
_OWN_ATTRS = (REFERENCE, RETRY_OF, DUPLICATE_OF, WORKER, WORKER_START, ADMITTED, ROLE, OUTCOME)


@dataclass(frozen=True)
class TrialTools:
    """The work a trial does, as callables with the real functions' signatures: ``train`` (and ``init_model``)
    the proxy training, ``evaluate`` and ``runtime_accuracy`` the scoring, ``measure`` one net's throughput
    (through the cache), ``measure_lockstep`` several nets' together (the final re-measurement)."""

    train: Callable[..., TrainResult] = train
    init_model: Callable[..., torch.nn.Module] = init_model
    evaluate: Callable[..., float] = evaluate
    runtime_accuracy: Callable[..., float] = runtime_accuracy
    measure: Callable[..., Measurement] = measure_spec
    measure_lockstep: MeasureMany = measure_specs


class _Laps:
    """Seconds spent in each phase of a trial (``phase_seconds``)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.tick = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self.tick, 4)
        self.tick = now


@dataclass
class TrialRunner:
    """The trial pipeline; holds what every trial of a run shares (data on device, cache, paths, tools).

    Called by the worker loop (:func:`.loop.run_trial`) with a trial it has
    asked for: returns the objective values in the study's table order or
    raises. ``lock`` serializes throughput measurement against other local
    workers' training on the device; a climbing candidate yields it between
    rungs (:meth:`DeviceLock.yield_turn`). ``on_step`` receives the training
    progress of each trial, ``on_event`` the rung decisions of a
    multi-fidelity search (:mod:`.rungs`); a candidate climbs a rung only if
    it would end before ``deadline`` (:func:`time.monotonic`), else pauses for
    the next run (or stops, when the rung needs more than the run's whole
    ``budget`` of seconds). ``retrain_references``: train references even when
    the reference cache holds them (then keep them anew).
    """

    cfg: StudyConfig
    data: DataBundle
    device: torch.device
    cache: ThroughputCache
    paths: StudyPaths
    tools: TrialTools = field(default_factory=TrialTools)
    on_step: StepCallback | None = None
    on_event: EventCallback | None = None
    deadline: float | None = None
    budget: float | None = None
    pool: Pool | None = None
    references: ReferenceCache | None = None
    retrain_references: bool = False
    lock: DeviceLock | None = None

    def __post_init__(self) -> None:
        if self.lock is None:
            self.lock = DeviceLock(self.device)
        self.worker = current_worker()

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        laps = _Laps()
        spec = self._sample(trial)
        copied = self._copy_twin(trial, spec)
        if copied is not None:
            return copied
        cx = complexity(spec, resolution=self.cfg.measure.resolution)
        trial.set_user_attr(PARAMS, cx.params)
        trial.set_user_attr(MACS, cx.macs)
        laps("sample")
        images_per_s = self._measure(trial, spec)
        laps("measure")
        self._check_limits(trial, images_per_s, cx)
        assert self.lock is not None
        with self.lock.shared():  # device compute; a measurement elsewhere waits for it
            acc, deploy = self._trained(trial, spec, images_per_s, laps)
        trial.set_user_attr(ACCURACY, acc)
        trial.set_user_attr(VAL_SIZE, self.data.val_size)
        laps("evaluate")
        self._checkpoint(trial, deploy, spec, acc, images_per_s)
        laps("checkpoint")
        trial.set_user_attr(PHASE_SECONDS, laps.phases)
        return trial_values(self.cfg.objectives.table, trial.user_attrs)

    def release(self, trial: optuna.Trial, how: Outcome) -> None:
        """Once the loop knows how the trial ended: drop the candidate's rung checkpoint, unless the run was
        cut short (paused, Ctrl-C), when the retry continues from it."""
        if how in (Outcome.PAUSED, Outcome.INTERRUPTED):
            return
        if self.cfg.fidelity.multi and self.cfg.fidelity.mode == "continue":
            discard_paused(self.paths, trial)

    def _score(self, deploy: torch.nn.Module) -> tuple[float, float | None]:
        """(the accuracy objective, the float accuracy when they differ): under a quantized runtime the
        objective is the quantized net's accuracy in that runtime."""
        acc = self.tools.evaluate(deploy, self.data, self.device)
        if not RUNTIMES.get(self.cfg.measure.runtime).quantized:
            return acc, None
        runtime, threads = self.cfg.measure.runtime, self.cfg.measure.threads
        return self.tools.runtime_accuracy(deploy, self.data, runtime, threads=threads), acc

    def _trained(self, trial: optuna.Trial, spec: RepVGGSpec, images_per_s: float,
                 laps: _Laps) -> tuple[float, torch.nn.Module]:
        """The accuracy objective and the deploy net: a reference trained before (the cache), else trained
        now, fused and scored (a reference is then kept for the next study)."""
        key = self._reference_key(trial, spec)
        reuse = key is not None and self.references is not None and not self.retrain_references
        cached = self.references.get(key, spec, self.device) if reuse else None
        if cached is not None:
            return self._reuse(trial, cached, images_per_s, laps)
        model, train_cfg, result, climbing = self._train(trial, spec, images_per_s, laps)
        acc, float_acc, deploy = self._fuse_and_score(trial, model, laps)
        if climbing:
            record_top(trial, self.cfg.fidelity, train_cfg.epochs, acc, float_acc, images_per_s, result.seconds)
        if key is not None and self.references is not None:
            self.references.put(key, deploy, spec, {k: trial.user_attrs[k] for k in CACHED_FIGURES})
        return acc, deploy

    def _reference_key(self, trial: optuna.Trial, spec: RepVGGSpec) -> str | None:
        """The reference-cache key of a reference trained at the proxy budget (None for any other trial,
        and in continue mode, where a reference's lower rungs are yardsticks the cache does not hold)."""
        cfg = self.cfg
        if lifecycle.role(trial) != lifecycle.Role.REFERENCE or lifecycle.is_linked(trial):
            return None
        if cfg.fidelity.multi and cfg.fidelity.mode == "continue":
            return None
        return reference_key(spec, self.data.fingerprint, cfg.train, cfg.seed, augment=self.data.augment,
                             hflip=self.data.hflip, device=self.device)

    def _reuse(self, trial: optuna.Trial, cached: CachedReference, images_per_s: float,
               laps: _Laps) -> tuple[float, torch.nn.Module]:
        """Take a cached reference's trained net: its training figures are the run that made it; its
        accuracy is scored again here (the quantized net's under a quantized runtime)."""
        laps("build")
        for k, v in cached.figures.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr(REFERENCE_CACHED, str(cached.path))
        laps("train")
        acc, float_acc = self._score(cached.model)
        if float_acc is not None:
            trial.set_user_attr(FLOAT_ACCURACY, float_acc)
        if self.cfg.fidelity.multi:
            record_top(trial, self.cfg.fidelity, self.cfg.train.epochs, acc, float_acc, images_per_s,
                       cached.train_seconds)
        laps("fuse")
        return acc, cached.model

    def _sample(self, trial: optuna.Trial) -> RepVGGSpec:
        """Sample the trial's spec (a queued trial's fixed params, or a pool member) and record its architecture."""
        cfg = self.cfg
        if self._from_pool(trial):
            assert self.pool is not None
            member = pool_member(self.pool, trial.suggest_int(POOL_RANK, 0, len(self.pool) - 1))
            p = dict(member.params)
            spec = cfg.space.build(p, self.data.num_classes, self.data.in_channels)
            trial.set_user_attr(PREDICTED_IMAGES_PER_S, member.throughput)
            trial.set_user_attr(ZERO_COST, member.proxy)
            self._record_choice(trial)
        else:
            spec = cfg.space.sample(trial, self.data.num_classes, self.data.in_channels)
            p = trial.params
        for k in ARCH_DIMENSIONS:
            dim = getattr(cfg.space, k)
            trial.set_user_attr(arch_key(k), p.get(k, dim.choices[0] if dim.fixed else None))
        trial.set_user_attr(SPEC, spec.to_dict())
        trial.set_user_attr(SPEC_HASH, spec.hash)
        trial.set_user_attr(ARCH, spec.summary())
        return spec

    @staticmethod
    def _record_choice(trial: optuna.Trial) -> None:
        """Why the pool sampler drew this member (its posterior accuracy and expected gain), when it did."""
        sampler = trial.study.sampler
        choice = sampler.why(trial.number) if isinstance(sampler, PoolSampler) else None
        if choice is not None:
            for key, value in ((PREDICTED_ACCURACY, choice.mean), (PREDICTED_ACCURACY_SD, choice.sd),
                               (EXPECTED_GAIN, choice.gain)):
                trial.set_user_attr(key, value)

    def _from_pool(self, trial: optuna.Trial) -> bool:
        """Whether the trial's net comes from the pool: a candidate, its retries and its re-trainings do; a
        reference (and its re-trainings) keeps its paper config."""
        if self.pool is None or lifecycle.role(trial) == lifecycle.Role.REFERENCE:
            return False
        origin = trial.user_attrs.get(REPEAT_OF)
        if origin is None:
            return True
        first = next((t for t in trial.study.get_trials(deepcopy=False) if t.number == int(origin)), None)
        return first is not None and POOL_RANK in first.params

    def _copy_twin(self, trial: optuna.Trial, spec: RepVGGSpec) -> tuple[float, ...] | None:
        """The values of an earlier trial of the same architecture, seed and budget, copied onto this one
        (None: there is none, train it). A stopped twin's copy is stopped too (raises :class:`.ends.Stopped` with
        the twin's outcome)."""
        if lifecycle.is_linked(trial):
            return None
        # A reference always climbs, and a retry carries on its own climb: neither copies a stopped twin's fate.
        may_stop = not (lifecycle.role(trial) == lifecycle.Role.REFERENCE or trial.user_attrs.get(RETRY_OF) is not None)
        twin = _finished_twin(trial, spec.hash, stopped=may_stop)
        if twin is None:
            return None
        for k, v in twin.user_attrs.items():
            if k not in _OWN_ATTRS and k not in trial.user_attrs:
                trial.set_user_attr(k, v)
        trial.set_user_attr(DUPLICATE_OF, twin.number)
        how = lifecycle.outcome(twin)
        if twin.state == TrialState.PRUNED:  # stopped at a rung: so is its duplicate
            raise Stopped(how or Outcome.STOPPED, str(twin.user_attrs.get(PRUNE_REASON)))
        return tuple(twin.values)

    def _measure(self, trial: optuna.Trial, spec: RepVGGSpec) -> float:
        """Measure the net (cached by spec; alone on the device when measured afresh) and record every measured
        objective (:func:`repvgg_nas.objectives.measured_values`) with the measurement's figures; return its
        images/s."""
        cfg = self.cfg
        assert self.lock is not None
        if ThroughputCache.key(spec, cfg.measure) in self.cache:
            meas = self.tools.measure(spec, cfg.measure, self.cache)
        else:  # alone on the device: no other local worker trains while this one measures
            with self.lock.exclusive() as alone:
                meas = self.tools.measure(spec, cfg.measure, self.cache)
            trial.set_user_attr(MEASURE_EXCLUSIVE, alone)
        figures = {LATENCY_MS: meas.latency_ms, THROUGHPUT_IQR: meas.images_per_s_iqr, THROUGHPUT_CV: meas.robust_cv,
                   MEASURE_CONTENDED: meas.contended, OTHER_LOAD: meas.env.get("other_cpu_load"),
                   MEASURE_CACHED: meas.cached, DEVICE: meas.env.get("device_name"), RUNTIME: cfg.measure.runtime,
                   PRECISION: cfg.measure.precision}
        figures.update(measured_values(cfg.objectives.table, Measured(spec, cfg.measure, meas)))
        for key, value in figures.items():
            trial.set_user_attr(key, value)
        return meas.images_per_s

    def _check_limits(self, trial: optuna.Trial, images_per_s: float, cx: Complexity) -> None:
        """Record the constraint values; prune the trial untrained when it breaks a limit."""
        objectives = self.cfg.objectives
        for name, value in objectives.limits.constraints(images_per_s, cx.params, cx.macs).items():
            trial.set_constraint(name, value)
        broken = objectives.limits.violations(images_per_s, cx.params, cx.macs)
        if broken:
            raise Stopped(Outcome.LIMIT, "; ".join(broken))

    def _train(self, trial: optuna.Trial, spec: RepVGGSpec, images_per_s: float,
               laps: _Laps) -> tuple[torch.nn.Module, TrainConfig, TrainResult, bool]:
        """Train the net: a linked re-training with its own seed or budget, a candidate rung by rung
        (multi-fidelity), any other at the proxy budget. Returns (model, its budget, result, climbed)."""
        cfg = self.cfg
        seed, budget = trial.user_attrs.get(TRAIN_SEED), trial.user_attrs.get(TRAIN_EPOCHS)
        train_cfg = cfg.train
        if seed is not None:  # an extra-seed repeat: other initial weights and another shuffle
            train_cfg = dataclasses.replace(train_cfg, seed=int(seed))
        if budget is not None:  # a long re-training
            train_cfg = dataclasses.replace(train_cfg, epochs=int(budget))
        init_seed = cfg.seed if seed is None else int(seed)
        laps("build")
        climbing = cfg.fidelity.multi and not lifecycle.is_linked(trial)  # linked ones train their whole budget
        if climbing:
            model, result = self._climber().climb(trial, spec, images_per_s, train_cfg, init_seed)
        else:
            model = self.tools.init_model(spec, seed=init_seed, device=self.device)
            result = self.tools.train(model, self.data, train_cfg, self.device, progress=self.on_step,
                                      desc=f"trial {trial.number}")
        trial.set_user_attr(TRAIN_SECONDS, result.seconds)
        trial.set_user_attr(TRAIN_IMAGES_PER_S, result.images_per_second)
        trial.set_user_attr(FINAL_LOSS, result.final_loss)
        laps("train")
        return model, train_cfg, result, climbing

    def _climber(self) -> Climber:
        """The climb of a multi-fidelity candidate, with this run's data, tools and time budget."""
        assert self.lock is not None
        return Climber(self.cfg.fidelity, self.cfg.objectives.table, self.data, self.device, self.paths, self._score,
                       self.tools.train, self.tools.init_model, self.on_step, self.on_event, self.deadline,
                       self.budget, self.lock.yield_turn)

    def _fuse_and_score(self, trial: optuna.Trial, model: torch.nn.Module,
                        laps: _Laps) -> tuple[float, float | None, torch.nn.Module]:
        """Fuse the trained net, record the fusion error (raising on a mismatch) and score the deploy net."""
        resolution = self.data.resolution
        deploy = reparameterize(model)
        try:
            err = check_fusion(model, deploy, resolution=resolution)
        except FusionMismatchError:  # record the error of the failed net too (seeded: same value)
            trial.set_user_attr(FUSION_ERROR, fusion_error(model, deploy, resolution=resolution))
            raise
        trial.set_user_attr(FUSION_ERROR, err)
        laps("fuse")
        acc, float_acc = self._score(deploy)
        if float_acc is not None:  # the front of what ships: the INT8 net's accuracy, the float one kept
            trial.set_user_attr(FLOAT_ACCURACY, float_acc)
        return acc, float_acc, deploy

    def _checkpoint(self, trial: optuna.Trial, deploy: torch.nn.Module, spec: RepVGGSpec, acc: float,
                    images_per_s: float) -> None:
        cfg = self.cfg
        save_checkpoint(self.paths.checkpoint(trial.number), deploy, spec, meta={
            "study": cfg.name, "trial": trial.number, "accuracy": acc, "throughput": images_per_s,
            "reference": trial.user_attrs.get(REFERENCE), "data": cfg.data.to_dict(),
        })


def _finished_twin(trial: optuna.Trial, spec_hash: str, stopped: bool = True) -> optuna.trial.FrozenTrial | None:
    """An earlier search trial of the same architecture that completed or else (``stopped``) was stopped
    at a rung by a result that dominates it; a completed one is preferred. A stop by the time budget says
    nothing about the architecture: such a twin is not copied, the candidate trains again."""
    twins = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
             if t.user_attrs.get(SPEC_HASH) == spec_hash and not lifecycle.is_linked(t)]
    done = [t for t in twins if lifecycle.may_be_on_front(t)]
    if done:
        return done[0]
    return next((t for t in twins if lifecycle.stopped_by_rung(t)), None) if stopped else None


