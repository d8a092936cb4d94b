"""Tests of bnnflow.pipeline.data: the digits split and the MNIST, CIFAR-10 and image-folder readers.

The MNIST, CIFAR-10 and image-folder sets are tiny synthetic copies written into ``tmp_path`` in torchvision's
on-disk layouts, so nothing is downloaded. ``load_data`` is cached per (frozen) ``DataConfig``; every test
builds its own config, and the tests that need a fresh read call ``load_data.__wrapped__``.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from bnnflow.errors import DataError
from bnnflow.pipeline.config import DataConfig, DatasetName
from bnnflow.pipeline.data import ImageFolderDataset, load_data, stack

DIGITS_TOTAL = 1797
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# --------------------------------------------------------------------------------------------------- helpers


def _idx_bytes(magic: int, array: np.ndarray) -> bytes:
    """A real IDX file: big-endian magic (its last byte is the number of dimensions), the dims, then uint8s."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _make_mnist(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = False, seed: int = 0) -> dict:
    """Write the four MNIST IDX files into ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                  rng.integers(0, 10, n_train, dtype=np.uint8)),
        "t10k": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                 rng.integers(0, 10, n_test, dtype=np.uint8)),
    }
    for prefix, (images, labels) in arrays.items():
        _write(folder / f"{prefix}-images-idx3-ubyte", _idx_bytes(IDX_IMAGES_MAGIC, images), gz)
        _write(folder / f"{prefix}-labels-idx1-ubyte", _idx_bytes(IDX_LABELS_MAGIC, labels), gz)
    return arrays


def _mnist_cfg(root: Path, **kwargs) -> DataConfig:
    return DataConfig(name=DatasetName.MNIST, root=str(root), **kwargs)


def _cifar_batch(rng: np.random.Generator, n: int) -> dict:
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)]}


def _make_cifar(root: Path, n_per_batch: int = 2, n_test: int = 3, seed: int = 0) -> dict[str, dict]:
    """Write data_batch_1..5 and test_batch (pickled dicts) into ROOT/cifar-10-batches-py."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _cifar_batch(rng, n_per_batch) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(rng, n_test)
    for name, batch in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return batches


def _cifar_cfg(root: Path, **kwargs) -> DataConfig:
    return DataConfig(name=DatasetName.CIFAR10, root=str(root), **kwargs)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGB").save(path)


def _solid(width: int, height: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (height, width, 3)).copy()


# Class folders written in a non-sorted order on purpose; colour of every image in that class.
IMAGEFOLDER_CLASSES = {"cat": (200, 10, 10), "ant": (10, 200, 10), "bee": (10, 10, 200)}


def _make_imagefolder(root: Path, test_split: str = "val", size: tuple[int, int] = (20, 12)) -> None:
    """Two train and one test image per class, solid colours, plus a non-image file that must be ignored."""
    for name, rgb in IMAGEFOLDER_CLASSES.items():
        for i in range(2):
            _save_png(root / "train" / name / f"img{i}.png", _solid(*size, rgb))
        _save_png(root / test_split / name / "img0.png", _solid(*size, rgb))
        (root / "train" / name / "notes.txt").write_text("not an image")


def _imagefolder_cfg(root: Path, **kwargs) -> DataConfig:
    return DataConfig(name=DatasetName.IMAGEFOLDER, root=str(root), **kwargs)


def _raises_naming(path: Path | str, cfg: DataConfig) -> DataError:
    with pytest.raises(DataError) as info:
        load_data(cfg)
    assert str(path) in str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------------- digits


def test_digits_split_sizes_and_shapes():
    splits = load_data(DataConfig())
    assert len(splits.train) + len(splits.test) == DIGITS_TOTAL
    assert len(splits.test) == pytest.approx(0.2 * DIGITS_TOTAL, abs=1)
    assert splits.input_shape == (1, 8, 8)
    assert splits.num_classes == 10
    assert splits.class_names == tuple(str(i) for i in range(10))
    image, label = splits.train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert label.dtype == torch.int64


def test_digits_values_in_unit_range():
    splits = load_data(DataConfig())
    for dataset in (splits.train, splits.test):
        x, y = stack(dataset)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.max() == 1.0  # 16 grey levels / 16: the brightest pixel maps to exactly 1
        assert torch.equal(x * 16, torch.round(x * 16))  # 17 grey levels, multiples of 1/16
        assert set(y.tolist()) == set(range(10))


def test_digits_split_is_stratified():
    splits = load_data(DataConfig())
    _, y_train = stack(splits.train)
    _, y_test = stack(splits.test)
    train_counts = torch.bincount(y_train, minlength=10).float()
    test_counts = torch.bincount(y_test, minlength=10).float()
    fraction = test_counts / (train_counts + test_counts)
    assert torch.all((fraction - 0.2).abs() < 0.01), fraction


def test_digits_split_deterministic_for_same_seed():
    cfg = DataConfig(split_seed=7)
    first = stack(load_data.__wrapped__(cfg).test)
    second = stack(load_data.__wrapped__(DataConfig(split_seed=7)).test)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_digits_split_differs_for_other_seed():
    a_x, _ = stack(load_data(DataConfig(split_seed=1)).test)
    b_x, _ = stack(load_data(DataConfig(split_seed=2)).test)
    assert a_x.shape == b_x.shape
    assert not torch.equal(a_x, b_x)


TEST_FRACTIONS = [0.1, 0.5]


@pytest.mark.parametrize("fraction", TEST_FRACTIONS)
def test_digits_test_fraction_sets_test_size(fraction):
    splits = load_data(DataConfig(test_fraction=fraction))
    assert len(splits.test) == pytest.approx(fraction * DIGITS_TOTAL, abs=1)
    assert len(splits.train) + len(splits.test) == DIGITS_TOTAL


def test_digits_limits_cut_splits_to_first_samples():
    full = load_data(DataConfig(split_seed=3))
    cut = load_data(DataConfig(split_seed=3, limit_train=100, limit_test=50))
    assert len(cut.train) == 100 and len(cut.test) == 50
    assert isinstance(cut.train, Subset)
    full_x, full_y = stack(full.train)
    cut_x, cut_y = stack(cut.train)
    assert torch.equal(cut_x, full_x[:100]) and torch.equal(cut_y, full_y[:100])
    assert torch.equal(stack(cut.test)[0], stack(full.test)[0][:50])
    assert cut.input_shape == full.input_shape and cut.num_classes == full.num_classes


LIMITS_NOT_CUTTING = [0, DIGITS_TOTAL, 10**6]


@pytest.mark.parametrize("limit", LIMITS_NOT_CUTTING)
def test_digits_limit_zero_or_large_keeps_whole_split(limit):
    splits = load_data(DataConfig(limit_train=limit, limit_test=limit))
    assert isinstance(splits.train, TensorDataset) and isinstance(splits.test, TensorDataset)
    assert len(splits.train) + len(splits.test) == DIGITS_TOTAL


def test_load_data_cached_per_config():
    cfg = DataConfig(split_seed=11, limit_train=10)
    assert load_data(cfg) is load_data(DataConfig(split_seed=11, limit_train=10))


# ----------------------------------------------------------------------------------------------------- MNIST

MNIST_SUBDIRS = ["MNIST/raw", "raw", "."]


@pytest.mark.parametrize("subdir", MNIST_SUBDIRS)
def test_mnist_reads_pixels_and_labels(tmp_path, subdir):
    arrays = _make_mnist(tmp_path / subdir)
    splits = load_data(_mnist_cfg(tmp_path))
    assert splits.input_shape == (1, 28, 28)
    assert splits.num_classes == 10
    for dataset, prefix in ((splits.train, "train"), (splits.test, "t10k")):
        images, labels = arrays[prefix]
        x, y = stack(dataset)
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
        expected = torch.from_numpy(images[:, None].astype(np.float32) / 255.0)
        assert torch.allclose(x, expected, atol=1e-7, rtol=0)
        assert torch.equal(torch.round(x * 255).to(torch.uint8), torch.from_numpy(images[:, None]))
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()


def test_mnist_reads_gzipped_files(tmp_path):
    arrays = _make_mnist(tmp_path / "MNIST" / "raw", gz=True, seed=1)
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()
    splits = load_data(_mnist_cfg(tmp_path))
    x, y = stack(splits.test)
    images, labels = arrays["t10k"]
    assert torch.equal(torch.round(x * 255).to(torch.uint8), torch.from_numpy(images[:, None]))
    assert y.tolist() == labels.tolist()
    assert len(splits.train) == len(arrays["train"][0])


def test_mnist_limits_cut_splits(tmp_path):
    _make_mnist(tmp_path / "MNIST" / "raw", n_train=6, n_test=4)
    splits = load_data(_mnist_cfg(tmp_path, limit_train=2, limit_test=3))
    assert len(splits.train) == 2 and len(splits.test) == 3


def test_mnist_root_unset_raises():
    with pytest.raises(DataError, match="data.root"):
        load_data(DataConfig(name=DatasetName.MNIST))


def test_mnist_root_missing_raises(tmp_path):
    missing = tmp_path / "no-such-folder"
    _raises_naming(missing, _mnist_cfg(missing))


def test_mnist_files_missing_raises(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    err = _raises_naming(tmp_path, _mnist_cfg(tmp_path))
    assert "MNIST/raw" in str(err)  # the expected layout is spelled out


def test_mnist_test_files_missing_raises(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _make_mnist(folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    _raises_naming(tmp_path, _mnist_cfg(tmp_path))


def test_mnist_truncated_idx_raises(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _make_mnist(folder)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    err = _raises_naming(path, _mnist_cfg(tmp_path))
    assert "truncated" in str(err)


def test_mnist_truncated_gzip_raises(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _make_mnist(folder, gz=True)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    _raises_naming(path, _mnist_cfg(tmp_path))


WRONG_MAGIC_FILES = [
    ("train-images-idx3-ubyte", IDX_LABELS_MAGIC),  # a labels header on an images file
    ("train-labels-idx1-ubyte", IDX_IMAGES_MAGIC),
    ("t10k-images-idx3-ubyte", 0x12345603),
]


@pytest.mark.parametrize(("name", "magic"), WRONG_MAGIC_FILES)
def test_mnist_wrong_magic_raises(tmp_path, name, magic):
    folder = tmp_path / "MNIST" / "raw"
    _make_mnist(folder)
    path = folder / name
    path.write_bytes(magic.to_bytes(4, "big") + path.read_bytes()[4:])
    err = _raises_naming(path, _mnist_cfg(tmp_path))
    assert "magic" in str(err)


def test_mnist_image_label_count_mismatch_raises(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _make_mnist(folder, n_train=5)
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(IDX_LABELS_MAGIC, np.zeros(4, dtype=np.uint8)))
    _raises_naming(labels, _mnist_cfg(tmp_path))


# -------------------------------------------------------------------------------------------------- CIFAR-10


def test_cifar10_reads_pixels_and_labels(tmp_path):
    batches = _make_cifar(tmp_path)
    splits = load_data(_cifar_cfg(tmp_path))
    assert splits.input_shape == (3, 32, 32)
    assert splits.num_classes == 10 and splits.class_names == CIFAR_CLASSES
    x_train, y_train = stack(splits.train)
    x_test, y_test = stack(splits.test)
    assert x_train.shape == (10, 3, 32, 32) and x_test.shape == (3, 3, 32, 32)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    train_data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    expected = torch.from_numpy(train_data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    assert torch.allclose(x_train, expected, atol=1e-7, rtol=0)
    assert y_train.tolist() == train_labels
    assert torch.equal(torch.round(x_test * 255).to(torch.uint8),
                       torch.from_numpy(batches["test_batch"][b"data"].reshape(-1, 3, 32, 32)))
    assert y_test.tolist() == batches["test_batch"][b"labels"]
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0


def test_cifar10_pixel_order_is_channel_major(tmp_path):
    _make_cifar(tmp_path)
    # Row of the first test image: red plane 10, green plane 20, blue plane 30, then one marked pixel per plane.
    row = np.repeat(np.array([10, 20, 30], dtype=np.uint8), 1024)
    row[0 * 1024 + 2 * 32 + 5] = 255  # channel 0, y=2, x=5
    row[1 * 1024 + 31 * 32 + 0] = 254  # channel 1, y=31, x=0
    row[2 * 1024 + 0 * 32 + 31] = 253  # channel 2, y=0, x=31
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": row[None, :], b"labels": [7]}, f)
    splits = load_data(_cifar_cfg(tmp_path))
    image, label = splits.test[0]
    codes = torch.round(image * 255).to(torch.int64)
    assert int(label) == 7
    assert codes[0, 2, 5] == 255 and codes[1, 31, 0] == 254 and codes[2, 0, 31] == 253
    codes[0, 2, 5], codes[1, 31, 0], codes[2, 0, 31] = 10, 20, 30
    for channel, value in enumerate((10, 20, 30)):
        assert torch.all(codes[channel] == value)


def test_cifar10_reads_flat_folder(tmp_path):
    _make_cifar(tmp_path / "inner")
    splits = load_data(_cifar_cfg(tmp_path / "inner" / "cifar-10-batches-py"))
    assert len(splits.train) == 10 and len(splits.test) == 3


def test_cifar10_limits_cut_splits(tmp_path):
    _make_cifar(tmp_path)
    splits = load_data(_cifar_cfg(tmp_path, limit_train=4, limit_test=1))
    assert len(splits.train) == 4 and len(splits.test) == 1


def test_cifar10_root_unset_raises():
    with pytest.raises(DataError, match="data.root"):
        load_data(DataConfig(name=DatasetName.CIFAR10))


CIFAR_MISSING = ["data_batch_3", "test_batch"]


@pytest.mark.parametrize("name", CIFAR_MISSING)
def test_cifar10_batch_missing_raises(tmp_path, name):
    _make_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / name).unlink()
    err = _raises_naming(folder, _cifar_cfg(tmp_path))
    assert name in str(err)


def test_cifar10_corrupt_batch_raises(tmp_path):
    _make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _raises_naming(path, _cifar_cfg(tmp_path))


BAD_CIFAR_PAYLOADS = [
    pytest.param({b"labels": [0]}, id="no-data-key"),
    pytest.param({b"data": np.zeros((1, 3072), dtype=np.uint8)}, id="no-labels-key"),
    pytest.param({b"data": np.zeros((1, 100), dtype=np.uint8), b"labels": [0]}, id="wrong-row-size"),
    pytest.param({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0]}, id="count-mismatch"),
    pytest.param([1, 2, 3], id="not-a-dict"),
]


@pytest.mark.parametrize("payload", BAD_CIFAR_PAYLOADS)
def test_cifar10_malformed_batch_raises(tmp_path, payload):
    _make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(payload))
    _raises_naming(path, _cifar_cfg(tmp_path))


# ----------------------------------------------------------------------------------------------- imagefolder


def test_imagefolder_classes_sorted_and_labels(tmp_path):
    _make_imagefolder(tmp_path)
    splits = load_data(_imagefolder_cfg(tmp_path, image_size=8))
    assert splits.class_names == ("ant", "bee", "cat")
    assert splits.num_classes == 3
    assert splits.input_shape == (3, 8, 8)
    assert isinstance(splits.train, ImageFolderDataset)
    assert len(splits.train) == 6 and len(splits.test) == 3  # notes.txt files are skipped
    for dataset in (splits.train, splits.test):
        x, y = stack(dataset)
        assert x.shape == (len(dataset), 3, 8, 8) and x.dtype == torch.float32
        for image, label in zip(x, y.tolist()):
            rgb = IMAGEFOLDER_CLASSES[splits.class_names[label]]
            expected = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255.0
            assert torch.allclose(image, expected.expand(3, 8, 8), atol=1.5 / 255)
    assert stack(splits.test)[1].tolist() == [0, 1, 2]


IMAGE_SIZES = [8, 16, 40]


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_imagefolder_resizes_to_image_size(tmp_path, size):
    _make_imagefolder(tmp_path, size=(20, 12))  # neither square nor a multiple of the sizes
    splits = load_data(_imagefolder_cfg(tmp_path, image_size=size))
    assert splits.input_shape == (3, size, size)
    image, label = splits.train[0]
    assert image.shape == (3, size, size)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert label == 0


def test_imagefolder_center_crops_wide_image(tmp_path):
    _make_imagefolder(tmp_path)
    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, :8] = (255, 0, 0)  # left half red, right half blue
    wide[:, 8:] = (0, 0, 255)
    _save_png(tmp_path / "val" / "ant" / "img0.png", wide)
    splits = load_data(_imagefolder_cfg(tmp_path, image_size=8))
    image, label = splits.test[0]
    assert label == 0
    codes = torch.round(image * 255).to(torch.int64)
    # Shorter side is already 8, so no scaling; the centre crop keeps columns 4..11 of the 16.
    assert torch.all(codes[0, :, :4] == 255) and torch.all(codes[2, :, :4] == 0)
    assert torch.all(codes[0, :, 4:] == 0) and torch.all(codes[2, :, 4:] == 255)


def test_imagefolder_accepts_test_folder(tmp_path):
    _make_imagefolder(tmp_path, test_split="test")
    splits = load_data(_imagefolder_cfg(tmp_path, image_size=8))
    assert len(splits.test) == 3 and splits.class_names == ("ant", "bee", "cat")


def test_imagefolder_limits_cut_splits(tmp_path):
    _make_imagefolder(tmp_path)
    splits = load_data(_imagefolder_cfg(tmp_path, image_size=8, limit_train=2, limit_test=1))
    assert len(splits.train) == 2 and len(splits.test) == 1
    assert stack(splits.train)[0].shape == (2, 3, 8, 8)


def test_imagefolder_root_unset_raises():
    with pytest.raises(DataError, match="data.root"):
        load_data(DataConfig(name=DatasetName.IMAGEFOLDER))


def test_imagefolder_root_missing_raises(tmp_path):
    missing = tmp_path / "nothing-here"
    _raises_naming(missing, _imagefolder_cfg(missing))


def test_imagefolder_without_val_raises(tmp_path):
    _make_imagefolder(tmp_path)
    for path in sorted((tmp_path / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "val").rmdir()
    err = _raises_naming(tmp_path, _imagefolder_cfg(tmp_path))
    assert "val/" in str(err)


def test_imagefolder_mismatched_classes_raises(tmp_path):
    _make_imagefolder(tmp_path)
    _save_png(tmp_path / "val" / "dog" / "img0.png", _solid(8, 8, (1, 2, 3)))
    err = _raises_naming(tmp_path / "val", _imagefolder_cfg(tmp_path))
    assert "dog" in str(err)


def test_imagefolder_no_class_folders_raises(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    _raises_naming(tmp_path / "train", _imagefolder_cfg(tmp_path))


def test_imagefolder_no_images_raises(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "a" / "readme.txt").write_text("no images here")
    _raises_naming(tmp_path, _imagefolder_cfg(tmp_path))


def test_imagefolder_unreadable_image_raises_on_load(tmp_path):
    _make_imagefolder(tmp_path)
    bad = tmp_path / "train" / "ant" / "img0.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes())
    splits = load_data(_imagefolder_cfg(tmp_path, image_size=8))  # listing succeeds; images load lazily
    assert splits.train.samples[0] == (bad, 0)
    assert splits.train[1][0].shape == (3, 8, 8)  # the good image next to it still loads
    with pytest.raises(DataError) as info:
        splits.train[0]
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------------------------- image_size and channels

DIGITS_SHAPES = [
    pytest.param(0, 0, (1, 8, 8), id="own"),
    pytest.param(8, 1, (1, 8, 8), id="own-spelled-out"),
    pytest.param(32, 3, (3, 32, 32), id="cifar-shaped"),
    pytest.param(12, 0, (1, 12, 12), id="non-integer-factor"),
    pytest.param(0, 3, (3, 8, 8), id="channels-only"),
]


@pytest.mark.parametrize(("size", "channels", "shape"), DIGITS_SHAPES)
def test_digits_image_size_and_channels_set_the_shape(size, channels, shape):
    splits = load_data(DataConfig(image_size=size, channels=channels))
    assert splits.input_shape == shape
    for dataset in (splits.train, splits.test):
        x, y = stack(dataset)
        assert x.shape == (len(y), *shape) and x.dtype == torch.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert len(splits.train) + len(splits.test) == DIGITS_TOTAL


def test_digits_own_shape_spelled_out_is_the_default():
    spelled_out = DataConfig(image_size=8, channels=1)
    for default, spelled in zip(stack(load_data(DataConfig()).train), stack(load_data(spelled_out).train)):
        assert torch.equal(default, spelled)


def test_digits_resize_is_deterministic():
    cfg = DataConfig(image_size=20, channels=3)
    first, second = load_data.__wrapped__(cfg), load_data.__wrapped__(DataConfig(image_size=20, channels=3))
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert all(torch.equal(u, v) for u, v in zip(stack(a), stack(b)))


def test_digits_three_channels_repeat_the_grey_image():
    grey = load_data(DataConfig(image_size=32, channels=1))
    colour = load_data(DataConfig(image_size=32, channels=3))
    for one, three in ((grey.train, colour.train), (grey.test, colour.test)):
        (x1, y1), (x3, y3) = stack(one), stack(three)
        assert torch.equal(x3, x1.repeat(1, 3, 1, 1)) and torch.equal(y1, y3)


def test_digits_upsampling_is_plain_bilinear():
    """8 -> 32 is bilinear interpolation with half-pixel centres, the edge pixels repeated (what the methods
    benchmark trained on before the loader did it)."""
    small, _ = stack(load_data(DataConfig()).test)
    big, _ = stack(load_data(DataConfig(image_size=32)).test)
    expected = torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(big, expected.clamp(0, 1))
    assert torch.equal(big[:, :, :2, :2], small[:, :, :1, :1].expand(-1, -1, 2, 2))  # the corner pixel, repeated


def test_downsampling_is_pils_bilinear_filter(tmp_path):
    """28 -> 14 averages like PIL's antialiased BILINEAR on float images, the image-folder loader's filter."""
    arrays = _make_mnist(tmp_path, n_train=2, n_test=2)
    x, _ = stack(load_data(_mnist_cfg(tmp_path, image_size=14)).train)
    for image, pixels in zip(x, arrays["train"][0]):
        pil = Image.fromarray(pixels.astype(np.float32) / 255.0, mode="F").resize((14, 14), Image.BILINEAR)
        assert torch.allclose(image[0], torch.from_numpy(np.asarray(pil).copy()), atol=1e-6, rtol=0)


def test_mnist_honours_image_size_and_channels(tmp_path):
    arrays = _make_mnist(tmp_path)
    splits = load_data(_mnist_cfg(tmp_path, image_size=32, channels=3))
    assert splits.input_shape == (3, 32, 32)
    x, y = stack(splits.test)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == arrays["t10k"][1].tolist()
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_cifar10_one_channel_is_the_luma(tmp_path):
    batches = _make_cifar(tmp_path)
    splits = load_data(_cifar_cfg(tmp_path, channels=1))
    assert splits.input_shape == (1, 32, 32)
    x, _ = stack(splits.test)
    rgb = batches["test_batch"][b"data"].reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert torch.allclose(x[:, 0].double(), torch.from_numpy(luma), atol=1e-6, rtol=0)


def test_cifar10_honours_image_size(tmp_path):
    _make_cifar(tmp_path)
    splits = load_data(_cifar_cfg(tmp_path, image_size=16))
    assert splits.input_shape == (3, 16, 16)
    x, _ = stack(splits.train)
    assert x.shape == (10, 3, 16, 16) and x.min() >= 0.0 and x.max() <= 1.0


def test_imagefolder_own_size_is_32(tmp_path):
    _make_imagefolder(tmp_path)
    splits = load_data(_imagefolder_cfg(tmp_path))
    assert splits.input_shape == (3, 32, 32) and splits.train[0][0].shape == (3, 32, 32)


def test_imagefolder_one_channel_is_the_luma(tmp_path):
    _make_imagefolder(tmp_path)
    splits = load_data(_imagefolder_cfg(tmp_path, image_size=8, channels=1))
    assert splits.input_shape == (1, 8, 8)
    x, y = stack(splits.test)
    assert x.shape == (3, 1, 8, 8)
    for image, label in zip(x, y.tolist()):
        r, g, b = IMAGEFOLDER_CLASSES[splits.class_names[label]]
        assert torch.allclose(image, torch.full_like(image, (0.299 * r + 0.587 * g + 0.114 * b) / 255), atol=1e-6)
