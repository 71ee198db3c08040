"""Batches from an in-memory `ImageSet`, deterministic under a seed.

Training batches: the epoch's order is `randperm(N)` from a generator seeded with
(seed, epoch), augmented with `models.transforms.standard_augment` from the same generator,
so epoch e is the same whether a run is fresh or resumed. Evaluation batches: in order, no
augmentation. Every batch comes out normalised, float (B, 3, S, S), with int64 labels (B,).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor

from models.datasets import ImageSet, preprocess
from models.transforms import standard_augment


class BatchLoader:
    """Iterate (images, labels) batches of `data`.

    Args:
        data: the split, uint8 images in memory.
        batch_size: images per batch.
        train: shuffle, augment and drop the last partial batch.
        seed: base seed of the per-epoch generator.
        augment: apply the standard augmentation when training.
        device: where batches are sent (augmentation runs on the CPU).
    """

    def __init__(self, data: ImageSet, batch_size: int, train: bool = False, seed: int = 0,
                 augment: bool = True, device: torch.device | str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.augment = augment
        self.device = torch.device(device)
        self.epoch = 0
        self.config = data.config()
        # Training drops a last partial batch (BatchNorm on a batch of one fails), unless the
        # whole split is smaller than one batch.
        self.drop_last = train and len(data) >= batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.data)
        gen = self.generator()
        order = torch.randperm(n, generator=gen) if self.train else torch.arange(n)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            images = self.data.images.index_select(0, index)
            if self.train and self.augment:
                images = standard_augment(images, gen)
            x = preprocess(images.to(self.device, non_blocking=True), self.config)
            yield x, self.data.labels.index_select(0, index).to(self.device, non_blocking=True)
