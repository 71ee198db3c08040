"""Shared fixtures for tests/models: small model options and dataset fixtures built in tmp
dirs in the exact on-disk formats (CIFAR-100 python pickles, Tiny ImageNet-200 folders,
Fashion-MNIST gzip IDX)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

#: options giving each arch a model small enough for fast CPU tests
SMALL = {
    "resnet20": {"width": 4},
    "vgg11_bn": {"width_mult": 0.0625},
    "vgg19_bn": {"width_mult": 0.0625},
    "vit_small": {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 4, "num_heads": 2},
}
SIZE = {"resnet20": 32, "vgg11_bn": 32, "vgg19_bn": 32, "vit_small": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and two test workers on two cores then do not
    oversubscribe them (spinning OpenMP threads slow everything down)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small() -> dict:
    """arch -> options of a small model."""
    return SMALL


@pytest.fixture
def sizes() -> dict:
    """arch -> input side of the small model."""
    return SIZE


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler writing bytes as Python 2 wrote str (SHORT_BINSTRING/BINSTRING
    opcodes), as in the real CIFAR files; Python 3 would write `_codecs.encode` calls."""

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes}


def dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> Path:
    """`root/cifar-100-python/{train,test,meta}`, pickled as the real files are (protocol 2,
    Python 2 strings for keys and names, uint8 (N, 3072) data, R then G then B planes)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n).tolist()
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        dump_py2({b"filenames": [f"img_{i}.png".encode() for i in range(n)],
                  b"batch_label": f"{split} batch".encode(), b"fine_labels": fine,
                  b"coarse_labels": [c // 5 for c in fine], b"data": data}, folder / split)
    dump_py2({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
              b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, folder / "meta")
    return folder


WNIDS = ("n01443537", "n01629819", "n01641577")
COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))


def write_tiny_imagenet(root: Path, per_class: int = 2) -> Path:
    """`root/tiny-imagenet-200` with 3 classes: each class's images are one flat colour (one
    train image grey), val images annotated in val_annotations.txt."""
    from PIL import Image
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tname{i}, other\n" for i, w in enumerate(WNIDS)))
    for i, wnid in enumerate(WNIDS):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for j in range(per_class):
            img = Image.new("RGB", (64, 64), COLOURS[i])
            if i == 0 and j == 0:
                img = img.convert("L")
            img.save(images / f"{wnid}_{j}.JPEG", quality=95)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for k, i in enumerate((2, 0, 1)):
        name = f"val_{k}.JPEG"
        Image.new("RGB", (64, 64), COLOURS[i]).save(folder / "val" / "images" / name, quality=95)
        lines.append(f"{name}\t{WNIDS[i]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def _idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """`root/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`."""
    rng = np.random.default_rng(seed)
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    return folder


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    write_cifar100(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    write_tiny_imagenet(tmp_path)
    return tmp_path


@pytest.fixture
def fmnist_root(tmp_path: Path) -> Path:
    write_fashion_mnist(tmp_path)
    return tmp_path
