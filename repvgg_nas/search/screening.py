"""The study's pre-screened pool: made once, before the first candidate, and kept with the study.

With ``[prescreen] enabled`` a study draws its candidates from a pool
(:mod:`repvgg_nas.prescreen`) instead of the whole space. The pool needs
predicted speeds, which come from the per-layer latency table of the study's
measurement settings (:mod:`repvgg_nas.measure.latency`, built or completed
here and kept in the user cache, or a file named in ``[prescreen]
latency_table``), and the slowest reference's predicted speed, below which a
net cannot extend the front.

The pool is stored as a study attr, so a resumed run and every worker draw
from the same one; it is made under the study's claim lock, so of several
workers starting together one builds it and the others read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
import time

import optuna

from .. import zoo
from ..attrs import STUDY_POOL
from ..errors import ConfigError
from ..measure import LatencyProgress, LatencyTable, MeasureSettings, build_latency_table, load_latency_table
from ..prescreen import POOL_RANK, Pool, PoolMember, prescreen, stored_pool
from ..storage import claim_lock
from ..study import StudyConfig

__all__ = ["POOL_RANK", "PoolMade", "ensure_pool", "named_latency_table", "pool_member", "stored_pool"]


@dataclass(frozen=True)
class PoolMade:
    """What making the pool took: the table (its file, layers measured now, seconds) and the pre-screen."""

    table_path: str | None
    layers_measured: int
    table_seconds: float
    scored: int
    pool_size: int
    front_size: int
    prescreen_seconds: float
    reference_throughput: float


def pool_member(pool: Pool, rank: int) -> PoolMember:
    """The member of ``rank`` (0 = predicted slowest): the stored order is by predicted speed."""
    return pool.members[rank]


def named_latency_table(cfg: StudyConfig, settings: MeasureSettings, num_classes: int,
                        in_channels: int) -> LatencyTable | None:
    """The table file ``[prescreen] latency_table`` names, checked to cover the space (None: none named).

    Built on the deployment machine, it is used as named, even for another
    device, and never completed here: a table lacking a layer of the space is
    refused in one line. Called before the study is opened, so bad input
    leaves nothing behind.
    """
    named = cfg.prescreen.latency_table if cfg.prescreen.enabled else None
    if named is None:
        return None
    table = load_latency_table(named, settings, explicit=True)
    missing = table.missing(cfg.space, num_classes, in_channels)
    if missing:
        raise ConfigError(f"latency table {named!r} lacks {len(missing)} layer(s) of space {cfg.space.name!r} "
                          f"(first: {missing[0].id}): build it for this space (python -m repvgg_nas.bench "
                          f"--latency-table --space {cfg.space.name} --latency-table-file FILE)")
    return table


def _table(cfg: StudyConfig, settings: MeasureSettings, num_classes: int, in_channels: int,
           on_progress: Callable[[LatencyProgress], None] | None) -> tuple[LatencyTable, int]:
    """The latency table the pool is predicted with, and how many layers were measured for it now."""
    named = named_latency_table(cfg, settings, num_classes, in_channels)
    if named is not None:
        return named, 0
    counted = {"n": 0}

    def progress(p: LatencyProgress) -> None:
        counted["n"] = p.done
        if on_progress is not None:
            on_progress(p)

    table = build_latency_table(cfg.space, settings, on_progress=progress, num_classes=num_classes,
                                in_channels=in_channels)
    return table, counted["n"]


def ensure_pool(
    study: optuna.Study, cfg: StudyConfig, settings: MeasureSettings, num_classes: int, in_channels: int,
    on_progress: Callable[[LatencyProgress], None] | None = None,
) -> tuple[Pool | None, PoolMade | None]:
    """The study's pool, made now if ``[prescreen] enabled`` and the study has none yet.

    Returns ``(pool, made)``: ``made`` says what it took when this call made
    it (None when it was stored already, or the search is blind).
    """
    if not cfg.prescreen.enabled:
        return None, None
    with claim_lock(study):
        pool = stored_pool(study)
        if pool is not None:
            return pool, None
        start = time.perf_counter()
        table, measured = _table(cfg, settings, num_classes, in_channels, on_progress)
        table_s = time.perf_counter() - start
        refs = [zoo.get_entry(r) for r in cfg.references]
        ref_specs = [cfg.space.build(cfg.space.params_for(e), num_classes, in_channels) for e in refs]
        slowest = min((table.predict_throughput(s) for s in ref_specs), default=0.0)
        p = cfg.prescreen
        result = prescreen(cfg.space, predict_throughput=table.predict_throughput, reference_throughput=slowest,
                           num_classes=num_classes, in_channels=in_channels, proxy=p.proxy, n=p.n,
                           min_pool_size=p.min_pool_size, seed=cfg.seed,
                           speed_source=f"latency table {table.path or ''}".strip())
        members = tuple(sorted(result.pool.members, key=lambda m: m.throughput))  # rank = speed order
        pool = Pool(members, result.pool.settings)
        where = str(table.path) if table.path is not None else None
        made = PoolMade(where, measured, table_s, result.scored, len(pool), result.front_size, result.seconds,
                        slowest)
        study.set_user_attr(STUDY_POOL, {**pool.to_dict(), "made": asdict(made)})  # what it took, for people
    return pool, made
