"""Trained references kept across studies: a paper reference trains once, not once per study.

A reference's proxy training depends only on its spec, the data and its
augmentation, the training settings as they run on the device, the seed,
the torch build and the training code; which study asked for it does not
matter. So the fused deploy net it ends with is kept under the user's
cache folder (:func:`repvgg_nas.layout.user_cache_dir`), keyed by exactly
those, and a study that wants the same reference loads it instead of
training it. Its accuracy is evaluated again from the loaded net (seconds;
under a quantized runtime that is the quantized net's), and its throughput is
measured as for any trial: the cache saves training, never a measurement.

Files are written atomically (temp file + ``os.replace``), so workers that
train the same reference at once both write a whole file and either one
serves; a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import functools
import importlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..attrs import FINAL_LOSS, FUSION_ERROR, TRAIN_IMAGES_PER_S, TRAIN_SECONDS
from ..checkpoint import load_model, save_checkpoint
from ..errors import RepVGGNasError
from ..layout import user_cache_dir
from ..spec import RepVGGSpec
from ..train import TrainConfig

__all__ = [
    "CACHED_FIGURES", "REFCACHE_FORMAT_VERSION", "CachedReference", "ReferenceCache", "reference_key", "training_code",
]

# The layout of a cached reference (the checkpoint's meta fields below); a file of another version misses.
REFCACHE_FORMAT_VERSION = 1
CACHED_FIGURES = (TRAIN_SECONDS, TRAIN_IMAGES_PER_S, FINAL_LOSS, FUSION_ERROR)  # the trial attrs of the same names


@functools.cache
def training_code() -> str:
    """A hash of the code a trained net's weights depend on (the model, the data pipeline, the training loop):
    an edit of any of them makes every cached result miss rather than be served stale."""
    h = hashlib.sha256()
    for name in ("model", "data", "train"):  # the modules' files, read as bytes
        h.update(Path(str(importlib.import_module(f"..{name}", __package__).__file__)).read_bytes())
    return h.hexdigest()[:16]


def reference_key(spec: RepVGGSpec, data_fingerprint: str, train: TrainConfig, seed: int, *, augment: bool,
                  hflip: bool, device: torch.device | str) -> str:
    """What a trained net's weights depend on: spec, data (its bytes and its augmentation), the training
    settings as they run on ``device`` (``auto`` resolved), seed, torch and the training code."""
    blob = json.dumps({
        "spec": spec.hash, "data": data_fingerprint, "augment": bool(augment), "hflip": bool(augment and hflip),
        "train": train.resolved(device).to_dict(), "seed": int(seed), "torch": torch.__version__,
        "code": training_code(), "format": REFCACHE_FORMAT_VERSION,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class CachedReference(NamedTuple):
    """A trained reference from the cache: the fused deploy net and the figures of the training that made it."""

    model: nn.Module
    train_seconds: float
    train_images_per_s: float
    final_loss: float
    fusion_error: float
    path: Path

    @property
    def figures(self) -> dict[str, float]:
        """The training figures as the trial attrs that hold them (:data:`CACHED_FIGURES`)."""
        return dict(zip(CACHED_FIGURES, (self.train_seconds, self.train_images_per_s, self.final_loss,
                                         self.fusion_error)))


class ReferenceCache:
    """Trained deploy nets of references under ``root`` (default: ``<user cache>/references``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else user_cache_dir() / "references"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get(self, key: str, spec: RepVGGSpec, device: torch.device | str = "cpu") -> CachedReference | None:
        """The cached reference of ``key``, or None (absent, unreadable, another layout or another spec)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            model, ckpt = load_model(path)
        except (RepVGGNasError, OSError, RuntimeError):
            return None  # a damaged entry is a miss: the reference trains again and the entry is rewritten
        meta = ckpt.meta
        if meta.get("refcache_format") != REFCACHE_FORMAT_VERSION or ckpt.spec.hash != spec.hash:
            return None
        if any(not isinstance(meta.get(k), (int, float)) for k in CACHED_FIGURES):
            return None
        return CachedReference(model.to(device).eval(), *(float(meta[k]) for k in CACHED_FIGURES), path)

    def put(self, key: str, deploy: nn.Module, spec: RepVGGSpec, figures: dict[str, Any]) -> Path:
        """Keep a trained reference's deploy net with ``figures`` (train_seconds, train_images_per_s,
        final_loss, fusion_error)."""
        missing = [k for k in CACHED_FIGURES if k not in figures]
        if missing:
            raise ValueError(f"a cached reference needs {missing}")
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"refcache_format": REFCACHE_FORMAT_VERSION, **{k: float(figures[k]) for k in CACHED_FIGURES}}
        return save_checkpoint(self.path(key), deploy, spec, meta=meta)
