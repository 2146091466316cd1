"""The paper's RepVGG configurations as a named registry of specs.

``get("RepVGG-A0")`` (or ``get("A0")``) returns the spec; a ``:BLOCK`` suffix
(``get("A0:qarepvgg")``) names the same config with another train-form block
(``RepVGGSpec.block``). The paper's reported
deploy-model params (M) and GMACs at 224x224 / 1000 classes are kept beside
each entry so tests and reports can compare against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as _replace

from ..errors import UnknownNameError
from ..registry import Registry
from ..spec import BLOCKS, DEFAULT_BLOCK, RepVGGSpec

__all__ = ["ZooEntry", "ZOO", "get", "get_entry", "list_names", "table"]

A_DEPTHS = (1, 2, 4, 14, 1)
B_DEPTHS = (1, 4, 6, 16, 1)
D_DEPTHS = (1, 8, 14, 24, 1)


@dataclass(frozen=True)
class ZooEntry:
    """One named configuration with the paper's own figures (None where not reported)."""

    name: str
    depths: tuple[int, ...]
    a: float
    b: float
    g: int = 1
    groupwise: str = "none"
    use_se: bool = False
    paper_params_m: float | None = None
    paper_gmacs: float | None = None
    block: str = DEFAULT_BLOCK

    @property
    def family(self) -> str:
        return self.name.split("-")[1][0]

    def spec(self, num_classes: int = 1000, in_channels: int = 3) -> RepVGGSpec:
        return RepVGGSpec.from_paper(
            self.depths,
            self.a,
            self.b,
            groupwise=self.groupwise if self.g > 1 else None,
            g=self.g,
            num_classes=num_classes,
            in_channels=in_channels,
            use_se=self.use_se,
            block=self.block,
        )


ZOO: Registry[ZooEntry] = Registry("zoo model")


def _add(name: str, depths, a, b, g=1, params=None, gmacs=None, use_se=False) -> None:
    entry = ZooEntry(
        name, depths, a, b, g, "paper" if g > 1 else "none", use_se, params, gmacs
    )
    ZOO.register(name, entry)


_add("RepVGG-A0", A_DEPTHS, 0.75, 2.5, params=8.30, gmacs=1.4)
_add("RepVGG-A1", A_DEPTHS, 1.0, 2.5, params=12.78, gmacs=2.4)
_add("RepVGG-A2", A_DEPTHS, 1.5, 2.75, params=25.49, gmacs=5.1)
_add("RepVGG-B0", B_DEPTHS, 1.0, 2.5, params=14.33, gmacs=3.1)
_add("RepVGG-B1", B_DEPTHS, 2.0, 4.0, params=51.82, gmacs=11.8)
_add("RepVGG-B1g2", B_DEPTHS, 2.0, 4.0, g=2, params=41.36, gmacs=8.8)
_add("RepVGG-B1g4", B_DEPTHS, 2.0, 4.0, g=4, params=36.12, gmacs=7.3)
_add("RepVGG-B2", B_DEPTHS, 2.5, 5.0, params=80.31, gmacs=18.4)
_add("RepVGG-B2g2", B_DEPTHS, 2.5, 5.0, g=2)
_add("RepVGG-B2g4", B_DEPTHS, 2.5, 5.0, g=4, params=55.77, gmacs=11.3)
_add("RepVGG-B3", B_DEPTHS, 3.0, 5.0, params=110.96, gmacs=26.2)
_add("RepVGG-B3g2", B_DEPTHS, 3.0, 5.0, g=2)
_add("RepVGG-B3g4", B_DEPTHS, 3.0, 5.0, g=4, params=75.62, gmacs=16.1)
_add("RepVGG-D2se", D_DEPTHS, 2.5, 5.0, use_se=True)


def _canonical(name: str) -> str:
    """Accept ``A0``, ``repvgg_a0`` and ``RepVGG-A0`` alike."""
    n = name.strip().replace("_", "-")
    if not n.lower().startswith("repvgg-"):
        n = f"RepVGG-{n}"
    return ZOO.canonical(n, shown=name)


def get_entry(name: str) -> ZooEntry:
    """The entry of ``name``; ``NAME:BLOCK`` (e.g. ``A0:qarepvgg``) swaps the train-form block."""
    base, sep, block = name.partition(":")
    entry = ZOO.get(_canonical(base))
    if not sep:
        return entry
    block = block.strip().lower()
    if block not in BLOCKS:
        raise UnknownNameError(f"zoo name {name!r}: block {block!r} is unknown; allowed: {', '.join(BLOCKS)}")
    if block == DEFAULT_BLOCK:
        return entry
    return _replace(entry, name=f"{entry.name}:{block}", block=block)


def get(name: str, num_classes: int = 1000, in_channels: int = 3) -> RepVGGSpec:
    """The spec of zoo config ``name`` (e.g. ``A0``, ``RepVGG-B1g4``, ``repvgg_b1g4``)."""
    return get_entry(name).spec(num_classes=num_classes, in_channels=in_channels)


def list_names() -> list[str]:
    return ZOO.list()


def table(resolution: int = 224, num_classes: int = 1000) -> list[dict]:
    """One row per zoo config: structure, counted params/MACs and the paper's figures."""
    from ..counting import complexity

    rows = []
    for name in ZOO:
        e = ZOO.get(name)
        spec = e.spec(num_classes=num_classes)
        c = complexity(spec, resolution=resolution)
        rows.append(
            {
                "name": name,
                "depths": "-".join(map(str, e.depths)),
                "a": e.a,
                "b": e.b,
                "groups": f"g{e.g} {e.groupwise}" if e.g > 1 else "-",
                "se": "yes" if e.use_se else "-",
                "params_M": round(c.params / 1e6, 3),
                "GMACs": round(c.macs / 1e9, 3),
                "paper_params_M": e.paper_params_m,
                "paper_GMACs": e.paper_gmacs,
                "hash": spec.hash,
            }
        )
    return rows
