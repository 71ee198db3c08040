"""models.cifar: CIFAR-100 python pickles through the restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from models.cifar import UnsafePickleError, load_cifar100, load_pickle
from models.data import DatasetFormatError, DatasetNotFoundError
from models.datasets import load_dataset


def test_reads_fixture_in_the_real_layout(cifar_root):
    images, labels, names = load_cifar100("train", cifar_root)
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.shape == (12,)
    assert len(names) == 100 and names[3] == "fine3"
    raw = load_pickle(cifar_root / "cifar-100-python" / "train")
    # row layout: 1024 R values, then 1024 G, then 1024 B, each row-major 32x32
    assert np.array_equal(images[0, 0], raw["data"][0, :1024].reshape(32, 32))
    assert np.array_equal(images[0, 2, 5], raw["data"][0, 2048 + 5 * 32:2048 + 6 * 32])
    assert labels.tolist() == raw["fine_labels"]
    coarse_images, coarse, coarse_names = load_cifar100("test", cifar_root, label="coarse")
    assert len(coarse_names) == 20 and coarse.max() < 20 and len(coarse_images) == 6


def test_fixture_uses_python2_strings_and_py3_repickles_load(cifar_root):
    raw = (cifar_root / "cifar-100-python" / "meta").read_bytes()
    assert b"_codecs" not in raw and pickle.SHORT_BINSTRING + bytes([16]) + b"fine_label_names" in raw
    train = load_pickle(cifar_root / "cifar-100-python" / "train")
    with open(cifar_root / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({k.encode(): v for k, v in train.items()}, f, protocol=2)
    assert b"_codecs" in (cifar_root / "cifar-100-python" / "train").read_bytes()
    images, labels, _ = load_cifar100("train", cifar_root)
    assert np.array_equal(images.reshape(len(images), -1), train["data"])


def test_dataset_registry_presents_cifar(cifar_root):
    data = load_dataset("cifar100", "test", root=cifar_root)
    assert data.images.shape == (6, 3, 32, 32) and data.spec.num_classes == 100
    big = load_dataset("cifar-100", "test", image_size=64, root=cifar_root)
    assert big.images.shape == (6, 3, 64, 64)
    assert big.config()["image_size"] == 64 and big.config()["dataset"] == "cifar100"


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_refuses_code_in_pickles(cifar_root):
    path = cifar_root / "cifar-100-python" / "train"
    with open(path, "wb") as f:
        pickle.dump({b"data": Exploit()}, f, protocol=2)
    with pytest.raises(UnsafePickleError, match="system"):
        load_cifar100("train", cifar_root)


def test_corrupt_and_missing(cifar_root, tmp_path):
    (cifar_root / "cifar-100-python" / "test").write_bytes(b"\x80\x02}q\x00(")
    with pytest.raises(DatasetFormatError):
        load_cifar100("test", cifar_root)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        load_cifar100("test", tmp_path / "nowhere")
