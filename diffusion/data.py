"""Image data sets as in-memory uint8 tensors with class context vectors: Fashion-MNIST, MNIST, CIFAR-10, the
deeplearning.ai sprites and scikit-learn's 8x8 digits. Readers parse the original on-disk formats directly (IDX,
CIFAR-10 binary, .npy); no pickle is loaded.

Usage: ds = load_dataset("fashion-mnist", split="train"); ds.images  # (N, 1, 28, 28) uint8
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Split = Literal["train", "test"]

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPRITES_CLASSES = ["hero", "non-hero", "food", "spell", "side-facing"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DATA_DIR = Path(os.path.expanduser("~/.cache/diffusion-lab/data"))


class DatasetError(RuntimeError):
    """A data set is missing or malformed; the message says what to install, pass or fix."""


@dataclass(frozen=True)
class ImageDataset:
    """images (N, C, H, W) uint8; context (N, K) float32 one-hot or multi-hot; labels (N,) int64 class ids
    (argmax of the context); class_names (K,)."""

    name: str
    images: Tensor
    context: Tensor
    labels: Tensor
    class_names: list[str]
    hflip: bool  # whether a flipped image is as likely as the original (flips keep the distribution, not only labels)

    def __post_init__(self) -> None:
        N = self.images.shape[0]
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise DatasetError(f"{self.name}: images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} "
                               f"{self.images.dtype}")
        if self.context.shape != (N, len(self.class_names)) or self.labels.shape != (N,):
            raise DatasetError(f"{self.name}: {N} images but context {tuple(self.context.shape)} and labels "
                               f"{tuple(self.labels.shape)} for {len(self.class_names)} classes")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        C, H, W = self.images.shape[1:]
        return C, H, W


def to_model_range(images_uint8: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range the diffusion model works in."""
    return images_uint8.float().div(127.5).sub(1.0)


def facing_fraction(images: Tensor, class_mean: Tensor) -> float:
    """Share of (N, C, H, W) images that correlate more with class_mean (C, H, W) than with its mirror image: how
    many face the way their class does on average (why Fashion-MNIST trains without flips)."""
    x = images.float().flatten(1)  # (N, C*H*W)
    direction = (class_mean - class_mean.flip(-1)).flatten()
    return float((((x - x.mean(1, keepdim=True)) @ direction) > 0).float().mean())


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip'd or not): big-endian magic (0, 0, dtype, ndim), dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read IDX file ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = int(np.prod(dims))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != expected:
        raise DatasetError(f"{path}: header promises {dims} = {expected} bytes, file holds {payload.size}")
    return payload.reshape(dims)


def _find_idx(directories: list[Path], stem: str) -> Path | None:
    for d in directories:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def _load_idx_dataset(name: str, folder: str, classes: list[str], split: Split, data_dir: Path | None,
                      download: bool, extra_dirs: list[Path], hflip: bool) -> ImageDataset:
    root = data_dir or DEFAULT_DATA_DIR
    if download:
        import torchvision

        getattr(torchvision.datasets, folder)(root=str(root), train=split == "train", download=True)
    dirs = [root, root / folder / "raw", *extra_dirs]
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_idx(dirs, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(dirs, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        hint = ("install the Debian package (apt-get install -y dataset-fashion-mnist), " if name == "fashion-mnist"
                else "")
        raise DatasetError(f"{name} ({split}) not found in {', '.join(str(d) for d in dirs)}: {hint}pass "
                           f"--data-dir DIR holding {prefix}-images-idx3-ubyte[.gz], or --download (needs internet)")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{images_path}: expected N x H x W images and N labels, got {images.shape} and "
                           f"{labels.shape}")
    if labels.max(initial=0) >= len(classes):
        raise DatasetError(f"{labels_path}: label {labels.max()} out of range for {len(classes)} classes")
    labels_t = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(name, torch.from_numpy(images.copy())[:, None], one_hot(labels_t, len(classes)),
                        labels_t, classes, hflip)


def load_cifar10(split: Split, data_dir: Path | None, download: bool) -> ImageDataset:
    """CIFAR-10 binary version: cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin, records of 1 label byte +
    3072 bytes (R, G, B planes of 32x32)."""
    root = data_dir or DEFAULT_DATA_DIR
    folder = root / "cifar-10-batches-bin"
    if download and not folder.is_dir():
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", str(root),
                                     md5="c32a1d4ab5d03f1284b67883e8d87530")
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"cifar10 ({split}): {', '.join(missing)} not found in {folder}; pass --data-dir DIR "
                           f"holding cifar-10-batches-bin/, or --download (needs internet)")
    records = []
    for n in names:
        raw = np.fromfile(folder / n, dtype=np.uint8)
        if raw.size % 3073:
            raise DatasetError(f"{folder / n}: size {raw.size} is not a multiple of the 3073-byte record")
        records.append(raw.reshape(-1, 3073))
    data = np.concatenate(records)
    labels = torch.from_numpy(data[:, 0].astype(np.int64))
    if int(labels.max()) >= 10:
        raise DatasetError(f"{folder}: label {int(labels.max())} out of range for 10 classes")
    images = torch.from_numpy(data[:, 1:].reshape(-1, 3, 32, 32).copy())
    return ImageDataset("cifar10", images, one_hot(labels, 10), labels, CIFAR10_CLASSES, hflip=True)


def _holdout(n: int, split: Split, test_fraction: float = 0.1, seed: int = 0) -> Tensor:
    """A fixed, seeded train/test partition of range(n) for data sets that ship without a test split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    return perm[:n_test].sort().values if split == "test" else perm[n_test:].sort().values


def load_sprites(split: Split, data_dir: Path | None) -> ImageDataset:
    """The deeplearning.ai "How diffusion models work" sprites: sprites_1788_16x16.npy (N, 16, 16, 3) uint8 and
    sprite_labels_nc_1788_16x16.npy (N, 5) one-hot or multi-hot context vectors. 10% are held out as test."""
    root = data_dir or DEFAULT_DATA_DIR
    img_path, lab_path = root / "sprites_1788_16x16.npy", root / "sprite_labels_nc_1788_16x16.npy"
    if not img_path.is_file() or not lab_path.is_file():
        raise DatasetError(f"sprites: {img_path.name} and {lab_path.name} not found in {root}; download them from "
                           f"the deeplearning.ai course 'How Diffusion Models Work' and pass --data-dir DIR")
    try:
        images = np.load(img_path, allow_pickle=False)
        context = np.load(lab_path, allow_pickle=False)
    except ValueError as e:
        raise DatasetError(f"sprites: cannot read {root} as plain .npy arrays ({e})") from e
    if images.ndim != 4 or images.shape[1:] != (16, 16, 3):
        raise DatasetError(f"{img_path}: expected (N, 16, 16, 3) images, got {images.shape}")
    if context.shape != (len(images), 5):
        raise DatasetError(f"{lab_path}: expected ({len(images)}, 5) context vectors, got {context.shape}")
    if not np.isin(context, (0, 1)).all() or (context.sum(1) == 0).any():
        raise DatasetError(f"{lab_path}: context vectors must be one-hot or multi-hot 0/1 rows with at least one 1")
    if images.dtype != np.uint8:
        scale = 255.0 if images.max() <= 1.0 else 1.0
        images = np.clip(images * scale, 0, 255).round().astype(np.uint8)
    idx = _holdout(len(images), split)
    images_t = torch.from_numpy(images).permute(0, 3, 1, 2)[idx].contiguous()
    context_t = torch.from_numpy(context.astype(np.float32))[idx]
    return ImageDataset("sprites", images_t, context_t, context_t.argmax(1), SPRITES_CLASSES, hflip=True)


def load_digits(split: Split) -> ImageDataset:
    """scikit-learn's real 8x8 handwritten digits (1,797 images, values 0..16), upsampled bilinearly to 16x16.
    10% are held out as test."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise DatasetError("the digits data set needs scikit-learn: pip install scikit-learn") from e
    bunch = sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    images = (x * 255).round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    idx = _holdout(len(images), split)
    return ImageDataset("digits", images[idx], one_hot(labels[idx], 10), labels[idx], MNIST_CLASSES, hflip=False)


DATASETS = ("fashion-mnist", "mnist", "cifar10", "sprites", "digits")


def load_dataset(name: str, split: Split = "train", data_dir: str | Path | None = None,
                 download: bool = False) -> ImageDataset:
    """Load a data set by name (one of DATASETS). `data_dir` is searched first; Fashion-MNIST is also found in
    Debian's /usr/share/datasets/fashion-mnist. `download` fetches MNIST-style sets and CIFAR-10 (needs internet)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = Path(data_dir).expanduser() if data_dir is not None else None
    if name == "fashion-mnist":
        # No flips: the shoes of Fashion-MNIST point their toes one way (93% of sandals, 99.7% of sneakers, all
        # ankle boots), so a flip-trained model draws half of them mirrored, out of the data's distribution.
        return _load_idx_dataset(name, "FashionMNIST", FASHION_MNIST_CLASSES, split, d, download,
                                 [DEBIAN_FASHION_MNIST], hflip=False)
    if name == "mnist":
        return _load_idx_dataset(name, "MNIST", MNIST_CLASSES, split, d, download, [], hflip=False)
    if name == "cifar10":
        return load_cifar10(split, d, download)
    if name == "sprites":
        return load_sprites(split, d)
    if name == "digits":
        return load_digits(split)
    raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")


def save_examples(dataset: ImageDataset, folder: str | Path, per_class: int = 3, seed: int = 0) -> list[Path]:
    """Write `per_class` real images of each class as folder/<class index>_<n>.png (the app's forward-process
    examples, shipped inside a model directory)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    written = []
    for k in range(len(dataset.class_names)):
        members = (dataset.labels == k).nonzero().flatten()
        for n, i in enumerate(members[torch.randperm(len(members), generator=g)[:per_class]].tolist()):
            array = dataset.images[i].permute(1, 2, 0).numpy()
            image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
            path = folder / f"{k}_{n}.png"
            image.save(path)
            written.append(path)
    return written
