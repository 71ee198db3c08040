"""k-means (Lloyd's algorithm with k-means++ seeding), in torch, deterministic under a seed.

    minimise sum_i min_j |z_i - mu_j|^2 over centroids mu (K, D)

k-means++ (Arthur & Vassilvitskii 2007) draws the first centroid uniformly and each next one
with probability proportional to the squared distance to the nearest centroid so far; Lloyd
iterations then alternate assignment (nearest centroid, computed as argmax_j 2 mu_j . z -
|mu_j|^2, the rule the Cluster MoE gate uses) and update (mean of each cluster). A cluster
left empty is re-seeded at the point farthest from its centroid. The best of `n_init` runs
(lowest inertia) wins.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class KMeansResult(NamedTuple):
    centroids: Tensor   # (K, D)
    labels: Tensor      # (N,) int64, index of each point's centroid
    inertia: float      # sum of squared distances to the assigned centroids
    iterations: int     # Lloyd iterations of the winning run


def assign(z: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid of each row of z (N, D) and its squared distance."""
    scores = 2 * z @ centroids.t() - (centroids * centroids).sum(dim=1)
    labels = scores.argmax(dim=1)
    dist = ((z * z).sum(dim=1) - scores.gather(1, labels[:, None]).squeeze(1)).clamp_min(0)
    return labels, dist


def _plus_plus(z: Tensor, k: int, gen: torch.Generator) -> Tensor:
    n = z.shape[0]
    centroids = [z[torch.randint(n, (1,), generator=gen).item()]]
    dist = ((z - centroids[0]) ** 2).sum(dim=1)
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:
            index = int(torch.randint(n, (1,), generator=gen).item())
        else:
            index = int(torch.multinomial(dist / total, 1, generator=gen).item())
        centroids.append(z[index])
        dist = torch.minimum(dist, ((z - z[index]) ** 2).sum(dim=1))
    return torch.stack(centroids)


def kmeans(z: Tensor, k: int, seed: int = 0, n_init: int = 3, max_iter: int = 100,
           tol: float = 1e-6) -> KMeansResult:
    """Cluster z (N, D) into k clusters.

    Args:
        z: points, float (N, D), N >= k.
        k: K, number of clusters.
        seed: seeds the k-means++ draws.
        n_init: independent seedings; the lowest-inertia result is returned.
        max_iter: Lloyd iterations per run at most.
        tol: stop when centroids move less than tol times the mean squared norm of z.
    """
    if z.dim() != 2 or z.shape[0] < k or k < 1:
        raise ValueError(f"k-means needs (N, D) points with N >= k = {k}, got {tuple(z.shape)}")
    z = z.double()
    gen = torch.Generator().manual_seed(seed)
    scale = float((z * z).sum(dim=1).mean()) or 1.0
    best: KMeansResult | None = None
    for _ in range(max(1, n_init)):
        centroids = _plus_plus(z, k, gen)
        iterations = 0
        for iterations in range(1, max_iter + 1):
            labels, dist = assign(z, centroids)
            sums = torch.zeros_like(centroids).index_add_(0, labels, z)
            counts = torch.bincount(labels, minlength=k).to(z.dtype)
            new = sums / counts.clamp_min(1)[:, None]
            for j in torch.nonzero(counts == 0).flatten().tolist():
                far = int(dist.argmax())
                new[j] = z[far]
                dist[far] = 0
            shift = float(((new - centroids) ** 2).sum())
            centroids = new
            if shift <= tol * scale:
                break
        labels, dist = assign(z, centroids)
        result = KMeansResult(centroids.float(), labels, float(dist.sum()), iterations)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best
