"""Study configs (``studies/*.toml``): everything one search needs, validated up front.

A study names its search space, proxy data, training budget, measurement
settings, objectives/constraints, sampler, seed, trial count and the paper's
reference configs to enqueue first. Every sub-table is validated by the
owning module's ``from_dict`` before any work starts; errors are prefixed
with the file so the user knows where to look.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from .. import attrs as A
from ..config import Override, Table, apply_overrides, blame_override, build_table, find_study, load_toml
from ..data import DataConfig
from ..errors import ConfigError, RepVGGNasError
from ..measure import MeasureSettings
from ..prune import PruneJob
from ..registry import Registry
from ..prescreen import PoolSampler, PrescreenConfig
from ..objectives import EXTRA_OBJECTIVES, Objective, objectives_for
from ..stats import DEFAULT_EQUIVALENCE_POINTS, PRIOR_SEED_STD
from .promotion import PROMOTION_RULES
from ..train import TrainConfig
from .. import zoo
from .space import SearchSpace, load_space

__all__ = [
    "LIMIT_KEYS", "Limits", "Objectives", "SamplerConfig", "StudyConfig", "SAMPLERS", "TrustConfig", "FidelityConfig", "FIDELITY_MODES",
    "load_study_config",
]

STUDY_KEYS = (
    "description", "space", "seed", "n_trials", "timeout", "references",
    "data", "train", "measure", "objectives", "sampler", "prune", "trust", "fidelity", "prescreen",
)


LIMIT_KEYS = ("min_throughput", "max_params_m", "max_gmacs")


@dataclass(frozen=True)
class Limits:
    """Optional limits on a net, known before training: each becomes an Optuna constraint
    (``Trial.set_constraint``), which the samplers read, and a trial that breaks one is pruned untrained.
    They are not objectives: nothing is optimized toward them."""

    min_throughput: float | None = None
    max_params_m: float | None = None
    max_gmacs: float | None = None

    def constraints(self, throughput: float, params: int, macs: int) -> dict[str, float]:
        """Optuna constraint values (<= 0 is feasible), one per configured limit."""
        out = {}
        if self.min_throughput is not None:
            out["min_throughput"] = self.min_throughput - throughput
        if self.max_params_m is not None:
            out["max_params_m"] = params / 1e6 - self.max_params_m
        if self.max_gmacs is not None:
            out["max_gmacs"] = macs / 1e9 - self.max_gmacs
        return out

    def violations(self, throughput: float, params: int, macs: int) -> list[str]:
        """Readable text for every broken limit (empty when feasible)."""
        shown = {"min_throughput": f"throughput {throughput:.0f} img/s", "max_params_m": f"params {params / 1e6:.2f}M",
                 "max_gmacs": f"GMACs {macs / 1e9:.2f}"}
        return [
            f"{shown[k]} breaks {k} = {getattr(self, k):g}"
            for k, v in self.constraints(throughput, params, macs).items()
            if v > 0
        ]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in LIMIT_KEYS if getattr(self, k) is not None}


@dataclass(frozen=True)
class Objectives:
    """The ``[objectives]`` table: what the study optimizes and the limits it keeps.

    Accuracy and measured images/s are always optimized; ``extra`` names
    optional objectives of :data:`repvgg_nas.objectives.EXTRA_OBJECTIVES`
    (``["peak_memory_mb"]``), in the order their values follow. :attr:`table`
    is the objective table every layer reads.
    """

    extra: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_table(cls, t: Table) -> Objectives:
        raw = t.get("extra", list, [])
        extra = []
        for i, name in enumerate(raw):
            if not isinstance(name, str) or name not in EXTRA_OBJECTIVES:
                raise t.error(f"extra[{i}]", f"{name!r} is not an extra objective; choose from "
                              f"{EXTRA_OBJECTIVES.list()}")
            canonical = EXTRA_OBJECTIVES.canonical(name)
            if canonical not in extra:
                extra.append(canonical)
        limits = Limits(**{k: t.get(k, float, None, min=0.0) for k in LIMIT_KEYS})
        t.finish(("extra", *LIMIT_KEYS))
        return cls(tuple(extra), limits)

    @property
    def table(self) -> tuple[Objective, ...]:
        """The study's objectives in the order of a trial's values."""
        return objectives_for(self.extra)

    def to_dict(self) -> dict[str, Any]:
        return {**self.limits.to_dict(), "extra": list(self.extra)}


def _nsga2(cfg: SamplerConfig, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(population_size=cfg.population_size, seed=seed)


def _tpe(cfg: SamplerConfig, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        n_startup_trials=cfg.n_startup_trials, seed=seed, multivariate=True
    )


def _gp(cfg: SamplerConfig, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(n_startup_trials=cfg.n_startup_trials, seed=seed)


def _random(cfg: SamplerConfig, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _pool(cfg: SamplerConfig, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return PoolSampler(space, seed=seed)


SAMPLERS: Registry[Callable[[Any, int, SearchSpace], optuna.samplers.BaseSampler]] = Registry("sampler")
SAMPLERS.register("nsga2", _nsga2)
SAMPLERS.register("tpe", _tpe)
SAMPLERS.register("gp", _gp)
SAMPLERS.register("random", _random)
SAMPLERS.register("pool", _pool)  # a pooled study's: expected hypervolume gain under an accuracy model


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "nsga2"
    population_size: int = 8
    n_startup_trials: int = 6

    @classmethod
    def from_table(cls, t: Table) -> SamplerConfig:
        name = t.get("name", str, "nsga2", choices=SAMPLERS.list())
        kw = dict(
            name=name,
            population_size=t.get("population_size", int, 8, min=2),
            n_startup_trials=t.get("n_startup_trials", int, 6, min=0),
        )
        t.finish(("name", "population_size", "n_startup_trials"))
        return cls(**kw)

    def build(self, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
        return SAMPLERS.get(self.name)(self, seed, space)


# ---- [fidelity]: rungs of the training budget ---------------------------------------------
FIDELITY_MODES = ("continue", "retrain")


@dataclass(frozen=True)
class FidelityConfig:
    """Multi-fidelity search: the rungs of the training budget and how candidates climb them.

    Rung ``k`` of ``rungs`` trains ``train.epochs / reduction_factor ** (rungs - 1 - k)``
    epochs (rounded, at least 1), so the top rung is the full proxy budget.
    Every candidate is trained to the lowest rung; it goes on to the next only
    while no result at the same rung dominates it (rung accuracy and measured
    throughput, :mod:`repvgg_nas.search.rungs`). References always climb to the top.
    ``mode``: ``retrain`` (the default) trains a promoted candidate afresh at
    each rung's budget, a complete schedule per rung; ``continue`` trains it
    on from where its rung stopped, within the full budget's schedule (cheaper
    for a climber, but a rung accuracy read at the schedule's peak learning
    rate ranks candidates worse: Kendall tau +0.29 vs +0.86 at rung 1 in
    benchmarks/multifidelity_cpu.md).
    ``rungs = 1`` is the single-fidelity search: every candidate gets the full budget.
    ``stop_sigmas``: 0 stops a candidate on plain dominance; above 0 the
    result that stops it must also be more accurate by more than that many
    combined binomial standard errors of the validation set (at least as
    fast), so a rung accuracy gap inside that noise lets both climb.
    ``rule``: the promotion rule, a name in
    :data:`repvgg_nas.study.promotion.PROMOTION_RULES` (``dominance``, the
    default, as above; ``none`` lets every candidate climb to the top).
    """

    rungs: int = 3
    reduction_factor: int = 3
    mode: str = "retrain"
    stop_sigmas: float = 0.0
    rule: str = "dominance"

    KEYS = ("rungs", "reduction_factor", "mode", "stop_sigmas", "rule")

    @classmethod
    def from_table(cls, t: Table, train_epochs: int) -> FidelityConfig:
        kw = dict(
            rungs=t.get("rungs", int, 3, min=1, max=10),
            reduction_factor=t.get("reduction_factor", int, 3, min=2, max=100),
            mode=t.get("mode", str, "retrain", choices=FIDELITY_MODES),
            stop_sigmas=t.get("stop_sigmas", float, 0.0, min=0.0, max=10.0),
            rule=t.get("rule", str, "dominance", choices=PROMOTION_RULES.list()),
        )
        t.finish(cls.KEYS)
        out = cls(**kw)
        budgets = [_rung_epochs(train_epochs, out.reduction_factor, out.rungs, k) for k in range(out.rungs)]
        if len(set(budgets)) < len(budgets):
            raise t.error("rungs", f"{out.rungs} rungs with reduction_factor {out.reduction_factor} need more than "
                          f"train.epochs = {train_epochs} (rung budgets would be {budgets} epochs): use fewer rungs, "
                          f"a smaller reduction_factor or more epochs")
        return out

    def budgets(self, train_epochs: int) -> tuple[int, ...]:
        """Epochs of each rung, lowest first; the last is ``train_epochs``."""
        return tuple(_rung_epochs(train_epochs, self.reduction_factor, self.rungs, k) for k in range(self.rungs))

    @property
    def multi(self) -> bool:
        return self.rungs > 1

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}


def _rung_epochs(epochs: int, eta: int, rungs: int, k: int) -> int:
    return max(1, round(epochs / eta ** (rungs - 1 - k)))


# ---- [trust]: how far the front's claims can be trusted ------------------------------------
@dataclass(frozen=True)
class TrustConfig:
    """Seed repeats, a longer re-training and the claim rule (the ``[trust]`` table).

    ``seeds``: trainings per architecture (the first is the search trial itself;
    each extra one is a linked trial with another init and shuffle seed) for
    the references and the front, which is taken on mean accuracy.
    ``long_epochs``: re-train the front and the references once at this budget
    (linked trials) to check the proxy's ranking (Kendall tau) and the front.
    ``accuracy_floor``: hypervolume reference accuracy (default: the lowest
    reference's mean accuracy minus ``claim_sigmas`` standard errors).
    ``claim_sigmas``: an accuracy gap is a result only beyond this many
    combined standard errors.
    ``equivalence_points``: a front member is "as accurate" as a reference
    only when the accuracy gap ± ``claim_sigmas`` combined standard errors
    lies inside ± this many points (see :mod:`repvgg_nas.stats.claims`).
    ``prior_seed_std``: the seed-to-seed std of accuracy assumed while no
    architecture has two seeds (default 0.012, the pooled spread of the
    a_family 3-seed repeats; see :mod:`repvgg_nas.stats.noise`), so one run
    per architecture still pays for seed noise; measured seeds replace it.
    """

    seeds: int = 1
    long_epochs: int | None = None
    accuracy_floor: float | None = None
    claim_sigmas: float = 2.0
    prior_seed_std: float = PRIOR_SEED_STD
    equivalence_points: float = DEFAULT_EQUIVALENCE_POINTS

    KEYS = ("seeds", "long_epochs", "accuracy_floor", "claim_sigmas", "prior_seed_std", "equivalence_points")

    @classmethod
    def from_table(cls, t: Table, train_epochs: int) -> TrustConfig:
        kw = dict(
            seeds=t.get("seeds", int, 1, min=1, max=100),
            long_epochs=t.get("long_epochs", int, None, min=1),
            accuracy_floor=t.get("accuracy_floor", float, None, min=0.0, max=1.0),
            claim_sigmas=t.get("claim_sigmas", float, 2.0, min=0.0, max=10.0),
            prior_seed_std=t.get("prior_seed_std", float, PRIOR_SEED_STD, min=0.0, max=1.0),
            equivalence_points=t.get("equivalence_points", float, DEFAULT_EQUIVALENCE_POINTS, min=0.0, max=100.0),
        )
        if kw["long_epochs"] is not None and kw["long_epochs"] <= train_epochs:
            raise t.error("long_epochs", f"{kw['long_epochs']} must exceed train.epochs ({train_epochs}); "
                          f"leave it out for no long re-training")
        t.finish(cls.KEYS)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}


@dataclass(frozen=True)
class StudyConfig:
    name: str
    path: Path
    space: SearchSpace
    data: DataConfig
    train: TrainConfig
    measure: MeasureSettings
    objectives: Objectives = field(default_factory=Objectives)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    seed: int = 0
    n_trials: int = 12
    timeout: float | None = None  # seconds: the search's time budget per run (see run_search)
    references: tuple[str, ...] = ()
    description: str = ""
    prune: PruneJob | None = None
    trust: TrustConfig = field(default_factory=TrustConfig)
    fidelity: FidelityConfig = field(default_factory=lambda: FidelityConfig(rungs=1))
    prescreen: PrescreenConfig = field(default_factory=PrescreenConfig)

    def to_dict(self) -> dict[str, Any]:
        """What is stored with the study (for reports and for resuming)."""
        return {
            A.STUDY_NAME: self.name,
            A.STUDY_DESCRIPTION: self.description,
            A.STUDY_SPACE: self.space.name,
            A.STUDY_SPACE_HASH: self.space.hash,
            A.STUDY_SEED: self.seed,
            A.STUDY_N_TRIALS: self.n_trials,
            A.STUDY_REFERENCES: list(self.references),
            A.STUDY_DATA: self.data.to_dict(),
            A.STUDY_TRAIN: self.train.to_dict(),
            A.STUDY_MEASURE: self.measure.to_dict(),
            A.STUDY_OBJECTIVES: self.objectives.to_dict(),
            A.STUDY_SAMPLER: {"name": self.sampler.name, "population_size": self.sampler.population_size,
                        "n_startup_trials": self.sampler.n_startup_trials},
            A.STUDY_PRUNE: self.prune.to_dict() if self.prune is not None else None,
            A.STUDY_TRUST: self.trust.to_dict(),
            A.STUDY_FIDELITY: {**self.fidelity.to_dict(), "budgets": list(self.fidelity.budgets(self.train.epochs))},
            A.STUDY_PRESCREEN: self.prescreen.to_dict(),
        }

    def time_budget(self, timeout: float | None = None) -> float | None:
        """Seconds of this run's time budget: ``timeout`` when given (0: none), else the study's; None: no budget."""
        return self.timeout if timeout is None else timeout or None

    def replace(self, **changes: Any) -> StudyConfig:
        from dataclasses import replace

        return replace(self, **changes)


def load_study_config(
    name_or_path: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[Override] | None = None
) -> StudyConfig:
    """Load ``studies/NAME.toml`` (or a path) and validate every table and reference.

    ``overrides`` (dotted key -> value, or :class:`~repvgg_nas.config.Override`
    items that name the flag which set them) are applied to the raw table
    *before* validation, so ``--data PATH`` completes a study whose ``[data]``
    names a dataset but no root. An error caused by an override names its flag.
    """
    if overrides is None:
        items: list[Override] = []
    elif isinstance(overrides, Mapping):
        items = [Override(k, v, f"override {k}") for k, v in overrides.items()]
    else:
        items = list(overrides)
    try:
        return _load_study_config(name_or_path, items)
    except ConfigError as e:
        raise blame_override(e, items) from None


def _load_study_config(name_or_path: str | os.PathLike, overrides: list[Override]) -> StudyConfig:
    path = find_study(name_or_path)
    source = f"{path}: "
    t = Table(apply_overrides(load_toml(path), overrides), "", source)
    description = t.get("description", str, "")
    space = load_space(t.get("space", str))
    seed = t.get("seed", int, 0, min=0)
    n_trials = t.get("n_trials", int, 12, min=1)
    timeout = t.get("timeout", float, None, min=1.0)
    refs = t.get("references", list, [])
    references = []
    for i, r in enumerate(refs):
        if not isinstance(r, str):
            raise t.error(f"references[{i}]", f"must be a zoo name string, got {r!r}")
        try:
            entry = zoo.get_entry(r)
            space.params_for(entry)
        except RepVGGNasError as e:
            raise t.error(f"references[{i}]", str(e)) from None
        references.append(entry.name)
    data = build_table(source, "data", DataConfig.from_dict, t.get("data", dict, {}))
    train = build_table(source, "train", TrainConfig.from_dict, t.get("train", dict, {}))
    measure = build_table(source, "measure", MeasureSettings.from_dict, t.get("measure", dict, {}))
    objectives = Objectives.from_table(t.table("objectives"))
    sampler = SamplerConfig.from_table(t.table("sampler"))
    raw_prune = t.get("prune", dict, None)
    prune = build_table(source, "prune", PruneJob.from_dict, raw_prune) if raw_prune is not None else None
    trust = TrustConfig.from_table(t.table("trust"), train.epochs)
    # No [fidelity] table: the single-fidelity search (every candidate gets the full budget).
    fidelity = FidelityConfig.from_table(t.table("fidelity"), train.epochs) if t.has("fidelity") else FidelityConfig(rungs=1)
    prescreen = PrescreenConfig.from_table(t.table("prescreen"))
    if sampler.name == "pool" and not prescreen.enabled:
        raise t.error("sampler", "name = 'pool' draws from the pre-screened pool: it needs [prescreen] enabled = "
                                 "true (not --prescreen off)")
    slow = prescreen.too_slow(space.size())
    if slow is not None:
        raise t.error("prescreen.proxy", slow)
    t.finish(STUDY_KEYS)
    return StudyConfig(
        name=path.stem,
        path=path,
        space=space,
        data=data,
        train=train,
        measure=measure,
        objectives=objectives,
        sampler=sampler,
        seed=seed,
        n_trials=n_trials,
        timeout=timeout,
        references=tuple(references),
        description=description,
        prune=prune,
        trust=trust,
        fidelity=fidelity,
        prescreen=prescreen,
    )
