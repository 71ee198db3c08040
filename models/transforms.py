"""Batched augmentation of uint8 images, deterministic under a `torch.Generator`.

- `random_crop`: zero-pad by `pad` on every side, then crop back to (H, W) at an offset
  (dy, dx) drawn uniformly from {0..2 pad}^2 per image: out[b, c, i, j] =
  padded[b, c, dy_b + i, dx_b + j].
- `random_hflip`: mirror each image with probability 1/2.
- `standard_augment`: the usual CIFAR recipe, crop with pad = S / 8 (4 for 32x32) + flip.

All ops take and return (B, C, H, W) uint8 tensors on the CPU, so the same seed gives the
same batch on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image shifted by up to `pad` pixels with zero fill."""
    if pad <= 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).reshape(b, c, -1)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    # One gather over the flattened padded image is ~100x faster than 4-D advanced indexing.
    rows = dy[:, None, None] + torch.arange(h)[None, :, None]
    cols = dx[:, None, None] + torch.arange(w)[None, None, :]
    index = (rows * (w + 2 * pad) + cols).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.gather(2, index).reshape(b, c, h, w)


def random_hflip(images: Tensor, generator: torch.Generator) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image mirrored left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    out = images.clone()
    out[flip] = images[flip].flip(-1)
    return out


def standard_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop with padding S / 8, then random horizontal flip."""
    return random_hflip(random_crop(images, images.shape[-1] // 8, generator), generator)
