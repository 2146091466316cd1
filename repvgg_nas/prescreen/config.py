"""The ``[prescreen]`` table of a study: whether candidates are drawn from a pre-screened pool, and how it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Table
from .proxies import DEFAULT_PROXY, PROXIES

__all__ = ["MAX_PRESCREEN_SECONDS", "PrescreenConfig"]

# A pre-screen runs before the search's budget starts: a proxy whose cost over n nets exceeds this is refused.
MAX_PRESCREEN_SECONDS = 600.0


def _analytic() -> list[str]:
    """Proxies that cost microseconds a net (counted, not run)."""
    return [p for p in PROXIES if PROXIES.get(p).ms_per_net < 1.0]


@dataclass(frozen=True)
class PrescreenConfig:
    """``enabled``: draw every candidate from the pool (else from the whole space, blind).

    ``proxy``: the zero-cost accuracy proxy every scored net gets (a name of
    :data:`.proxies.PROXIES` that needs no data; ``params`` ranks the paper's
    configs and the a_family nets best, benchmarks/zero_cost_proxies_cpu.md).
    ``n``: nets scored (all of them when the space is smaller). ``min_pool_size``:
    the least pool size: the pool is the whole non-dominated set on proxy and
    predicted speed (often larger), plus the next layers while it is smaller. ``latency_table``: a table
    file built elsewhere (``python -m repvgg_nas.bench --latency-table``),
    used as named even when it was measured on another device; without it
    the table is built (or completed) here and kept in the user cache.
    """

    enabled: bool = False
    proxy: str = DEFAULT_PROXY
    n: int = 10_000
    min_pool_size: int = 32
    latency_table: str | None = None

    KEYS = ("enabled", "proxy", "n", "min_pool_size", "latency_table")

    @classmethod
    def from_table(cls, t: Table) -> PrescreenConfig:
        cheap = [p for p in PROXIES if not PROXIES.get(p).needs_data]
        kw = dict(
            enabled=t.get("enabled", bool, False),
            proxy=t.get("proxy", str, DEFAULT_PROXY, choices=cheap),
            n=t.get("n", int, 10_000, min=1, max=1_000_000),
            min_pool_size=t.get("min_pool_size", int, 32, min=1, max=10_000),
            latency_table=t.get("latency_table", str, None),
        )
        t.finish(cls.KEYS)
        return cls(**kw)

    def too_slow(self, space_size: int) -> str | None:
        """Why scoring ``min(n, space_size)`` nets with this proxy would outlast :data:`MAX_PRESCREEN_SECONDS`
        (None when it would not, or the pre-screen is off)."""
        nets = min(self.n, space_size)
        per_net = PROXIES.get(self.proxy).ms_per_net / 1000.0
        if not self.enabled or nets * per_net <= MAX_PRESCREEN_SECONDS:
            return None
        most = max(1, int(MAX_PRESCREEN_SECONDS / per_net))
        return (f"{self.proxy!r} scores about {per_net:.1f} s a net, so {nets} nets would take about "
                f"{nets * per_net / 3600:.1f} h; set prescreen.n <= {most}, or use an analytic proxy "
                f"({', '.join(_analytic())})")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}
