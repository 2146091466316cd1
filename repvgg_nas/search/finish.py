"""The end of a study run: prune the front, re-measure it with the references in lockstep, keep the
checkpoints that matter, write the CSVs.

Nothing here prints: progress goes to ``on_event``
(:mod:`repvgg_nas.search.events`).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import optuna
import torch

from .. import lifecycle
from ..attrs import (
    ACCURACY, ARCH, ARCH_DIMENSIONS, DEVICE, LATENCY_MS, MACS, OUTCOME, PARAMS, PARENT_TRIAL, PRUNE, PRUNE_TARGET_MET, PRUNED_RATIO,
    SPEC, SPEC_HASH, SPEEDUP, STUDY_LOCKSTEP, arch_key,
)
from ..attrs import MEASURE_CONTENDED, OTHER_LOAD, THROUGHPUT_CV, THROUGHPUT_IQR, VAL_SIZE
from ..checkpoint import load_model, save_checkpoint
from ..data import DataBundle
from ..layout import StudyPaths
from ..lifecycle import Outcome, Role
from ..measure import MeasureMany, MeasureSettings, ThroughputCache, measure_specs
from ..objectives import Measured, measured_values, trial_values
from ..prune import run_prune
from ..spec import RepVGGSpec
from ..stats import architecture_stats, pareto_frame, write_csv
from ..study import StudyConfig
from ..study_frames import front_numbers, study_sigmas, trials_frame
from .events import EventCallback, PruneFailed, PruningFrontMember, Remeasured, ignore
from .loop import failure_reason

__all__ = ["keep_checkpoints", "prune_front", "remeasure_front", "write_outputs"]

def keep_checkpoints(study: optuna.Study, paths: StudyPaths) -> None:
    """Keep deploy checkpoints of the front and of the references only (bounded disk use).

    Only checkpoints of finished trials are removed: another worker may have
    just written one for a trial it has not reported yet. Without linked
    re-trainings a finished trial off the front never rejoins it, so an older
    view of the study is safe to act on. With them it may (the front is on mean
    accuracy, and a member's repeats can lower its mean), so
    :func:`run_search` calls this only once they are all finished
    (:func:`.trust.linked_pending`).
    """
    trials = study.get_trials(deepcopy=False)
    finished = {t.number for t in trials if t.state.is_finished()}
    # References, pruned variants and long re-trainings (the better-trained nets) are kept too.
    kept_roles = (Role.REFERENCE, Role.PRUNED_VARIANT, Role.LONG_RETRAIN)
    keep = front_numbers(study) | {t.number for t in trials if lifecycle.role(t) in kept_roles}
    for n, f in paths.checkpoint_trials().items():
        if n in finished and n not in keep:
            f.unlink(missing_ok=True)

def prune_front(
    study: optuna.Study, cfg: StudyConfig, data: DataBundle, measure: MeasureSettings, device: torch.device,
    cache: ThroughputCache, paths: StudyPaths, on_event: EventCallback | None = None,
    measure_lockstep: MeasureMany = measure_specs,
) -> int:
    """Prune every front member not pruned yet; add each result as a trial linked to its parent.

    Pruned variants are real points on the accuracy/speed plane, so they join
    the study (and may join the front) with ``parent_trial`` naming their source.
    """
    assert cfg.prune is not None
    on_event = on_event or ignore
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get(PARENT_TRIAL) for t in trials}
    front = front_numbers(study)
    parents = [t for t in trials if t.number in front and lifecycle.role(t) != Role.PRUNED_VARIANT
               and t.number not in done]
    for parent in parents:
        path = paths.checkpoint(parent.number)
        if not path.is_file():
            continue
        model, _ = load_model(path)
        on_event(PruningFrontMember(parent.number, cfg.prune.to_dict()))
        try:
            out = run_prune(model, cfg.prune, data, measure, cfg.train, device, cache,
                            measure_lockstep=measure_lockstep)
        except Exception as e:  # a failed prune must not lose the search results
            on_event(PruneFailed(parent.number, failure_reason(e)))
            continue
        _add_pruned_variant(study, cfg, parent, out, data, paths)
    return len(parents)


def _add_pruned_variant(study: optuna.Study, cfg: StudyConfig, parent: optuna.trial.FrozenTrial, out: Any,
                        data: DataBundle, paths: StudyPaths) -> None:
    """Add the pruned net of ``parent`` as a complete trial of role pruned_variant, and its checkpoint."""
    assert cfg.prune is not None
    final, spec, meas = out.final, out.model.spec, out.measurement
    assert meas is not None  # run_prune always measures the pruned net
    accuracy, images_per_s = float(final.accuracy), float(meas.images_per_s)
    attrs = lifecycle.created_attrs(Role.PRUNED_VARIANT, **{
        OUTCOME: Outcome.COMPLETE.value, PARENT_TRIAL: parent.number,
        PRUNED_RATIO: cfg.prune.ratio if cfg.prune.ratio is not None else None,
        PRUNE: cfg.prune.to_dict(),
        SPEEDUP: round(images_per_s / out.original.images_per_s, 3),
        PRUNE_TARGET_MET: out.met,
        SPEC: spec.to_dict(), SPEC_HASH: spec.hash, ARCH: spec.summary(),
        PARAMS: final.params, MACS: final.macs,
        LATENCY_MS: round(final.latency_ms, 2), ACCURACY: accuracy,
        DEVICE: parent.user_attrs.get(DEVICE), VAL_SIZE: data.val_size,
        # The pruned net's own spread and load flag: its claims are only as sure as its measurement.
        THROUGHPUT_IQR: meas.images_per_s_iqr, THROUGHPUT_CV: meas.robust_cv,
        MEASURE_CONTENDED: meas.contended, OTHER_LOAD: meas.env.get("other_cpu_load"),
    })
    attrs.update(measured_values(cfg.objectives.table, Measured(spec, cfg.measure, meas)))
    for k in ARCH_DIMENSIONS:
        attrs[arch_key(k)] = parent.user_attrs.get(arch_key(k))
    values = trial_values(cfg.objectives.table, attrs)
    study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs))
    # Looked up by parent, not taken as the last trial: another worker may have added one since.
    number = max(t.number for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get(PARENT_TRIAL) == parent.number and t.user_attrs.get(SPEC_HASH) == spec.hash)
    save_checkpoint(paths.checkpoint(number), out.model, spec, meta={
        "study": cfg.name, "trial": number, "parent_trial": parent.number,
        "accuracy": accuracy, "throughput": images_per_s, "data": cfg.data.to_dict(),
    })


def remeasure_front(study: optuna.Study, measure: MeasureSettings, on_event: EventCallback | None = None,
                    measure_lockstep: MeasureMany = measure_specs) -> dict[str, Any] | None:
    """Re-measure the front and the references together in lockstep; store and return the record.

    Their ratios then come from one stretch of time (as the bench measures),
    not from measurements hours apart on a machine whose load changed. The
    record (study attr ``lockstep_measurement``: when, other processes' load,
    per-architecture images/s, IQR, CV, contended) is what the claims use.
    ``measure_lockstep`` has the signature of :func:`repvgg_nas.measure.measure_specs`.
    """
    frame = trials_frame(study)
    stats = architecture_stats(frame)
    if stats.empty:
        return None
    pick = stats[stats["on_front"].astype(bool) | stats["reference"].notna()]
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    specs = {}
    for h, n in zip(pick["spec_hash"], pick["number"]):
        spec = by_number[int(n)].user_attrs.get(SPEC)
        if spec:
            specs[str(h)] = RepVGGSpec.from_dict(spec)
    if not specs:
        return None
    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out = measure_lockstep(specs, measure)
    loads = [m.env.get("other_cpu_load") for m in out.values() if m.env.get("other_cpu_load") is not None]
    record = {
        "at": at, "other_load": max(loads) if loads else None,
        "contended": any(m.contended for m in out.values()),
        "device": next(iter(out.values())).env.get("device_name"),
        "archs": {h: {"images_per_s": m.images_per_s, "images_per_s_iqr": m.images_per_s_iqr,
                      "robust_cv": m.robust_cv, "contended": m.contended} for h, m in out.items()},
    }
    study.set_user_attr(STUDY_LOCKSTEP, record)
    (on_event or ignore)(Remeasured(len(specs), at, record["other_load"], record["contended"]))
    return record


def write_outputs(study: optuna.Study, out_dir: str | Path) -> tuple[Any, Any]:
    """Write ``trials.csv`` and ``pareto.csv`` of the study into ``out_dir``; return both frames."""
    paths = StudyPaths(Path(out_dir))
    trials = trials_frame(study)
    pareto = pareto_frame(trials, study_sigmas(study))
    write_csv(trials, paths.trials_csv)
    write_csv(pareto, paths.pareto_csv)
    return trials, pareto

