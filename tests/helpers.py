"""Plain test helpers (not fixtures): models with real BN statistics, tiny studies on disk."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, so fusion is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


TINY_SPACE = """
depths = [1, 1, {low = 1, high = 2}, {low = 1, high = 2}, 1]
a = {choices = [0.125, 0.25]}
b = {choices = [0.25, 0.5]}
"""

TINY_STUDY = """
space = "{space}"
n_trials = {n}
seed = {seed}
[data]
name = "synthetic"
resolution = 16
train_size = {train_size}
val_size = 32
[train]
epochs = {epochs}
batch_size = 32
[measure]
device = "cpu"
batch_size = 2
resolution = 16
warmup = 1
min_repeats = 1
max_repeats = 2
min_repeat_s = 0.0
max_seconds = 0.2
"""


def write_tiny_study(
    folder, n: int = 3, seed: int = 0, space: str = TINY_SPACE, head: str = "", tail: str = "",
    name: str = "tiny", train_size: int = 64, epochs: int = 1,
):
    """A study that trains 16x16 nets on 64 images: a whole trial takes about a second.

    ``train_size``/``epochs`` make a trial slow enough to be killed mid-way.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.toml").write_text(space)
    path = folder / f"{name}.toml"
    text = TINY_STUDY.format(space=folder / "space.toml", n=n, seed=seed, train_size=train_size, epochs=epochs)
    path.write_text(head + text + tail)
    return path


def png_tree(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int, size: int = 20) -> None:
    from PIL import Image

    for name, colour in classes.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size + i, size), colour).save(d / f"{i}.png")


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], key: str) -> None:
    with open(path, "wb") as f:
        pickle.dump({"data": images.reshape(len(labels), -1), key: labels}, f)


def fake_cifar10(root: Path, per_batch: int = 6) -> tuple[np.ndarray, list[int]]:
    """A tiny CIFAR-10 in torchvision's pickle layout under ``root/cifar-10-batches-py`` (random pixels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_imgs, train_labels = [], []
    for i in range(1, 6):
        imgs = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        write_cifar_batch(folder / f"data_batch_{i}", imgs, labels, "labels")
        train_imgs.append(imgs)
        train_labels += labels
    test = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(folder / "test_batch", test, list(range(8)), "labels")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return np.concatenate(train_imgs), train_labels


# Measurement settings that keep a throughput test quick and steady on 2 shared cores.
FAST_MEASURE = dict(
    device="cpu", batch_size=2, resolution=32, threads=1, warmup=1,
    min_repeats=3, max_repeats=3, min_repeat_s=0.0, max_seconds=1.0,
)
