"""Shared fixtures for tests/train: a tiny Fashion-MNIST in gzip IDX format and tiny-run
command lines."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch


def _idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and two test workers on two cores then do not
    oversubscribe them (spinning OpenMP threads slow everything down)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A 64 + 32 image Fashion-MNIST with a learnable signal: class c has a bright 6x6
    square at a class-specific place."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 32)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            y, x = 2 + (c // 5) * 12, 2 + (c % 5) * 5
            images[i, y:y + 6, x:x + 6] = 250
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture
def tiny_args(data_dir, tmp_path):
    """Command line of a tiny run (width-4 ResNet-20, batch 16: 4 steps an epoch, on the CPU,
    where it is deterministic) into tmp_path/run; extra flags appended (and win)."""
    def make(*extra: str, out: Path | None = None) -> list[str]:
        return ["--arch", "resnet20", "--dataset", "fashion-mnist", "--data-dir", str(data_dir),
                "--model-opt", "width=4", "--batch-size", "16", "--eval-batch-size", "32",
                "--epochs", "1", "--out", str(out or tmp_path / "run"), "--no-progress",
                "--log-every", "2", "--threads", "1", "--device", "cpu", *extra]
    return make
