"""The architecture spec: the one object that crosses every boundary.

A :class:`RepVGGSpec` fully determines a network (train-form or deploy-form).
It is frozen, JSON round-trippable and has a stable content hash, so it can be
stored in an Optuna trial, a checkpoint or a cache key. Widths are per layer,
so a channel-pruned network is just another spec.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import SpecError
from .registry import Registry

__all__ = [
    "RepVGGSpec",
    "SPEC_VERSION",
    "GROUPWISE_PATTERNS",
    "groupwise_layers",
    "paper_widths",
    "BLOCKS",
    "DEFAULT_BLOCK",
]

# The layout of a stored spec (``to_dict``): written with every spec, checked when
# one is read; a stored spec of another version is refused, never guessed at.
SPEC_VERSION = 2

# Train-form block kinds (``repvgg_nas.model.TRAIN_BLOCKS`` builds them). Both fuse
# into the same deploy block.
BLOCKS = ("repvgg", "qarepvgg")
DEFAULT_BLOCK = "repvgg"

# Layer indices count blocks from 0 at the stem, as in the official code.
PAPER_GROUPWISE_LAYERS = tuple(range(2, 27, 2))


def _paper_pattern(depths: tuple[int, ...]) -> tuple[int, ...]:
    """The paper's g2/g4 placement: layers 2, 4, ..., 26 (those that exist)."""
    return tuple(i for i in PAPER_GROUPWISE_LAYERS if i < sum(depths))


def _even_pattern(depths: tuple[int, ...]) -> tuple[int, ...]:
    """Every second layer over the whole depth, not stopping at 26."""
    return tuple(range(2, sum(depths), 2))


def _odd_pattern(depths: tuple[int, ...]) -> tuple[int, ...]:
    """The complement placement of ``even``: layers 1, 3, 5, ... (not the stem)."""
    return tuple(range(1, sum(depths), 2))


def _no_pattern(depths: tuple[int, ...]) -> tuple[int, ...]:
    return ()


GROUPWISE_PATTERNS: Registry = Registry("groupwise pattern")
GROUPWISE_PATTERNS.register("none", _no_pattern)
GROUPWISE_PATTERNS.register("paper", _paper_pattern)
GROUPWISE_PATTERNS.register("even", _even_pattern)
GROUPWISE_PATTERNS.register("odd", _odd_pattern)

STAGE_PATTERN_PREFIX = "stages:"


def _stage_pattern(pattern: str, depths: tuple[int, ...]) -> tuple[int, ...]:
    """``stages:2,3``: the paper's every-second-layer parity, only inside the named stages."""
    body = pattern[len(STAGE_PATTERN_PREFIX) :]
    try:
        stages = sorted({int(p) for p in body.split(",") if p.strip()})
    except ValueError:
        stages = []
    if not stages:
        raise SpecError(f"groupwise pattern {pattern!r} must list stages, e.g. 'stages:2,3'")
    bad = [s for s in stages if not 0 <= s < len(depths)]
    if bad:
        raise SpecError(
            f"groupwise pattern {pattern!r} names stage(s) {bad}; stages are 0..{len(depths) - 1}"
        )
    starts = [sum(depths[:s]) for s in range(len(depths))]
    return tuple(
        i
        for s in stages
        for i in range(starts[s], starts[s] + depths[s])
        if i % 2 == 0 and i > 0
    )


def groupwise_layers(pattern: str | Iterable[int] | None, depths: Iterable[int]) -> tuple[int, ...]:
    """Resolve a pattern name (``none``, ``paper``, ``even``, ``odd``, ``stages:2,3``)
    or explicit layer indices into sorted layer indices for a net of these depths."""
    depths = tuple(depths)
    n_layers = sum(depths)
    if pattern is None:
        return ()
    if isinstance(pattern, str):
        if pattern.startswith(STAGE_PATTERN_PREFIX):
            return _stage_pattern(pattern, depths)
        return GROUPWISE_PATTERNS.get(pattern)(depths)
    layers = tuple(sorted(set(int(i) for i in pattern)))
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise SpecError(
            f"groupwise layer indices {bad} are outside 0..{n_layers - 1} "
            f"for a {n_layers}-layer network"
        )
    return layers


def paper_widths(a: float, b: float, base: Iterable[int] = (64, 128, 256, 512)) -> tuple[int, ...]:
    """Stage widths ``[min(64, 64a), 64a, 128a, 256a, 512b]``, floored as in the paper."""
    if a <= 0 or b <= 0:
        raise SpecError(f"width multipliers must be > 0, got a={a}, b={b}")
    b1, b2, b3, b4 = base
    return (min(64, int(64 * a)), int(b1 * a), int(b2 * a), int(b3 * a), int(b4 * b))


def _as_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SpecError(f"spec.{name} must be a list of integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"spec.{name} must contain integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class RepVGGSpec:
    """A RepVGG-style plain network.

    Attributes:
        depths: blocks per stage; stage 0 is the stem (depth 1 in the paper).
        widths: output channels of every layer (``len == sum(depths)``).
        groups: conv groups of every layer (applies to the 3x3 and 1x1 branch).
        strides: stride of the first block of each stage (others use 1).
        num_classes: size of the linear head.
        in_channels: channels of the input image.
        use_se: squeeze-excitation after each block's conv, before ReLU (RepVGG-D2se).
        se_reduction: SE hidden width is ``width // se_reduction`` (min 1).
        block: train-form block, ``repvgg`` (per-branch BN) or ``qarepvgg``
            (QARepVGG: BN on the 3x3 branch and after the sum; quantizes well).
            The deploy form is the same plain net for both.
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    groups: tuple[int, ...]
    strides: tuple[int, ...] = (2, 2, 2, 2, 2)
    num_classes: int = 1000
    in_channels: int = 3
    use_se: bool = False
    se_reduction: int = 16
    block: str = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise SpecError(f"spec.block = {self.block!r} is invalid; allowed: {', '.join(BLOCKS)}")
        for name in ("depths", "widths", "groups", "strides"):
            object.__setattr__(self, name, _as_int_tuple(name, getattr(self, name)))
        for name in ("num_classes", "in_channels", "se_reduction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise SpecError(f"spec.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.use_se, bool):
            raise SpecError(f"spec.use_se must be true or false, got {self.use_se!r}")
        if not self.depths:
            raise SpecError("spec.depths must name at least one stage")
        if any(d <= 0 for d in self.depths):
            raise SpecError(f"spec.depths must all be >= 1, got {list(self.depths)}")
        if len(self.strides) != len(self.depths):
            raise SpecError(
                f"spec.strides has {len(self.strides)} entries but there are "
                f"{len(self.depths)} stages"
            )
        if any(s not in (1, 2) for s in self.strides):
            raise SpecError(f"spec.strides must be 1 or 2, got {list(self.strides)}")
        n = self.num_layers
        for name in ("widths", "groups"):
            if len(getattr(self, name)) != n:
                raise SpecError(
                    f"spec.{name} has {len(getattr(self, name))} entries but "
                    f"depths {list(self.depths)} give {n} layers"
                )
        bad = [(i, w) for i, w in enumerate(self.widths) if w <= 0]
        if bad:
            raise SpecError(f"spec.widths must be >= 1, got layer {bad[0][0]} width {bad[0][1]}")
        for i, (cin, cout, g) in enumerate(zip(self.in_widths, self.widths, self.groups)):
            if g <= 0 or cin % g or cout % g:
                raise SpecError(
                    f"spec.groups[{i}] = {g} must divide the layer's in channels "
                    f"({cin}) and out channels ({cout})"
                )

    # ---- derived structure -------------------------------------------------
    @property
    def num_layers(self) -> int:
        return sum(self.depths)

    @property
    def in_widths(self) -> tuple[int, ...]:
        """Input channels of every layer."""
        return (self.in_channels, *self.widths[:-1])

    @property
    def layer_strides(self) -> tuple[int, ...]:
        out: list[int] = []
        for depth, stride in zip(self.depths, self.strides):
            out += [stride] + [1] * (depth - 1)
        return tuple(out)

    @property
    def stage_of_layer(self) -> tuple[tuple[int, int], ...]:
        """``(stage, block)`` for every layer index."""
        return tuple((s, b) for s, d in enumerate(self.depths) for b in range(d))

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    @property
    def groupwise(self) -> tuple[int, ...]:
        """Indices of layers with groups > 1."""
        return tuple(i for i, g in enumerate(self.groups) if g > 1)

    # ---- construction helpers ------------------------------------------------
    @classmethod
    def from_paper(
        cls,
        depths: Iterable[int],
        a: float,
        b: float,
        *,
        groupwise: str | Iterable[int] | None = None,
        g: int = 1,
        num_classes: int = 1000,
        in_channels: int = 3,
        use_se: bool = False,
        strides: Iterable[int] | None = None,
        block: str = DEFAULT_BLOCK,
    ) -> RepVGGSpec:
        """Build a spec from the paper's parameters.

        ``depths`` has 5 entries (stem first, as ``1, 2, 4, 14, 1`` for the A
        family); every block of a stage has the stage's width. ``groupwise`` is
        a pattern name (``none``, ``paper``, ``even``, ``odd``, ``stages:2,3``)
        or explicit layer indices; those layers get ``g`` groups.
        """
        depths = _as_int_tuple("depths", depths)
        if len(depths) != 5:
            raise SpecError(f"paper-style depths need 5 stages (stem first), got {list(depths)}")
        if g not in (1, 2, 4):
            raise SpecError(f"groupwise g must be 1, 2 or 4, got {g!r}")
        stage_w = paper_widths(a, b)
        widths = tuple(w for w, d in zip(stage_w, depths) for _ in range(d))
        n = sum(depths)
        layers = set(groupwise_layers(groupwise, depths)) if g > 1 else set()
        groups = tuple(g if i in layers else 1 for i in range(n))
        return cls(
            depths=depths,
            widths=widths,
            groups=groups,
            strides=tuple(strides) if strides is not None else (2,) * len(depths),
            num_classes=num_classes,
            in_channels=in_channels,
            use_se=use_se,
            block=block,
        )

    def replace(self, **changes: Any) -> RepVGGSpec:
        """A copy with some fields changed (validated like a new spec)."""
        data = self.to_dict()
        data.pop("spec_version")
        data.update(changes)
        return RepVGGSpec(**data)

    def with_num_classes(self, num_classes: int, in_channels: int | None = None) -> RepVGGSpec:
        return self.replace(
            num_classes=num_classes,
            in_channels=self.in_channels if in_channels is None else in_channels,
        )

    # ---- serialization -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"spec_version": SPEC_VERSION}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RepVGGSpec:
        """A spec from :meth:`to_dict`'s layout; one of another ``spec_version`` is refused.

        A mapping without ``spec_version`` is taken as written by hand in the
        current layout (every stored spec carries its version).
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"a spec must be a mapping, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("spec_version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError(
                f"a stored spec has spec_version {version!r}; this version of repvgg-nas reads "
                f"spec_version {SPEC_VERSION} only (re-create the study, checkpoint or cache that holds it)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec keys {unknown}; allowed: {sorted(known)}")
        missing = sorted(k for k in ("depths", "widths", "groups") if k not in data)
        if missing:
            raise SpecError(f"spec is missing required keys {missing}")
        return cls(**data)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, so equal specs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RepVGGSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec JSON is malformed: {e}") from None
        return cls.from_dict(data)

    @property
    def hash(self) -> str:
        """Stable content hash (12 hex digits), independent of Python's hash seed."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def summary(self) -> str:
        """Short human-readable description: depths, stage widths and groupwise layers."""
        stage_widths = []
        i = 0
        for d in self.depths:
            ws = self.widths[i : i + d]
            stage_widths.append(str(ws[0]) if len(set(ws)) == 1 else "/".join(map(str, ws)))
            i += d
        gw = ",".join(f"{i}:g{self.groups[i]}" for i in self.groupwise) or "none"
        se = " se" if self.use_se else ""
        block = f" block={self.block}" if self.block != DEFAULT_BLOCK else ""
        return (
            f"depths={'-'.join(map(str, self.depths))} widths={'-'.join(stage_widths)} "
            f"groups={gw}{se}{block}"
        )
