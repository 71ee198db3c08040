"""Tiny ImageNet-200 in its folder format (Stanford CS231n): 200 classes of 64x64 RGB JPEGs.

    tiny-imagenet-200/
      wnids.txt                          200 WordNet ids, one a line; line i is class i
      words.txt                          optional: "<wnid>\\t<names>" lines
      train/<wnid>/images/*.JPEG         500 per class
      val/images/*.JPEG                  10,000 images
      val/val_annotations.txt            "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" lines

The `test/` images carry no labels, so the labelled `val` split serves as "test". Decoded
splits are cached as `.axmoe-<split>.npz` in the dataset folder when it is writable.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.data import DatasetFormatError, DatasetNotFoundError, data_root

SIZE = 64


def tiny_imagenet_dir(root: Path | None = None) -> Path:
    """`root` (or `data_root()`) / tiny-imagenet-200, or `root` itself if it holds wnids.txt."""
    base = Path(root) if root is not None else data_root()
    for folder in (base, base / "tiny-imagenet-200"):
        if (folder / "wnids.txt").is_file() and (folder / "train").is_dir():
            return folder
    raise DatasetNotFoundError(
        f"Tiny ImageNet-200 not found in {base / 'tiny-imagenet-200'} (needs wnids.txt, train/, "
        "val/ from tiny-imagenet-200.zip; set AXMOE_DATA_DIR or --data-dir)")


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetFormatError(f"{path}: not a readable image ({exc})") from exc
    if rgb.size != (SIZE, SIZE):
        rgb = rgb.resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _listing(folder: Path, split: str, wnids: list[str]) -> tuple[list[Path], list[int]]:
    index = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for wnid in wnids:
            files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
            paths += files
            labels += [index[wnid]] * len(files)
    else:
        annotations = folder / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise DatasetNotFoundError(f"{annotations} missing")
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in index:
                raise DatasetFormatError(f"{annotations}: unknown wnid {parts[1]!r} for {parts[0]}")
            paths.append(folder / "val" / "images" / parts[0])
            labels.append(index[parts[1]])
    return paths, labels


def class_names(folder: Path, wnids: list[str]) -> list[str]:
    words = folder / "words.txt"
    names = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line) \
        if words.is_file() else {}
    return [names.get(w, w).split(",")[0].strip() for w in wnids]


def load_tiny_imagenet(split: str = "test", root: Path | None = None,
                       cache: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 (N, 3, 64, 64), labels int64 (N,) and the class names.

    Args:
        split: "train" (100,000) or "test" (the 10,000 labelled val images).
        root: folder holding `tiny-imagenet-200/` (default `data_root()`).
        cache: read/write the decoded split as `.axmoe-<split>.npz` in the dataset folder.
    """
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    split = "train" if split == "train" else "val"
    folder = tiny_imagenet_dir(root)
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().splitlines() if w.strip()]
    names = class_names(folder, wnids)
    cached = folder / f".axmoe-{split}.npz"
    if cache and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            return z["images"], z["labels"], names
    paths, labels = _listing(folder, split, wnids)
    if not paths:
        raise DatasetNotFoundError(f"{folder}: no {split} images found")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = np.stack(list(pool.map(_read_image, paths)))
    label_array = np.asarray(labels, dtype=np.int64)
    if cache and os.access(folder, os.W_OK):
        tmp = folder / f".axmoe-{split}.tmp.npz"
        np.savez(tmp, images=images, labels=label_array)
        os.replace(tmp, cached)
    return images, label_array, names
