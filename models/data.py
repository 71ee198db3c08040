"""Datasets. Fashion-MNIST (Debian's `dataset-fashion-mnist`) is the embedded default.

`python -m models.data` prints what is available.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they should be."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is not in the expected format."""


def data_root() -> Path:
    """Folder holding the datasets: `$AXMOE_DATA_DIR`, else `.cache/datasets` in the checkout."""
    env = os.environ.get("AXMOE_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / ".cache" / "datasets"


def fashion_mnist_dir(root: Path | None = None) -> Path:
    """Folder with the four gzip IDX files: `root` or `root`/fashion-mnist when given, else
    `data_root()`/fashion-mnist, else Debian's /usr/share/datasets/fashion-mnist."""
    if root is not None:
        candidates: tuple[Path, ...] = (Path(root), Path(root) / "fashion-mnist")
    else:
        candidates = (data_root() / "fashion-mnist", _SYSTEM_FASHION_MNIST)
    for folder in candidates:
        if (folder / "t10k-labels-idx1-ubyte.gz").is_file():
            return folder
    raise DatasetNotFoundError(
        f"Fashion-MNIST not found in {' or '.join(str(c) for c in candidates)}; "
        "run `make data` (fetches Debian's dataset-fashion-mnist without root)")


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzip) IDX file: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        header = f.read(4)
        if len(header) != 4 or header[:3] != b"\x00\x00\x08":
            raise DatasetFormatError(f"{path}: not a uint8 IDX file")
        ndim = header[3]
        dims = np.frombuffer(f.read(4 * ndim), dtype=">u4").astype(int)
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise DatasetFormatError(f"{path}: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def load_fashion_mnist(split: str = "test", root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels uint8 (N,) of the `train` (60,000) or `test`
    (10,000) split, from `fashion_mnist_dir(root)`."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = fashion_mnist_dir(root)
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if len(images) != len(labels):
        raise DatasetFormatError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return images, labels


def main() -> None:
    try:
        folder = fashion_mnist_dir()
    except DatasetNotFoundError as exc:
        raise SystemExit(f"error: {exc}")
    for split in ("train", "test"):
        images, labels = load_fashion_mnist(split)
        counts = np.bincount(labels, minlength=10)
        print(f"fashion-mnist {split:<5} {len(images):>6} images {images.shape[1]}x{images.shape[2]} "
              f"uint8, {len(counts)} classes ({counts.min()}-{counts.max()} per class), mean pixel "
              f"{images.mean():.1f}")
    print(f"  from {folder}")


if __name__ == "__main__":
    main()
