"""models.tiny_imagenet: the Tiny ImageNet-200 folder format."""

from __future__ import annotations

import numpy as np
import pytest

from models.data import DatasetNotFoundError
from models.datasets import load_dataset
from models.tiny_imagenet import load_tiny_imagenet


def test_reads_train_and_val(tiny_root):
    images, labels, names = load_tiny_imagenet("train", tiny_root, cache=False)
    assert images.shape == (6, 3, 64, 64) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert names == ["name0", "name1", "name2"]
    # class i is a flat colour whose dominant channel is i (the grey image has equal channels)
    for image, label in zip(images[1:], labels[1:]):
        assert image.reshape(3, -1).mean(1).argmax() == label
    assert np.ptp(images[0].reshape(3, -1).mean(1)) < 2
    val, val_labels, _ = load_tiny_imagenet("test", tiny_root, cache=False)
    assert val_labels.tolist() == [2, 0, 1]
    assert [v.reshape(3, -1).mean(1).argmax() for v in val] == [2, 0, 1]


def test_cache_is_written_and_reused(tiny_root):
    first = load_tiny_imagenet("test", tiny_root)
    cached = tiny_root / "tiny-imagenet-200" / ".axmoe-val.npz"
    assert cached.is_file()
    for image in (tiny_root / "tiny-imagenet-200" / "val" / "images").iterdir():
        image.unlink()
    second = load_tiny_imagenet("test", tiny_root)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_registry_and_resizing(tiny_root):
    data = load_dataset("tiny-imagenet", "train", image_size=32, root=tiny_root)
    assert data.images.shape == (6, 3, 32, 32) and data.spec.num_classes == 200


def test_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200"):
        load_tiny_imagenet("train", tmp_path)
