"""Checkpoints: ``{format_version, spec, deploy, state_dict, meta}``.

A checkpoint always carries its spec, so a searched or pruned network loads
with no other input. Files are written atomically (temp file + ``os.replace``)
and read with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, SpecError, WeightsError
from .files import atomic_write
from .model import RepVGG, build_model, is_deploy
from .spec import RepVGGSpec

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "atomic_write",
    "save_checkpoint",
    "load_checkpoint",
    "parse_checkpoint",
    "is_checkpoint_data",
    "load_model",
    "read_torch_file",
    "load_state_dict_checked",
]

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    spec: RepVGGSpec
    state_dict: dict[str, torch.Tensor]
    deploy: bool
    meta: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None  # a paused training run (TrainState.to_dict()), rung checkpoints only

    def build(self) -> RepVGG:
        """Rebuild the model from the stored spec and load the weights (eval mode)."""
        model = build_model(self.spec, deploy=self.deploy)
        load_state_dict_checked(model, self.state_dict, source="checkpoint")
        return model.eval()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    spec: RepVGGSpec | None = None,
    meta: Mapping[str, Any] | None = None,
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with its spec. ``meta`` holds plain values only; ``train_state``
    (tensors and plain containers) lets a paused training run continue (:class:`repvgg_nas.train.TrainState`)."""
    spec = spec if spec is not None else getattr(model, "spec", None)
    if not isinstance(spec, RepVGGSpec):
        raise ValueError("save_checkpoint needs a spec (model.spec or the spec argument)")
    _check_plain(meta or {}, "meta")
    payload = {
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "deploy": is_deploy(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        payload["train_state"] = dict(train_state)
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Refuse values that ``weights_only`` loading would reject later."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    else:
        raise TypeError(f"{where}: {type(value).__name__} is not a plain value (str/number/list/dict)")


def read_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for every way a file can be bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise CheckpointError(
                f"{path}: refused to load: it holds pickled Python objects, not only "
                f"tensors and plain containers (weights_only loading)"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(". ")[0]
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}"
        ) from None


def is_checkpoint_data(data: object) -> bool:
    """True when a loaded object has the shape of our checkpoints (not a bare state_dict)."""
    return isinstance(data, Mapping) and "format_version" in data and "spec" in data


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a repvgg-nas checkpoint (weights not yet loaded into a model)."""
    return parse_checkpoint(read_torch_file(path), path)


def parse_checkpoint(data: object, path: str | os.PathLike) -> Checkpoint:
    """Validate an already-loaded checkpoint object; ``path`` is only used in messages."""
    if not is_checkpoint_data(data):
        raise CheckpointError(
            f"{path}: not a repvgg-nas checkpoint (no format_version/spec); an official "
            f"RepVGG or timm state_dict can be converted with `python -m repvgg_nas.convert`"
        )
    version = data["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    try:
        spec = RepVGGSpec.from_dict(data["spec"])
    except SpecError as e:
        raise CheckpointError(f"{path}: stored spec is invalid: {e}") from None
    state_dict = data.get("state_dict")
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}: checkpoint has no state_dict")
    return Checkpoint(
        spec=spec,
        state_dict=dict(state_dict),
        deploy=bool(data.get("deploy", False)),
        meta=dict(data.get("meta") or {}),
        train_state=dict(data["train_state"]) if isinstance(data.get("train_state"), Mapping) else None,
    )


def load_model(path: str | os.PathLike) -> tuple[RepVGG, Checkpoint]:
    """Load a checkpoint and rebuild its model from the stored spec (eval mode)."""
    return build_checkpoint(load_checkpoint(path), path)


def build_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> tuple[RepVGG, Checkpoint]:
    try:
        model = ckpt.build()
    except WeightsError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored spec: {e}") from None
    return model, ckpt


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "state_dict",
    shown: Mapping[str, str] | None = None,
) -> None:
    """Load strictly, naming the first shape mismatch or missing/unexpected key.

    ``shown`` maps keys to the names the user's file had (for renamed layouts).
    """
    name = lambda k: repr(shown[k]) if shown and k in shown else repr(k)  # noqa: E731
    own = model.state_dict()
    # Shapes first: with the wrong architecture, the first differing shape is the clearest hint.
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{source}: {name(k)} is a {type(v).__name__}, not a tensor")
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(
                f"{source}: {name(k)} has shape {tuple(v.shape)} but the model expects "
                f"{tuple(own[k].shape)}"
            )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise WeightsError(f"{source}: {what} key {name(keys[0])}{more}")
    model.load_state_dict(state_dict, strict=True)
