"""The ``[prescreen]`` table of a study: whether candidates are drawn from a pre-screened pool, and how it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Table
from .proxies import DEFAULT_PROXY, PROXIES

__all__ = ["PrescreenConfig"]


@dataclass(frozen=True)
class PrescreenConfig:
    """``enabled``: draw every candidate from the pool (else from the whole space, blind).

    ``proxy``: the zero-cost accuracy proxy every scored net gets (a name of
    :data:`.proxies.PROXIES` that needs no data; ``params`` ranks the paper's
    configs and the a_family nets best, benchmarks/zero_cost_proxies_cpu.md).
    ``n``: nets scored (all of them when the space is smaller). ``pool_size``:
    the least pool size (the non-dominated set on proxy and predicted speed,
    then the next layers while it is smaller). ``latency_table``: a table
    file built elsewhere (``python -m repvgg_nas.bench --latency-table``),
    used as named even when it was measured on another device; without it
    the table is built (or completed) here and kept in the user cache.
    """

    enabled: bool = False
    proxy: str = DEFAULT_PROXY
    n: int = 10_000
    pool_size: int = 32
    latency_table: str | None = None

    KEYS = ("enabled", "proxy", "n", "pool_size", "latency_table")

    @classmethod
    def from_table(cls, t: Table) -> PrescreenConfig:
        cheap = [p for p in PROXIES if not PROXIES.get(p).needs_data]
        kw = dict(
            enabled=t.get("enabled", bool, False),
            proxy=t.get("proxy", str, DEFAULT_PROXY, choices=cheap),
            n=t.get("n", int, 10_000, min=1, max=1_000_000),
            pool_size=t.get("pool_size", int, 32, min=1, max=10_000),
            latency_table=t.get("latency_table", str, None),
        )
        t.finish(cls.KEYS)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}
