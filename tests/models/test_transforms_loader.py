"""models.transforms and models.loader: augmentation and batching, deterministic under a seed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.datasets import DATASETS, ImageSet
from models.loader import BatchLoader
from models.transforms import random_crop, random_hflip


def _images(n=6, c=1, s=8):
    return torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8)


def test_random_crop_matches_slicing():
    x = _images(c=3)
    gen = torch.Generator().manual_seed(3)
    out = random_crop(x, 2, gen)
    gen = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 5, (6,), generator=gen)
    dx = torch.randint(0, 5, (6,), generator=gen)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8])


def test_random_hflip():
    x = _images()
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flip = torch.rand(6, generator=torch.Generator().manual_seed(0)) < 0.5
    for i in range(6):
        assert torch.equal(out[i], x[i].flip(-1) if flip[i] else x[i])


def _set(n=20):
    return ImageSet(_images(n, 1, 32), torch.arange(n) % 10, DATASETS["fashion-mnist"], tuple("abcdefghij"))


def test_loader_is_deterministic_per_seed_and_epoch():
    data = _set()

    def batches(seed, epoch):
        loader = BatchLoader(data, 8, train=True, seed=seed)
        loader.set_epoch(epoch)
        return list(loader)
    a, b = batches(0, 1), batches(0, 1)
    assert len(a) == 2  # 20 // 8, last partial batch dropped
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = batches(0, 2)
    assert not torch.equal(a[0][0], c[0][0])
    d = batches(1, 1)
    assert not torch.equal(a[0][1], d[0][1])


def test_eval_loader_in_order_without_augmentation():
    data = _set(10)
    loader = BatchLoader(data, 4)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), data.labels)
    x = batches[0][0]
    assert x.shape == (4, 3, 32, 32)
    assert torch.allclose(x[:, 0], (data.images[:4, 0].float() / 255 - 0.2860) / 0.3530, atol=1e-5)


def test_small_training_set_keeps_its_only_batch():
    loader = BatchLoader(_set(5), 8, train=True)
    assert len(loader) == 1 and len(next(iter(loader))[1]) == 5
