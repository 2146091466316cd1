"""Declarative search spaces over RepVGG architectures (``search_spaces/*.toml``).

A space holds ranges and choices only, no code::

    description = "Around RepVGG-A"
    depths = [1, {low = 1, high = 3}, {low = 2, high = 6}, {low = 8, high = 16, step = 2}, 1]
    a = {choices = [0.5, 0.75, 1.0]}
    b = {choices = [1.5, 2.0, 2.5]}          # every b must be >= every a
    groupwise = {choices = ["none", "paper", "stages:3"]}
    g = {choices = [2, 4]}
    block = {choices = ["repvgg", "qarepvgg"]}   # train-form block; default "repvgg"

Each dimension is a constant, ``{choices = [...]}`` or ``{low, high, step}``.
:meth:`SearchSpace.sample` turns an Optuna trial into a :class:`RepVGGSpec`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from ..config import Table, find_config, load_toml
from ..errors import ConfigError, RepVGGNasError, SpecError
from ..spec import BLOCKS, DEFAULT_BLOCK, RepVGGSpec, groupwise_layers
from ..zoo import ZooEntry

__all__ = ["Dim", "SearchSpace", "load_space"]

SPACE_KEYS = ("description", "depths", "a", "b", "groupwise", "g", "block")


@dataclass(frozen=True)
class Dim:
    """One dimension: a constant, a list of choices, or an int/float range with a step."""

    name: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def fixed(self) -> bool:
        return not self.is_range and len(self.choices) == 1

    @property
    def is_int(self) -> bool:
        vals = (self.low, self.high, self.step) if self.is_range else self.choices
        return all(isinstance(v, int) and not isinstance(v, bool) for v in vals if v is not None)

    def values(self) -> list[Any]:
        """Every value the dimension can take (ranges enumerated by their step)."""
        if not self.is_range:
            return list(self.choices)
        if self.is_int:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        step = self.step
        n = int(round((self.high - self.low) / step))
        return [round(self.low + i * step, 10) for i in range(n + 1)]

    def contains(self, value: Any) -> bool:
        return any(v == value for v in self.values())

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.fixed:
            return self.choices[0]
        if self.is_range:
            if self.is_int:
                return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
            return trial.suggest_float(self.name, self.low, self.high, step=self.step)
        return trial.suggest_categorical(self.name, list(self.choices))

    def to_dict(self) -> Any:
        if self.fixed:
            return self.choices[0]
        if self.is_range:
            return {"low": self.low, "high": self.high, "step": self.step}
        return {"choices": list(self.choices)}

    @classmethod
    def parse(cls, name: str, raw: Any, where: str, kinds: tuple[type, ...]) -> Dim:
        """Validate one dimension; ``where`` prefixes errors (``file: key``)."""
        def check(v: Any, what: str) -> Any:
            ok = isinstance(v, kinds) and not isinstance(v, bool)
            if not ok and float in kinds and isinstance(v, int) and not isinstance(v, bool):
                return float(v)
            if not ok:
                names = " or ".join({int: "integers", float: "numbers", str: "strings"}[k] for k in kinds)
                raise ConfigError(f"{where}{what}: must be {names}, got {v!r}")
            return v

        if isinstance(raw, Mapping):
            keys = set(raw)
            if "choices" in keys:
                if keys != {"choices"}:
                    raise ConfigError(f"{where}: use either choices or low/high/step, not both")
                choices = raw["choices"]
                if not isinstance(choices, list) or not choices:
                    raise ConfigError(f"{where}.choices: must be a non-empty list, got {choices!r}")
                vals = tuple(check(v, ".choices") for v in choices)
                if len(set(vals)) != len(vals):
                    raise ConfigError(f"{where}.choices: has duplicates: {list(vals)}")
                return cls(name, choices=vals)
            unknown = keys - {"low", "high", "step"}
            if unknown or not {"low", "high"} <= keys:
                raise ConfigError(
                    f"{where}: a range needs low and high (and optionally step); "
                    f"got keys {sorted(keys)}"
                )
            if str in kinds and int not in kinds and float not in kinds:
                raise ConfigError(f"{where}: takes choices, not a range")
            low, high = check(raw["low"], ".low"), check(raw["high"], ".high")
            step = check(raw["step"], ".step") if "step" in raw else None
            if high < low:
                raise ConfigError(f"{where}: high ({high}) is below low ({low})")
            if step is not None and step <= 0:
                raise ConfigError(f"{where}.step: must be > 0, got {step}")
            is_int = all(isinstance(v, int) for v in (low, high, step) if v is not None)
            if not is_int and step is None:
                raise ConfigError(f"{where}: a float range needs a step (e.g. step = 0.25)")
            return cls(name, low=low, high=high, step=step if step is not None else (1 if is_int else None))
        return cls(name, choices=(check(raw, ""),))


@dataclass(frozen=True)
class SearchSpace:
    """Depths per stage, width multipliers a/b, groupwise placement and the train-form block."""

    name: str
    depths: tuple[Dim, ...]
    a: Dim
    b: Dim
    groupwise: Dim
    g: Dim
    description: str = ""
    block: Dim = Dim("block", choices=(DEFAULT_BLOCK,))

    # ---- sampling -----------------------------------------------------------
    def dims(self) -> list[Dim]:
        return [*self.depths, self.a, self.b, self.groupwise, self.g, self.block]

    def build(self, values: Mapping[str, Any], num_classes: int, in_channels: int = 3) -> RepVGGSpec:
        """The spec for one assignment of this space's dimension names to values."""
        get = lambda d: values[d.name] if d.name in values else d.choices[0]  # noqa: E731
        depths = tuple(int(get(d)) for d in self.depths)
        pattern, g = get(self.groupwise), int(get(self.g))
        return RepVGGSpec.from_paper(
            depths,
            float(get(self.a)),
            float(get(self.b)),
            groupwise=pattern if g > 1 else None,
            g=g,
            num_classes=num_classes,
            in_channels=in_channels,
            block=str(get(self.block)),
        )

    def free_dims(self) -> list[Dim]:
        """The dimensions Optuna is asked for (a fixed one never appears in a trial's params)."""
        return [d for d in self.dims() if not d.fixed]

    def sample_values(self, rng: random.Random) -> dict[str, Any]:
        """One uniform draw of the free dimensions, as the params dict Optuna would suggest.

        Without Optuna, so a pre-screen can draw 10^4 nets in milliseconds;
        :meth:`build` turns the dict into the spec.
        """
        return {d.name: rng.choice(d.values()) for d in self.free_dims()}

    def enumerate_values(self) -> Iterator[dict[str, Any]]:
        """Every assignment of the free dimensions (:meth:`size` of them), in a fixed order.

        Different assignments can give the same spec (``g`` when no layer is
        groupwise): dedupe on ``build(...).hash``.
        """
        dims = self.free_dims()
        for combo in itertools.product(*(d.values() for d in dims)):
            yield {d.name: v for d, v in zip(dims, combo)}

    def sample(self, trial: optuna.Trial, num_classes: int, in_channels: int = 3) -> RepVGGSpec:
        """Ask ``trial`` for every free dimension and build the spec."""
        values = {d.name: d.suggest(trial) for d in self.dims()}
        return self.build(values, num_classes, in_channels)

    def params_for(self, entry: ZooEntry) -> dict[str, Any]:
        """Trial params that make :meth:`sample` produce zoo config ``entry``.

        Raises ConfigError naming the first value the space cannot express.
        """
        wanted: dict[str, Any] = {d.name: v for d, v in zip(self.depths, entry.depths)}
        if len(entry.depths) != len(self.depths):
            raise ConfigError(f"{entry.name} has {len(entry.depths)} stages; the space has {len(self.depths)}")
        wanted["a"], wanted["b"] = entry.a, entry.b
        wanted["block"] = entry.block  # a reference names its block: A0 (repvgg) or A0:qarepvgg
        if entry.g > 1:
            wanted["groupwise"], wanted["g"] = entry.groupwise, entry.g
        else:
            # Either no groups at all, or a g of 1: pick whichever the space allows.
            if self.groupwise.contains("none"):
                wanted["groupwise"], wanted["g"] = "none", self.g.values()[0]
            else:
                wanted["groupwise"], wanted["g"] = self.groupwise.values()[0], 1
        for d in self.dims():
            if not d.contains(wanted[d.name]):
                raise ConfigError(
                    f"reference {entry.name} is outside search space {self.name!r}: "
                    f"{d.name} = {wanted[d.name]!r} is not among {d.values()}"
                )
        return {d.name: wanted[d.name] for d in self.dims() if not d.fixed}

    # ---- identity -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {
            "depths": [d.to_dict() for d in self.depths],
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "groupwise": self.groupwise.to_dict(),
            "g": self.g.to_dict(),
            "block": self.block.to_dict(),
        }
        return d

    @property
    def hash(self) -> str:
        """Content hash of the dimensions (not the name or description)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def size(self) -> int:
        n = 1
        for d in self.dims():
            n *= len(d.values())
        return n

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str, source: str = "") -> SearchSpace:
        t = Table(data, "", source)
        description = t.get("description", str, "")
        raw_depths = t.get("depths", list)
        if not 1 <= len(raw_depths) <= 8:
            raise t.error("depths", f"must list 1 to 8 stages, got {len(raw_depths)}")
        depths = tuple(
            Dim.parse(f"depth{i}", v, f"{source}depths[{i}]", (int,)) for i, v in enumerate(raw_depths)
        )
        for i, d in enumerate(depths):
            if min(d.values(), default=0) < 1:
                raise ConfigError(f"{source}depths[{i}]: depths must be >= 1, got {d.to_dict()}")
        a = Dim.parse("a", t.get("a", (float, dict)), f"{source}a", (float,))
        b = Dim.parse("b", t.get("b", (float, dict)), f"{source}b", (float,))
        for dim in (a, b):
            if min(dim.values()) <= 0:
                raise ConfigError(f"{source}{dim.name}: width multipliers must be > 0, got {dim.to_dict()}")
        if min(b.values()) < max(a.values()):
            raise ConfigError(
                f"{source}b: b must be >= a for every sampled pair, but b can be "
                f"{min(b.values())} while a can be {max(a.values())} (b < a)"
            )
        gw = Dim.parse("groupwise", t.get("groupwise", (str, dict), "none"), f"{source}groupwise", (str,))
        g = Dim.parse("g", t.get("g", (int, dict), 1), f"{source}g", (int,))
        bad_g = [v for v in g.values() if v not in (1, 2, 4)]
        if bad_g:
            raise ConfigError(f"{source}g: {bad_g[0]!r} is not allowed; g must be 1, 2 or 4")
        block = Dim.parse("block", t.get("block", (str, dict), DEFAULT_BLOCK), f"{source}block", (str,))
        bad_block = [v for v in block.values() if v not in BLOCKS]
        if bad_block:
            raise ConfigError(f"{source}block: {bad_block[0]!r} is not allowed; allowed: {', '.join(BLOCKS)}")
        t.finish(SPACE_KEYS)
        space = cls(name, depths, a, b, gw, g, description, block)
        deepest = tuple(max(d.values()) for d in depths)
        for p in gw.values():
            try:
                groupwise_layers(p, deepest)
            except RepVGGNasError as e:
                raise ConfigError(f"{source}groupwise: {e}") from None
        # Widths must divide by g wherever groups are placed: check every corner now.
        try:
            for av in a.values():
                for bv in b.values():
                    for gv in g.values():
                        for p in gw.values():
                            space.build({"a": av, "b": bv, "g": gv, "groupwise": p, **{d.name: max(d.values()) for d in depths}}, 10)
        except SpecError as e:
            raise ConfigError(f"{source}: the space contains an invalid network: {e}") from None
        return space


def load_space(name_or_path: str | os.PathLike) -> SearchSpace:
    """Load and validate a search space by name (``search_spaces/NAME.toml``) or path."""
    path = find_config(str(name_or_path), "search_spaces", "search space")
    return SearchSpace.from_dict(load_toml(path), path.stem, source=f"{path}: ")
