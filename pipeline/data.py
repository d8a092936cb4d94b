"""Data sets: the bundled digits set, and MNIST, CIFAR-10 and ImageNet-style folders in torchvision's layouts.

Every loader returns images as float tensors in [0, 1] with shape (C, H, W) and integer labels, so that the
models' unsigned 8-bit input quantizer turns a pixel ``p / 255`` back into the integer code ``p`` that the
accelerator takes. ``data.image_size`` and ``data.channels`` (0 = the set's own) reshape every set by one rule
(``image_shape``), so the bundled digits can be fed to a backbone built for CIFAR-10's 3x32x32.

Nothing is downloaded: a missing or malformed folder is a ``DataError`` that names the path and the layout
expected there. torchvision itself is not needed (its wheels clash with the CPU torch here); the files are read
directly.
"""

from __future__ import annotations

import functools
import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from bnnflow.errors import DataError
from bnnflow.pipeline.config import DataConfig, DatasetName
from bnnflow.pipeline.image_shape import IMAGEFOLDER_SIZE, reshape_images, to_channels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")

MNIST_LAYOUT = "ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision.datasets.MNIST)"
CIFAR10_LAYOUT = "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch} (torchvision.datasets.CIFAR10)"
IMAGEFOLDER_LAYOUT = "ROOT/{train,val}/CLASS/IMAGE.{png,jpg} (torchvision.datasets.ImageFolder, ImageNet style)"


@dataclass(frozen=True)
class DataSplits:
    """A train and a test split with what a model needs to know about them."""

    train: Dataset
    test: Dataset
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]


@functools.lru_cache(maxsize=2)
def load_data(cfg: DataConfig) -> DataSplits:
    """Load the configured data set, cut to ``limit_train`` / ``limit_test`` samples when those are set.

    Cached per configuration: validation, training and export in one process read the files once.
    """
    loaders = {
        DatasetName.DIGITS: _load_digits,
        DatasetName.MNIST: _load_mnist,
        DatasetName.CIFAR10: _load_cifar10,
        DatasetName.IMAGEFOLDER: _load_imagefolder,
    }
    splits = loaders[cfg.name](cfg)
    return DataSplits(
        train=_limit(splits.train, cfg.limit_train),
        test=_limit(splits.test, cfg.limit_test),
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        class_names=splits.class_names,
    )


def _limit(dataset: Dataset, n: int) -> Dataset:
    if n <= 0 or n >= len(dataset):
        return dataset
    return torch.utils.data.Subset(dataset, range(n))


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
    """Labels must index the classes: one outside them would fail deep inside the loss, mid-training."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(f"{source}: label {labels[bad[0]]} at index {bad[0]} is outside the {num_classes} classes "
                        f"(0 to {num_classes - 1}); the labels file is damaged or belongs to another data set")


def _tensor_splits(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   class_names: tuple[str, ...], source: str) -> DataSplits:
    _check_labels(y_train, len(class_names), f"{source} (training split)")
    _check_labels(y_test, len(class_names), f"{source} (test split)")
    return DataSplits(
        train=TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.int64))),
        test=TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test.astype(np.int64))),
        input_shape=tuple(x_train.shape[1:]),
        num_classes=len(class_names),
        class_names=class_names,
    )


def _load_digits(cfg: DataConfig) -> DataSplits:
    """scikit-learn's 8x8 digits (1,797 images, 17 grey levels), split with a fixed seed, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    images = reshape_images((images.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32), cfg.image_size, cfg.channels)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=cfg.test_fraction, random_state=cfg.split_seed, stratify=labels
    )
    return _tensor_splits(x_train, y_train, x_test, y_test, tuple(str(i) for i in range(10)), "digits")


def _require_root(cfg: DataConfig, layout: str) -> Path:
    if not cfg.root:
        raise DataError(f"data.root is not set: {cfg.name.value} is read from a local folder laid out as {layout}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (expected {layout})")
    return root


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for directory in dirs:
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read an IDX file (the MNIST format): a big-endian magic, the dimensions, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} could not be read ({err}); re-extract the MNIST files") from None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != expected_magic:
        raise DataError(f"{path} is not an MNIST IDX file (bad magic number); re-extract the MNIST files")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated inside its header; re-extract the MNIST files")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({data.size} bytes of data for shape {dims}); re-extract it")
    return data.reshape(dims)


def _load_mnist(cfg: DataConfig) -> DataSplits:
    root = _require_root(cfg, MNIST_LAYOUT)
    dirs = [root / "MNIST" / "raw", root / "raw", root]
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = _find_file(dirs, f"{prefix}-images-idx3-ubyte")
        lbl = _find_file(dirs, f"{prefix}-labels-idx1-ubyte")
        if img is None or lbl is None:
            raise DataError(f"MNIST files not found under {root} (expected {MNIST_LAYOUT})")
        images, labels = _read_idx(img, 0x00000803), _read_idx(lbl, 0x00000801)
        if len(images) != len(labels):
            raise DataError(f"{img} has {len(images)} images but {lbl} has {len(labels)} labels")
        arrays[split] = (reshape_images((images[:, None] / 255.0).astype(np.float32), cfg.image_size, cfg.channels),
                         labels)
    return _tensor_splits(*arrays["train"], *arrays["test"], tuple(str(i) for i in range(10)), f"MNIST in {root}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of bytes, lists and numpy arrays) and refuses every other class, so a
    crafted batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # any malformed pickle: unpickling raises a wide range of exception types
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err}); "
                        "re-extract cifar-10-python.tar.gz") from None
    if len(data) != len(labels):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels")
    return data, labels


def _load_cifar10(cfg: DataConfig) -> DataSplits:
    root = _require_root(cfg, CIFAR10_LAYOUT)
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 batch {missing[0]} not found in {folder} (expected {CIFAR10_LAYOUT})")
    train = [_read_cifar_batch(folder / n) for n in names[:5]]
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    x_train, x_test = (reshape_images((x / 255.0).astype(np.float32), cfg.image_size, cfg.channels)
                       for x in (x_train, x_test))
    return _tensor_splits(x_train, y_train, x_test, y_test, classes, f"CIFAR-10 in {folder}")


class ImageFolderDataset(Dataset):
    """Images under ``SPLIT/CLASS/``, loaded lazily: resized (shorter side) and centre-cropped to a square, then
    brought to ``channels`` (3, or 1: the luma) as ``image_shape`` does for the in-memory sets."""

    def __init__(self, samples: list[tuple[Path, int]], image_size: int, channels: int = 3) -> None:
        self.samples = samples
        self.image_size = image_size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                scale = self.image_size / min(img.size)
                img = img.resize((max(self.image_size, round(img.width * scale)),
                                  max(self.image_size, round(img.height * scale))), Image.BILINEAR)
                left = (img.width - self.image_size) // 2
                top = (img.height - self.image_size) // 2
                img = img.crop((left, top, left + self.image_size, top + self.image_size))
                array = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path} is not a readable image ({err}); remove or replace it") from None
        return torch.from_numpy(np.ascontiguousarray(to_channels(array[None], self.channels)[0])), label


def _scan_split(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples = []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((path, label))
    return samples


def _load_imagefolder(cfg: DataConfig) -> DataSplits:
    root = _require_root(cfg, IMAGEFOLDER_LAYOUT)
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataError(f"{root} needs train/ and val/ folders (expected {IMAGEFOLDER_LAYOUT})")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders (expected {IMAGEFOLDER_LAYOUT})")
    test_classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    if test_classes != classes:
        raise DataError(f"{test_dir} has classes {test_classes[:5]}... but train/ has {classes[:5]}...; "
                        "both splits need the same class folders")
    train, test = _scan_split(root / "train", classes), _scan_split(test_dir, classes)
    if not train or not test:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root} (expected {IMAGEFOLDER_LAYOUT})")
    size, channels = cfg.image_size or IMAGEFOLDER_SIZE, cfg.channels or 3
    return DataSplits(ImageFolderDataset(train, size, channels), ImageFolderDataset(test, size, channels),
                      (channels, size, size), len(classes), tuple(classes))


def stack(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole data set as one (images, labels) pair of tensors, for evaluation and verification."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, torch.utils.data.Subset) and isinstance(dataset.dataset, TensorDataset):
        index = torch.as_tensor(list(dataset.indices))
        return dataset.dataset.tensors[0][index], dataset.dataset.tensors[1][index]
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.int64)
