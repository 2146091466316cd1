"""Proxy datasets: the embedded synthetic set, CIFAR and ImageFolder from disk, config validation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from repvgg_nas.data import (
    DATASETS,
    SYNTHETIC_CLASSES,
    DataBundle,
    DataConfig,
    augment_batch,
    load_data,
    make_synthetic,
)
from repvgg_nas.errors import ConfigError, RepVGGNasError
from .helpers import fake_cifar10 as _fake_cifar10, png_tree, write_cifar_batch as _write_batch

# ---------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------


def test_synthetic_same_seed_is_bit_identical() -> None:
    x1, y1 = make_synthetic(40, resolution=16, seed=3)
    x2, y2 = make_synthetic(40, resolution=16, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_synthetic_different_seed_differs() -> None:
    x1, _ = make_synthetic(40, resolution=16, seed=3)
    x2, _ = make_synthetic(40, resolution=16, seed=4)
    assert not torch.equal(x1, x2)


def test_synthetic_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_synthetic(20, resolution=16, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_synthetic_bundle_shapes_and_balance() -> None:
    data = load_data({"train_size": 200, "val_size": 100, "resolution": 16, "seed": 1})
    assert isinstance(data, DataBundle)
    assert data.name == "synthetic"
    assert data.train_x.shape == (200, 3, 16, 16) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (100, 3, 16, 16)
    assert data.train_y.dtype == torch.int64
    assert data.num_classes == 10 == len(data.classes) == len(SYNTHETIC_CLASSES)
    assert data.in_channels == 3 and data.resolution == 16
    assert torch.bincount(data.train_y, minlength=10).tolist() == [20] * 10
    assert torch.bincount(data.val_y, minlength=10).tolist() == [10] * 10
    # Mirroring changes an oriented texture's class: the bundle must not flip.
    assert data.hflip is False
    # Train and val come from different image streams.
    assert not torch.equal(data.train_x[:100], data.val_x)


def test_synthetic_images_are_not_degenerate() -> None:
    x, y = make_synthetic(100, resolution=32, seed=0)
    assert x.float().std() > 30  # real contrast, not a flat field
    per_class = torch.stack([x[y == c].float().mean(0) for c in range(10)])
    assert per_class.std(0).mean() > 1  # classes differ on average


def test_normalize_standardizes_training_set() -> None:
    data = load_data({"train_size": 200, "val_size": 20, "resolution": 16})
    z = data.normalize(data.train_x)
    assert z.dtype == torch.float32
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-2)


def _class_sorted_bundle(per_class: int = 40, classes: int = 5) -> DataBundle:
    """Each image is filled with its class index, stored in class order as ImageFolder does."""
    y = torch.arange(classes).repeat_interleave(per_class)
    x = (y * 10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    return DataBundle("sorted", x, y, x[:4], y[:4], classes, tuple(map(str, range(classes))),
                      (0.0,) * 3, (1 / 255,) * 3)  # normalize() then gives back the raw pixel value


def test_sample_images_mix_classes_even_when_stored_sorted() -> None:
    data = _class_sorted_bundle()
    x = data.sample_images(32)
    assert x.shape == (32, 3, 8, 8) and x.dtype == torch.float32
    labels = (x[:, 0, 0, 0] / 10).round().long()
    assert len(set(labels.tolist())) > 1  # the first 32 stored images are all class 0
    assert torch.equal(x, data.sample_images(32)) and not torch.equal(x, data.sample_images(32, seed=1))
    assert data.sample_images(10_000).shape[0] == data.train_size


def test_train_batches_cover_epoch_and_are_seeded() -> None:
    data = load_data({"train_size": 100, "val_size": 10, "resolution": 16})

    def epoch(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [x for x, _ in data.train_batches(32, g)]

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert len(a) == data.steps_per_epoch(32) == 3  # last partial batch dropped
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    val = list(data.val_batches(4))
    assert sum(len(y) for _, y in val) == 10


def _all_crops(img: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    sources = [padded, padded.flip(-1)] if flip else [padded]
    h, w = img.shape[-2:]
    offsets = range(2 * pad + 1)
    return [s[:, i : i + h, j : j + w] for s in sources for i in offsets for j in offsets]


@pytest.mark.parametrize("flip", [True, False])
def test_augment_batch_is_a_padded_crop(flip: bool) -> None:
    x = torch.randint(1, 255, (16, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, g, pad=2, flip=flip)
    assert out.shape == x.shape and out.dtype == x.dtype
    for b in range(16):
        assert any(torch.equal(out[b], c) for c in _all_crops(x[b], 2, flip))
    if flip:  # some image got mirrored (the mirrored crops are not all plain ones)
        mirrored = [
            not any(torch.equal(out[b], c) for c in _all_crops(x[b], 2, False)) for b in range(16)
        ]
        assert any(mirrored)
    assert torch.equal(augment_batch(x, g, pad=0, flip=False), x)


# ---------------------------------------------------------------------------
# config validation
# ---------------------------------------------------------------------------


def test_default_config_is_synthetic() -> None:
    cfg = DataConfig.from_dict(None)
    assert cfg.name == "synthetic" and cfg.download is False
    assert DataConfig.from_dict(cfg.to_dict()) == cfg


def test_registry_lists_all_datasets() -> None:
    assert set(DATASETS) == {"synthetic", "cifar10", "cifar100", "imagefolder"}


def test_unknown_key_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"data.bogus: unknown key; allowed keys in data: .*resolution"):
        DataConfig.from_dict({"bogus": 1})


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ConfigError, match="cifar10"):
        DataConfig(name="cifar")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"resolution": 4}, "data.resolution"),
        ({"resolution": "32"}, "data.resolution: must be an integer"),
        ({"train_size": 0}, "data.train_size"),
        ({"seed": -1}, "data.seed"),
        ({"download": "yes"}, "data.download"),
        ({"val_fraction": 1.5}, "data.val_fraction"),
        ({"root": "/tmp"}, "not used by the synthetic"),
        ({"name": "imagefolder"}, "data.root: is required"),
        ({"name": "imagefolder", "root": "/tmp", "download": True}, "data.download: is only supported"),
    ],
)
def test_bad_values_are_config_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        DataConfig(**kwargs)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_missing_path_is_one_clear_error_and_writes_nothing(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(ConfigError) as info:
        load_data({"name": name, "root": str(missing)})
    msg = str(info.value)
    assert str(missing) in msg and name in msg and "does not exist" in msg
    assert isinstance(info.value, RepVGGNasError)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        DataConfig(name="cifar10", root=str(f))


# ---------------------------------------------------------------------------
# CIFAR in torchvision's pickle layout (a tiny fake written here, no network)
# ---------------------------------------------------------------------------


def test_cifar10_loads_fake_directory(tmp_path: Path) -> None:
    train_imgs, train_labels = _fake_cifar10(tmp_path)
    data = load_data({"name": "cifar10", "root": str(tmp_path)})
    assert data.name == "cifar10"
    assert data.train_x.shape == (30, 3, 32, 32) and data.val_x.shape == (8, 3, 32, 32)
    assert data.num_classes == 10 and data.classes[3] == "class3"
    assert data.train_y.tolist() == train_labels
    assert torch.equal(data.train_x, torch.from_numpy(train_imgs))  # CHW order preserved
    assert data.hflip is True


def test_cifar10_accepts_batches_folder_subset_and_resize(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    data = load_data(
        {
            "name": "cifar10",
            "root": str(tmp_path / "cifar-10-batches-py"),
            "train_size": 12,
            "val_size": 4,
            "resolution": 16,
        }
    )
    assert data.train_x.shape == (12, 3, 16, 16) and data.val_x.shape == (4, 3, 16, 16)


def test_cifar10_empty_root_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cifar-10-batches-py"):
        load_data({"name": "cifar10", "root": str(tmp_path)})


def test_cifar10_missing_file_is_named(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3"):
        load_data({"name": "cifar10", "root": str(tmp_path)})


def test_cifar100_loads_fake_directory(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 20), ("test", 5)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        _write_batch(folder / split, images, list(range(n)), "fine_labels")
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    data = load_data({"name": "cifar100", "root": str(tmp_path)})
    assert data.num_classes == 100
    assert data.train_x.shape == (20, 3, 32, 32) and data.train_y.tolist() == list(range(20))


# ---------------------------------------------------------------------------
# ImageFolder (tiny PNG trees written here)
# ---------------------------------------------------------------------------


def test_imagefolder_with_train_val_split_folders(tmp_path: Path) -> None:
    colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    png_tree(tmp_path / "train", colours, 3)
    png_tree(tmp_path / "val", colours, 2)
    data = load_data({"name": "imagefolder", "root": str(tmp_path), "resolution": 16})
    assert data.classes == ("blue", "red") and data.num_classes == 2
    assert data.train_x.shape == (6, 3, 16, 16) and data.val_x.shape == (4, 3, 16, 16)
    red = data.train_x[data.train_y == 1]
    assert int(red[:, 0].min()) > 200 and int(red[:, 2].max()) < 50  # pixels survived the resize


def test_imagefolder_single_tree_is_split_deterministically(tmp_path: Path) -> None:
    png_tree(tmp_path, {"a": (10, 10, 10), "b": (200, 200, 200), "c": (0, 90, 0)}, 4)
    cfg = {"name": "imagefolder", "root": str(tmp_path), "resolution": 8, "val_fraction": 0.25}
    d1, d2 = load_data(cfg), load_data(cfg)
    assert d1.train_size + d1.val_size == 12 and d1.val_size == 3
    assert torch.equal(d1.val_x, d2.val_x) and torch.equal(d1.train_y, d2.train_y)
    sub = load_data({**cfg, "train_size": 5})
    assert sub.train_size == 5


def test_imagefolder_without_images_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ConfigError, match="imagefolder"):
        load_data({"name": "imagefolder", "root": str(tmp_path)})


def test_imagefolder_with_one_class_is_refused(tmp_path: Path) -> None:
    png_tree(tmp_path, {"only": (1, 2, 3)}, 3)
    with pytest.raises(ConfigError, match=r"1 class folder\(s\) \(only\).*at least 2"):
        load_data({"name": "imagefolder", "root": str(tmp_path), "resolution": 8})


@pytest.mark.parametrize("content", [b"", b"not a png at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"])
def test_imagefolder_corrupt_image_names_the_file(tmp_path: Path, content: bytes) -> None:
    png_tree(tmp_path, {"a": (10, 10, 10), "b": (200, 200, 200)}, 2)
    bad = tmp_path / "b" / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match="broken.png"):
        load_data({"name": "imagefolder", "root": str(tmp_path), "resolution": 8, "val_fraction": 0.5})


@pytest.mark.parametrize(("name", "default"), [("synthetic", False), ("imagefolder", True)])
def test_hflip_default_depends_on_the_dataset_and_can_be_set(tmp_path: Path, name: str, default: bool) -> None:
    base = {"name": name, "resolution": 8, "train_size": 8, "val_size": 4}
    if name == "imagefolder":
        png_tree(tmp_path, {"a": (10, 10, 10), "b": (200, 200, 200)}, 3)
        base["root"] = str(tmp_path)
    assert DataConfig.from_dict(base).hflip is default
    assert DataConfig.from_dict(base).to_dict()["hflip"] is default  # recorded with the study
    flipped = DataConfig.from_dict({**base, "hflip": not default})
    assert flipped.hflip is (not default) and load_data(flipped).hflip is (not default)
    with pytest.raises(ConfigError, match="data.hflip: must be true/false, got 'no'"):
        DataConfig.from_dict({**base, "hflip": "no"})
