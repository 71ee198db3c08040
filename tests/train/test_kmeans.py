"""train.kmeans."""

from __future__ import annotations

import pytest
import torch

from train.kmeans import assign, kmeans


def test_recovers_separated_blobs():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = torch.cat([c + 0.3 * torch.randn(50, 2, generator=gen) for c in centres])
    result = kmeans(z, 3, seed=1)
    found = result.centroids[torch.cdist(centres, result.centroids).argmin(1)]
    assert torch.allclose(found, centres, atol=0.2)
    assert sorted(torch.bincount(result.labels).tolist()) == [50, 50, 50]
    labels, dist = assign(z, result.centroids)
    assert torch.equal(labels, result.labels)
    assert abs(float(dist.sum()) - result.inertia) < 1e-3


def test_deterministic_under_seed_and_no_empty_clusters():
    z = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    a, b = kmeans(z, 4, seed=3), kmeans(z, 4, seed=3)
    assert torch.equal(a.centroids, b.centroids)
    duplicated = torch.cat([torch.zeros(10, 2), torch.ones(2, 2)])
    result = kmeans(duplicated, 3, seed=0)
    assert result.labels.unique().numel() >= 2 and torch.isfinite(result.centroids).all()


def test_needs_enough_points():
    with pytest.raises(ValueError, match="N >= k"):
        kmeans(torch.zeros(2, 3), 4)
