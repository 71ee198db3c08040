"""models.gating: top-k (noisy) gate, softmax gate, centroid gate."""

from __future__ import annotations

import pytest
import torch

from models.gating import CentroidGate, SoftmaxGate, TopKGate


@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk_routes_each_row_to_k_experts(k):
    torch.manual_seed(0)
    gate = TopKGate(8, num_experts=5, top_k=k)
    nn_init = torch.nn.init
    nn_init.normal_(gate.w_gate.weight)
    z = torch.randn(16, 8)
    gate.eval()
    routing = gate(z)
    assert routing.mask.dtype == torch.bool and routing.mask.shape == (16, 5)
    assert (routing.mask.sum(1) == k).all()
    assert ((routing.weights > 0) == routing.mask).all()
    probs = (z @ gate.w_gate.weight.t()).softmax(-1)
    top = probs.topk(k, dim=-1)
    chosen = torch.zeros_like(routing.mask).scatter(1, top.indices, True)
    assert torch.equal(chosen, routing.mask)
    if k == 1:  # Switch: the router probability itself
        assert torch.allclose(routing.weights.sum(1), top.values.squeeze(1))
    else:       # Shazeer: softmax over the kept logits
        assert torch.allclose(routing.weights.sum(1), torch.ones(16))
        expected = torch.zeros(16, 5).scatter(1, top.indices, (top.values / top.values.sum(1, keepdim=True)))
        assert torch.allclose(routing.weights, expected)
    assert gate.aux_loss is None


def test_noise_only_in_training_and_aux_loss_formula():
    torch.manual_seed(0)
    gate = TopKGate(8, num_experts=4, top_k=1, aux_loss_weight=0.01)
    torch.nn.init.normal_(gate.w_noise.weight)
    z = torch.randn(64, 8)
    gate.eval()
    a, b = gate(z), gate(z)
    assert torch.equal(a.weights, b.weights)
    gate.train()
    c, d = gate(z), gate(z)
    assert not torch.equal(c.mask, d.mask)  # noisy routing differs between draws
    # Switch loss alpha * E * sum_e f_e P_e, of the noise-free router (the noise cannot satisfy it)
    gate(z)
    probs = gate.w_gate(z).softmax(-1)
    f = torch.bincount(probs.argmax(1), minlength=4).float() / 64
    assert torch.allclose(gate.aux_loss, 0.01 * 4 * (f * probs.mean(0)).sum())
    aux = gate.aux_loss
    gate(z)
    assert torch.equal(gate.aux_loss, aux)  # independent of the noise draw


def test_aux_loss_is_alpha_when_balanced_and_gate_gets_gradient():
    gate = TopKGate(4, num_experts=4, top_k=1, noisy=False, aux_loss_weight=0.01)
    with torch.no_grad():
        gate.w_gate.weight.copy_(torch.eye(4) * 10)
    gate.train()
    z = torch.eye(4)  # row i strongly prefers expert i: f = P = 1/4 (nearly)
    routing = gate(z)
    assert torch.allclose(gate.aux_loss, torch.tensor(0.01), atol=1e-4)
    (routing.weights.sum() + gate.aux_loss).backward()
    assert gate.w_gate.weight.grad is not None and gate.w_gate.weight.grad.abs().sum() > 0


def test_softmax_gate_runs_every_expert():
    gate = SoftmaxGate(6, num_experts=3)
    routing = gate(torch.randn(5, 6))
    assert routing.mask.all()
    assert torch.allclose(routing.weights.sum(1), torch.ones(5))


def test_centroid_gate_picks_nearest_centroid():
    torch.manual_seed(0)
    gate = CentroidGate(3, num_experts=4)
    centroids = torch.randn(4, 3) * 3
    gate.set_centroids(centroids)
    z = torch.randn(50, 3) * 3
    routing = gate(z)
    nearest = torch.cdist(z, centroids).argmin(1)
    assert torch.equal(routing.mask.float().argmax(1), nearest)
    assert (routing.mask.sum(1) == 1).all()
    assert torch.equal(routing.weights, routing.mask.float())
    assert "centroids" in gate.state_dict()
    with pytest.raises(ValueError, match="shape"):
        gate.set_centroids(torch.zeros(3, 3))
