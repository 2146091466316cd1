"""Import pretrained RepVGG weights from the layouts users have on disk.

Two foreign layouts are understood, train-form or deploy-form, detected from
the keys: the official repository's (``stage0``, ``stage1.0.rbr_dense.conv``,
``rbr_1x1``, ``rbr_identity``, ``rbr_reparam``, ``linear``) and timm's
(``stem``, ``stages.S.B.conv_kxk.conv``, ``conv_1x1``, ``identity``,
``reparam_conv``, ``attn.fc1/fc2``, ``head.fc``). Keys are renamed to ours,
the spec is inferred from the tensor shapes (or checked against a given one),
and every mismatch names the key and both shapes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch

from .checkpoint import (
    build_checkpoint,
    is_checkpoint_data,
    load_state_dict_checked,
    parse_checkpoint,
    read_torch_file,
)
from .errors import SpecError, WeightsError
from .model import RepVGG, build_model
from .registry import Registry
from .spec import RepVGGSpec

__all__ = [
    "LAYOUTS",
    "ImportedWeights",
    "detect_layout",
    "to_native",
    "infer_spec",
    "import_weights",
    "unwrap_state_dict",
    "load_any",
]

# (pattern, replacement) pairs applied in order to every key.
_Rules = list[tuple[str, str]]

_OFFICIAL: _Rules = [
    (r"^stage0\.", "stages.0.0."),
    (r"^stage(\d+)\.(\d+)\.", r"stages.\1.\2."),
    (r"\.rbr_dense\.", ".conv3x3."),
    (r"\.rbr_1x1\.", ".conv1x1."),
    (r"\.rbr_identity\.", ".identity."),
    (r"\.rbr_reparam\.", ".reparam."),
    (r"^linear\.", "head."),
]

_TIMM: _Rules = [
    (r"^stem\.", "stages.0.0."),
    (r"\.conv_kxk\.", ".conv3x3."),
    (r"\.conv_1x1\.", ".conv1x1."),
    (r"\.reparam_conv\.", ".reparam."),
    (r"\.attn\.fc1\.", ".se.down."),
    (r"\.attn\.fc2\.", ".se.up."),
    (r"^head\.fc\.", "head."),
]


def _timm_stage_shift(key: str) -> str:
    """timm counts body stages from 0 after a separate stem; ours has the stem as stage 0."""
    return re.sub(r"^stages\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) + 1}.", key)


def _rename(rules: _Rules, pre: Callable[[str], str] | None = None) -> Callable[[str], str]:
    def rename(key: str) -> str:
        if pre is not None:
            key = pre(key)
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        return key

    return rename


LAYOUTS: Registry[Callable[[str], str]] = Registry("weights layout")
LAYOUTS.register("repvgg_nas", lambda k: k)
LAYOUTS.register("official", _rename(_OFFICIAL))
# The stage shift must run before the stem becomes stages.0.0.
LAYOUTS.register("timm", _rename(_TIMM, pre=_timm_stage_shift))

_NATIVE_LAYER = re.compile(r"^stages\.(\d+)\.(\d+)\.(conv3x3|conv1x1|identity|reparam|se)\.")


class ImportedWeights(NamedTuple):
    model: RepVGG
    spec: RepVGGSpec
    layout: str
    deploy: bool


def unwrap_state_dict(obj: object, source: str = "state_dict") -> dict[str, torch.Tensor]:
    """Accept ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers and a DataParallel ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{source}: expected a state_dict (a mapping of names to tensors)")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise WeightsError(f"{source}: entry {k!r} is not a named tensor; not a state_dict")
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of ``state_dict`` ("repvgg_nas", "official" or "timm")."""
    keys = list(state_dict)
    if any(k.startswith("stage0.") or ".rbr_" in k for k in keys):
        return "official"
    if any(k.startswith("stem.") or ".conv_kxk." in k or ".reparam_conv." in k for k in keys):
        return "timm"
    if any(_NATIVE_LAYER.match(k) for k in keys):
        return "repvgg_nas"
    sample = ", ".join(keys[:3])
    raise WeightsError(
        f"cannot tell the layout of this state_dict (first keys: {sample}); expected the "
        f"official RepVGG keys (stage0.*, rbr_dense.*), timm keys (stem.*, conv_kxk.*) or ours"
    )


def to_native(
    state_dict: Mapping[str, torch.Tensor], layout: str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Rename keys to our layout; returns the renamed dict and the layout name used."""
    native, layout, _ = _to_native(state_dict, layout)
    return native, layout


def _to_native(
    state_dict: Mapping[str, torch.Tensor], layout: str | None
) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    layout = LAYOUTS.canonical(layout) if layout else detect_layout(state_dict)
    rename = LAYOUTS.get(layout)
    out: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}
    for k, v in state_dict.items():
        new = rename(k)
        if new in out:
            raise WeightsError(f"keys collide after renaming from the {layout} layout: {k!r}")
        out[new], original[new] = v, k
    return out, layout, original


def _form(native: Mapping[str, torch.Tensor]) -> bool:
    """True for deploy-form weights; refuses a mix of the two forms."""
    kinds = {m.group(3) for k in native if (m := _NATIVE_LAYER.match(k))}
    train, deploy = bool(kinds & {"conv3x3", "conv1x1", "identity"}), "reparam" in kinds
    if train and deploy:
        raise WeightsError("state_dict mixes train-form (3x3/1x1 branches) and deploy-form keys")
    if not (train or deploy):
        raise WeightsError("state_dict has no RepVGG block weights")
    return deploy


def infer_spec(native: Mapping[str, torch.Tensor], in_channels: int | None = None) -> RepVGGSpec:
    """Derive the spec (depths, per-layer widths and groups, classes, SE) from tensor shapes.

    Strides cannot be seen in weights; the paper's stride 2 per stage is assumed.
    """
    deploy = _form(native)
    conv = "reparam.weight" if deploy else "conv3x3.conv.weight"
    blocks: dict[tuple[int, int], torch.Tensor] = {}
    for k, v in native.items():
        m = _NATIVE_LAYER.match(k)
        if m and k.endswith(conv) and k == f"stages.{m.group(1)}.{m.group(2)}.{conv}":
            blocks[(int(m.group(1)), int(m.group(2)))] = v
    if not blocks:
        raise WeightsError(f"state_dict has no '*.{conv}' tensors to infer the architecture from")
    n_stages = max(s for s, _ in blocks) + 1
    depths = []
    for s in range(n_stages):
        idx = sorted(b for st, b in blocks if st == s)
        if idx != list(range(len(idx))) or not idx:
            raise WeightsError(f"stage {s} blocks are not numbered 0..N-1 (found {idx})")
        depths.append(len(idx))
    widths, groups = [], []
    cin = in_channels
    for s, d in enumerate(depths):
        for b in range(d):
            w = blocks[(s, b)]
            if w.ndim != 4 or tuple(w.shape[2:]) != (3, 3):
                raise WeightsError(f"stages.{s}.{b}.{conv} has shape {tuple(w.shape)}, not a 3x3 kernel")
            cout, per_group = int(w.shape[0]), int(w.shape[1])
            if cin is None:  # stem: assume one group
                cin = per_group
            if cin % per_group:
                raise WeightsError(
                    f"stages.{s}.{b}.{conv} has {per_group} input channels per group, "
                    f"which does not divide the previous layer's {cin} channels"
                )
            widths.append(cout)
            groups.append(cin // per_group)
            cin = cout
    head = native.get("head.weight")
    if head is None or head.ndim != 2:
        raise WeightsError("state_dict has no linear head weight ('linear.weight' / 'head.fc.weight')")
    se_down = native.get("stages.0.0.se.down.weight")
    se_reduction = int(widths[0] // se_down.shape[0]) if se_down is not None else 16
    try:
        return RepVGGSpec(
            depths=tuple(depths),
            widths=tuple(widths),
            groups=tuple(groups),
            strides=(2,) * len(depths),
            num_classes=int(head.shape[0]),
            in_channels=int(blocks[(0, 0)].shape[1]) * groups[0],
            use_se=se_down is not None,
            se_reduction=max(1, se_reduction),
        )
    except SpecError as e:
        raise WeightsError(f"the weights describe an invalid architecture: {e}") from None


def import_weights(
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    spec: RepVGGSpec | None = None,
    layout: str | None = None,
    name: str | None = None,
) -> ImportedWeights:
    """Load official, timm or our own weights into a model of ours.

    ``spec`` (e.g. ``zoo.get("B1g4")``) is checked against the weights; without
    it the spec is inferred from them. Its ``num_classes`` follows the weights' head.
    """
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else "state_dict"
    raw = read_torch_file(source) if isinstance(source, (str, os.PathLike)) else source
    sd = unwrap_state_dict(raw, name)
    native, layout, original = _to_native(sd, layout)
    deploy = _form(native)
    if spec is None:
        spec = infer_spec(native)
    elif "head.weight" in native and native["head.weight"].ndim == 2:
        spec = spec.with_num_classes(int(native["head.weight"].shape[0]))
    model = build_model(spec, deploy=deploy)
    # Missing keys are ours (the file lacks them); others are shown as the file names them.
    load_state_dict_checked(model, native, source=f"{name} ({layout} layout)", shown=original)
    return ImportedWeights(model.eval(), spec, layout, deploy)


def load_any(path: str | os.PathLike, spec: RepVGGSpec | None = None) -> ImportedWeights:
    """Load our checkpoint or an official/timm state_dict file, whichever ``path`` holds.

    With ``spec``, our checkpoint's stored spec must agree with it (up to ``num_classes``).
    """
    raw = read_torch_file(path)
    if not is_checkpoint_data(raw):
        return import_weights(raw, spec, name=str(path))
    model, ckpt = build_checkpoint(parse_checkpoint(raw, path), path)
    if spec is not None and spec.with_num_classes(ckpt.spec.num_classes) != ckpt.spec:
        raise WeightsError(
            f"{path}: the checkpoint holds {ckpt.spec.summary()}, which is not the "
            f"requested architecture {spec.summary()}"
        )
    return ImportedWeights(model, ckpt.spec, "repvgg_nas", ckpt.deploy)
