"""Routers: map routing features z (R, D) to combine weights and a dispatch mask over E experts.

Every gate derives from `Router` and returns a `Routing`: `weights` (R, E) float, zero where a row is not routed to an
expert, and `mask` (R, E) bool, true where row r runs expert e. Gates are deterministic in
eval mode (noise only while training) and use no Python control flow on tensor values, so
they trace and export (TopK, Softmax, ScatterElements, ArgMax).

- `TopKGate` (Hard MoE; Shazeer et al. 2017, Switch for k = 1):
      H = z W_g + eps * softplus(z W_noise),  eps ~ N(0, 1) while training, 0 in eval
      p = softmax(H),  T = top-k(H)
      G_e = p_e / sum_{j in T} p_j   for e in T when k > 1   (= softmax(KeepTopK(H, k)))
      G_e = p_e                      for e in T when k = 1   (Switch: keeps a router gradient)
      aux = alpha * E * sum_e f_e P_e,  f_e = share of the R*k assignments that go to e,
                                        P_e = mean_r p_{r,e}, both of the noise-free router
- `SoftmaxGate` (Soft MoE with one token per input): G = softmax(z W_g), every expert runs.
- `CentroidGate` (Cluster MoE): one-hot on argmax_e (2 mu_e . z - |mu_e|^2), i.e. the nearest
  k-means centroid mu_e; the centroids are a buffer set by `set_centroids`.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


#: alpha of the Switch balancing loss, the default of every hard MoE (models.create, the
#: train CLI, `TopKGate`). 0.1, not Switch's 0.01: Switch routes thousands of tokens a batch
#: under capacity limits, while a CNN here routes each of 128 images with none, and on
#: Fashion-MNIST ResNet-20 (4 experts, top-1, 2 epochs) 0.01 left 2 experts unused at
#: inference and 0.03 one, where 0.1 spread the test images evenly.
AUX_LOSS_WEIGHT = 0.1


class Routing(NamedTuple):
    weights: Tensor  # (R, E) combine weight of expert e for row r, 0 where not routed
    mask: Tensor     # (R, E) bool, row r runs through expert e


def _one_hot_rows(scores: Tensor, index: Tensor, values: Tensor) -> Routing:
    """Scatter `values` (R, k) at `index` (R, k) into (R, E) weights plus the matching mask.
    The mask is scattered separately so a weight that underflows to 0 still runs its expert."""
    weights = torch.zeros_like(scores).scatter(1, index, values)
    mask = torch.zeros_like(scores).scatter(1, index, 1.0) > 0
    return Routing(weights, mask)


class Router(nn.Module, abc.ABC):
    """Base of every gate: routing features z (R, D) -> `Routing` over E experts.

    What the rest of axmoe relies on: `num_experts` (E); `aux_loss`, the auxiliary loss of
    the last training forward or None (`models.moe.MoEModelMixin.aux_loss` sums them);
    `init_weights()`, which timm's ViT initialiser calls. The exporter keeps every node
    inside a Router in float (`isinstance(module, Router)`), so a new gate exports right
    without being listed anywhere.

    Args:
        num_experts: E.
    """

    def __init__(self, num_experts: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.aux_loss: Tensor | None = None

    @abc.abstractmethod
    def init_weights(self) -> None:
        """(Re)initialise the router's own weights."""

    @abc.abstractmethod
    def forward(self, z: Tensor) -> Routing:
        """z (R, D) -> Routing, weights and mask (R, E)."""


class TopKGate(Router):
    """Noisy top-k gate with the Switch balancing loss (see module docstring).

    Args:
        dim: D, size of the routing features.
        num_experts: E.
        top_k: k experts per row, 1 <= k <= E.
        noisy: add the learned Gaussian noise while training.
        aux_loss_weight: alpha of the balancing loss (`AUX_LOSS_WEIGHT`; Switch uses 0.01).
    """

    def __init__(self, dim: int, num_experts: int, top_k: int = 1, noisy: bool = True,
                 aux_loss_weight: float = AUX_LOSS_WEIGHT) -> None:
        super().__init__(num_experts)
        self.top_k = top_k
        self.noisy = noisy
        self.aux_loss_weight = aux_loss_weight
        self.w_gate = nn.Linear(dim, num_experts, bias=False)
        self.w_noise = nn.Linear(dim, num_experts, bias=False) if noisy else None
        self.init_weights()

    def init_weights(self) -> None:
        # Small router logits: routing starts near uniform and the noise explores; the noise
        # scale starts at softplus(0) (Shazeer initialises W_noise to zero).
        nn.init.normal_(self.w_gate.weight, std=0.02)
        if self.w_noise is not None:
            nn.init.zeros_(self.w_noise.weight)

    def forward(self, z: Tensor) -> Routing:
        """z (R, D) -> Routing with k nonzero weights per row."""
        clean = self.w_gate(z)
        logits = clean
        if self.training and self.w_noise is not None:
            logits = clean + torch.randn_like(clean) * F.softplus(self.w_noise(z))
        probs = logits.softmax(dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        routing = _one_hot_rows(probs, top_i, top_p)
        self.aux_loss = self.balance_loss(clean) if self.training else None
        return routing

    def balance_loss(self, clean: Tensor) -> Tensor:
        """alpha E sum_e f_e P_e of the noise-free router, the one inference uses. On the noisy
        one, the learned noise could satisfy the loss by itself (random routing is balanced)
        while the noise-free routing collapses onto one expert."""
        probs = clean.softmax(dim=-1)
        chosen = torch.zeros_like(probs).scatter(1, probs.topk(self.top_k, dim=-1).indices, 1.0)
        share = chosen.mean(dim=0) / self.top_k
        return self.aux_loss_weight * self.num_experts * (share * probs.mean(dim=0)).sum()


class SoftmaxGate(Router):
    """Soft-gated mixture of all experts: G = softmax(z W_g), mask all true.

    Args:
        dim: D, size of the routing features.
        num_experts: E.
    """

    def __init__(self, dim: int, num_experts: int) -> None:
        super().__init__(num_experts)
        self.w_gate = nn.Linear(dim, num_experts, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.w_gate.weight, std=0.02)

    def forward(self, z: Tensor) -> Routing:
        weights = self.w_gate(z).softmax(dim=-1)
        return Routing(weights, torch.ones_like(weights, dtype=torch.bool))


class CentroidGate(Router):
    """Nearest-centroid routing: e*(z) = argmax_e (2 mu_e . z - |mu_e|^2), weight 1.

    Args:
        dim: D, size of the routing features.
        num_experts: E, the number of k-means centroids.
    """

    def __init__(self, dim: int, num_experts: int) -> None:
        super().__init__(num_experts)
        self.register_buffer("centroids", torch.zeros(num_experts, dim))

    def init_weights(self) -> None:
        # Centroids come from k-means (`set_centroids`), never from a weight initialiser.
        pass

    @torch.no_grad()
    def set_centroids(self, centroids: Tensor) -> None:
        """centroids (E, D), e.g. k-means over the routing features of a trained dense trunk."""
        if tuple(centroids.shape) != tuple(self.centroids.shape):
            raise ValueError(f"centroids must have shape {tuple(self.centroids.shape)}, "
                             f"got {tuple(centroids.shape)}")
        self.centroids.copy_(centroids)

    def forward(self, z: Tensor) -> Routing:
        mu = self.centroids.to(z.dtype)
        scores = 2 * z @ mu.t() - (mu * mu).sum(dim=-1)
        index = scores.argmax(dim=-1, keepdim=True)
        return _one_hot_rows(scores, index, torch.ones_like(index, dtype=scores.dtype))
