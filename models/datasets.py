"""Dataset registry: load a split, present it at the size a model needs, normalise it.

    data = load_dataset("fashion-mnist", "train", image_size=32)
    data.images    # uint8 (N, C, S, S): stored channels (1 for grey), presented size S
    data.labels    # int64 (N,)
    x = preprocess(data.images[:8], data.config())   # float (8, 3, S, S), normalised

Presentation: Fashion-MNIST's 28x28 grey images are zero-padded to 32x32 (CIFAR-shaped),
other sizes are then reached by bilinear resizing (e.g. 64x64 for Tiny-ImageNet-shaped
models); grey is repeated to 3 channels when batches are made. Normalisation is
x = (v / 255 - mean_c) / std_c with the dataset's channel statistics. `config()` is the
plain-data record of all this that checkpoints carry, so evaluation and export preprocess
real data exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.cifar import load_cifar100
from models.config import suggest
from models.data import FASHION_MNIST_CLASSES, DatasetNotFoundError, load_fashion_mnist
from models.tiny_imagenet import load_tiny_imagenet

Loader = Callable[[str, "Path | None"], "tuple[np.ndarray, np.ndarray, list[str]]"]


class UnknownDatasetError(ValueError):
    pass


def _fashion_mnist(split: str, root: Path | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = load_fashion_mnist(split, root)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return padded[:, None], labels.astype(np.int64), list(FASHION_MNIST_CLASSES)


@dataclass(frozen=True)
class DatasetSpec:
    name: str                           # registry name
    num_classes: int                    # classifier outputs
    size: int                           # side of the loaded images (after any padding)
    channels: int                       # stored channels (1 grey, 3 RGB)
    mean: tuple[float, float, float]    # per RGB channel, of v / 255
    std: tuple[float, float, float]
    load: Loader                        # (split, root) -> images (N, C, size, size), labels, names
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", 10, 32, 1, (0.2860,) * 3, (0.3530,) * 3, _fashion_mnist,
        "Fashion-MNIST (Debian dataset-fashion-mnist), 28x28 grey padded to 32x32"),
    "cifar100": DatasetSpec(
        "cifar100", 100, 32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        lambda split, root: load_cifar100(split, root), "CIFAR-100, python pickle format"),
    "tiny-imagenet": DatasetSpec(
        "tiny-imagenet", 200, 64, 3, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
        lambda split, root: load_tiny_imagenet(split, root), "Tiny ImageNet-200, folder format"),
}
_ALIASES = {"fmnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "cifar-100": "cifar100",
            "tiny-imagenet-200": "tiny-imagenet", "tiny_imagenet": "tiny-imagenet"}


def dataset_spec(name: str) -> DatasetSpec:
    key = _ALIASES.get(name, name)
    if key not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}{suggest(name, DATASETS)} "
                                  f"(valid: {', '.join(DATASETS)})")
    return DATASETS[key]


@dataclass
class ImageSet:
    images: Tensor          # (N, C, S, S) uint8
    labels: Tensor          # (N,) int64
    spec: DatasetSpec
    classes: tuple[str, ...]

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def config(self) -> dict[str, Any]:
        """Plain-data preprocessing record (what a checkpoint carries as "data")."""
        return {"dataset": self.spec.name, "image_size": self.size, "in_chans": 3,
                "num_classes": self.spec.num_classes, "mean": list(self.spec.mean),
                "std": list(self.spec.std), "classes": list(self.classes)}


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, bilinear with antialiasing, in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                                align_corners=False, antialias=True)
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_dataset(name: str, split: str, image_size: int | None = None,
                 root: Path | str | None = None, limit: int | None = None) -> ImageSet:
    """One split, presented at `image_size` (default: the dataset's own size).

    Args:
        name: registry name ("fashion-mnist", "cifar100", "tiny-imagenet") or an alias.
        split: "train" or "test".
        image_size: side the model needs (32 CIFAR-shaped, 64 Tiny-ImageNet-shaped).
        root: dataset folder root (default `models.data.data_root()`).
        limit: keep only the first `limit` images (smoke runs).

    Raises:
        UnknownDatasetError, DatasetNotFoundError, ValueError (malformed files).
    """
    spec = dataset_spec(name)
    images, labels, classes = spec.load(split, Path(root) if root is not None else None)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = resize_uint8(tensor, image_size or spec.size)
    return ImageSet(tensor, torch.from_numpy(np.asarray(labels, dtype=np.int64)), spec, tuple(classes))


def preprocess(images: Tensor, config: Mapping[str, Any]) -> Tensor:
    """uint8 (B, C, S, S) at the presented size -> float (B, 3, S, S), normalised with the
    "mean"/"std" of a data `config` (from `ImageSet.config()` or a checkpoint)."""
    x = images.float().div_(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    scale = [1.0 / s for s in config["std"]]
    shift = [-m / s for m, s in zip(config["mean"], config["std"])]
    out = torch.empty_like(x)
    for c in range(3):
        torch.add(x[:, c].mul(scale[c]), shift[c], out=out[:, c])
    return out


__all__ = ["DATASETS", "DatasetNotFoundError", "DatasetSpec", "ImageSet", "UnknownDatasetError",
           "dataset_spec", "load_dataset", "preprocess", "resize_uint8"]
