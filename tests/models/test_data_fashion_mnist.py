"""models.data / models.datasets: Fashion-MNIST, CIFAR-shaped and Tiny-ImageNet-shaped."""

from __future__ import annotations

import gzip

import pytest
import torch

from axmoe_testing import require_tool
from models.data import DatasetFormatError, DatasetNotFoundError, load_fashion_mnist
from models.datasets import UnknownDatasetError, dataset_spec, load_dataset, preprocess


def test_fixture_is_padded_to_cifar_shape(fmnist_root):
    raw, raw_labels = load_fashion_mnist("train", fmnist_root)
    data = load_dataset("fashion-mnist", "train", root=fmnist_root)
    assert data.images.shape == (64, 1, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0, 2:30, 2:30], torch.from_numpy(raw.copy()))
    assert data.images[:, :, :2].sum() == 0 and data.images[:, :, :, 30:].sum() == 0
    assert data.labels.tolist() == raw_labels.tolist()
    x = preprocess(data.images[:4], data.config())
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])
    expected = (data.images[:4, 0].float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(x[:, 1], expected, atol=1e-5)


def test_tiny_imagenet_shape(fmnist_root):
    data = load_dataset("fashion-mnist", "test", image_size=64, root=fmnist_root, limit=5)
    assert data.images.shape == (5, 1, 64, 64)


def test_real_fashion_mnist_is_there():
    try:
        data = load_dataset("fashion-mnist", "test")
    except DatasetNotFoundError:
        require_tool(False, "Fashion-MNIST", "make data")
    assert data.images.shape == (10000, 1, 32, 32)
    assert torch.bincount(data.labels).tolist() == [1000] * 10


def test_errors(fmnist_root, tmp_path):
    with pytest.raises(UnknownDatasetError, match="fashion-mnist"):
        dataset_spec("cifar10")
    with pytest.raises(DatasetNotFoundError):
        load_dataset("fashion-mnist", "test", root=tmp_path / "empty")
    with gzip.open(fmnist_root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x03")
    with pytest.raises(DatasetFormatError, match="IDX"):
        load_fashion_mnist("test", fmnist_root)
