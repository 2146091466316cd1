"""What a study is: its search space (``search_spaces/*.toml``) and its config (``studies/*.toml``).

Both CLIs that read a study (``python -m repvgg_nas.search`` and
``python -m repvgg_nas.prune --study``) import this package, which pulls in
neither the search loop nor the report.

- :mod:`.space`: declarative search spaces -> specs;
- :mod:`.config`: study configs, every table validated up front;
- :mod:`.promotion`: the promotion rules of a multi-fidelity search (``[fidelity] rule``).
"""

from __future__ import annotations

from .config import (
    FIDELITY_MODES, LIMIT_KEYS, SAMPLERS, FidelityConfig, Limits, Objectives, SamplerConfig, StudyConfig, TrustConfig, load_study_config,
)
from .promotion import PROMOTION_RULES, PromotionRule, RuleSettings
from .space import Dim, SearchSpace, load_space

__all__ = [
    "Dim",
    "SearchSpace",
    "load_space",
    "FIDELITY_MODES",
    "FidelityConfig",
    "LIMIT_KEYS",
    "Limits",
    "Objectives",
    "SAMPLERS",
    "PROMOTION_RULES",
    "PromotionRule",
    "RuleSettings",
    "SamplerConfig",
    "StudyConfig",
    "TrustConfig",
    "load_study_config",
]
