"""Data set readers, each on files written here in the exact on-disk format (and the real data where present)."""

import gzip
import struct

import numpy as np
import pytest
import torch

from diffusion.data import DEBIAN_FASHION_MNIST, DatasetError, facing_fraction, load_dataset


def write_idx(path, array: np.ndarray, compress: bool):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist_like(folder, n=20, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return images, labels


@pytest.mark.parametrize("name, compress", [("fashion-mnist", True), ("mnist", False)])
def test_idx_reader(tmp_path, name, compress):
    folder = tmp_path / ("FashionMNIST" if name == "fashion-mnist" else "MNIST") / "raw"
    images, labels = write_mnist_like(folder, compress=compress)
    ds = load_dataset(name, "train", data_dir=tmp_path)
    assert ds.images.shape == (20, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert np.array_equal(ds.images[:, 0].numpy(), images) and ds.labels.tolist() == labels.tolist()
    assert torch.equal(ds.context.argmax(1), ds.labels) and ds.context.sum(1).eq(1).all()
    assert len(ds.class_names) == 10


def test_idx_errors_are_named(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_like(folder, compress=False)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 20, 28, 28) + b"\x00")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte: header promises"):
        load_dataset("mnist", "train", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="--data-dir DIR.*--download"):
        load_dataset("mnist", "train", data_dir=tmp_path / "empty")


def test_cifar10_binary_reader(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    records = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rec = np.concatenate([rng.integers(0, 10, (4, 1)), rng.integers(0, 256, (4, 3072))], 1).astype(np.uint8)
        rec.tofile(folder / f"{name}.bin")
        records[name] = rec
    train = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.class_names[0] == "airplane"
    first = records["data_batch_1"][0]
    assert train.labels[0] == first[0]
    assert np.array_equal(train.images[0].numpy(), first[1:].reshape(3, 32, 32))  # R, G, B planes
    assert load_dataset("cifar10", "test", data_dir=tmp_path).images.shape == (4, 3, 32, 32)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match="not a multiple of the 3073-byte record"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_sprites_reader_keeps_multi_hot_context(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 16, 16, 3)).astype(np.uint8)
    context = np.eye(5)[rng.integers(0, 4, 50)]
    context[:10, 4] = 1.0  # "hero + side-facing" style multi-hot rows
    np.save(tmp_path / "sprites_1788_16x16.npy", images)
    np.save(tmp_path / "sprite_labels_nc_1788_16x16.npy", context)
    train, test = load_dataset("sprites", "train", tmp_path), load_dataset("sprites", "test", tmp_path)
    assert len(train) + len(test) == 50 and train.images.shape[1:] == (3, 16, 16)
    assert (train.context.sum(1) == 2).any() or (test.context.sum(1) == 2).any()
    np.save(tmp_path / "sprite_labels_nc_1788_16x16.npy", context[:, :4])
    with pytest.raises(DatasetError, match=r"expected \(50, 5\) context vectors"):
        load_dataset("sprites", "train", tmp_path)


def test_digits_is_real_and_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (1, 16, 16)
    assert set(test.labels.tolist()) == set(range(10))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install -y dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian():
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28) and test.class_names[9] == "Ankle boot"
    assert torch.bincount(test.labels).tolist() == [1000] * 10


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install -y dataset-fashion-mnist")
def test_fashion_mnist_shoes_face_one_way_so_it_trains_without_flips():
    """A flip is not a sample of Fashion-MNIST: nearly every shoe points its toe the same way. Each image is compared
    with its class's mean image and with that mean mirrored; at least 90% of each shoe class match the mean better
    (93% of sandals, 99.7% of sneakers and all ankle boots do), so the loader turns flips off."""
    train = load_dataset("fashion-mnist", "train")
    assert train.hflip is False
    for k in (5, 7, 9):  # sandal, sneaker, ankle boot
        x = train.images[train.labels == k]  # (N, 1, 28, 28)
        assert facing_fraction(x, x.float().mean(0)) > 0.9, train.class_names[k]
        assert facing_fraction(x.flip(-1), x.float().mean(0)) < 0.1, train.class_names[k]  # mirrored: the other way
