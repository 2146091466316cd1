"""The zero-cost pre-screen: score a whole space without training, keep the pool a sampler draws from.

- :mod:`.proxies`: zero-cost accuracy proxies by name (counts and data-based ones);
- :mod:`.pool`: scoring >= 10^4 nets on (proxy, predicted speed) and the pool.
"""

from __future__ import annotations

from .accuracy import FEATURE_NAMES, AccuracyModel, features
from .config import PrescreenConfig
from .pool import (
    POOL_FORMAT,
    Pool,
    PoolMember,
    PoolSettings,
    PrescreenResult,
    macs_stand_in,
    prescreen,
    select_pool,
)
from .proxies import (
    DEFAULT_PROXY,
    PROXIES,
    ProxyInputs,
    ZeroCostProxy,
    deploy_macs,
    deploy_params,
    naswot,
    score,
    synflow,
)
from .sampler import LEARNS_FROM, POOL_RANK, Choice, PoolSampler, choose, stored_pool

__all__ = [
    "AccuracyModel",
    "Choice",
    "LEARNS_FROM",
    "choose",
    "FEATURE_NAMES",
    "POOL_RANK",
    "PoolSampler",
    "features",
    "stored_pool",
    "DEFAULT_PROXY",
    "POOL_FORMAT",
    "PROXIES",
    "Pool",
    "PrescreenConfig",
    "PoolMember",
    "PoolSettings",
    "PrescreenResult",
    "ProxyInputs",
    "ZeroCostProxy",
    "deploy_macs",
    "deploy_params",
    "macs_stand_in",
    "naswot",
    "prescreen",
    "score",
    "select_pool",
    "synflow",
]
