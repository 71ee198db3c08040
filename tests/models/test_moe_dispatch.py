"""models.dispatch / models.moe: sparse dispatch runs each row only through its experts."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import models
from models.dispatch import sparse_dispatch
from models.gating import Routing


class Recorder(nn.Module):
    """A linear expert that records how many rows it was given."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.rows: list[int] = []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.linear(x)


def _routing(mask: torch.Tensor) -> Routing:
    weights = torch.rand(mask.shape) * mask
    return Routing(weights, mask)


def test_matches_dense_reference():
    torch.manual_seed(0)
    experts = [Recorder(6) for _ in range(3)]
    x = torch.randn(10, 6)
    mask = torch.rand(10, 3) < 0.5
    routing = _routing(mask)
    y = sparse_dispatch(x, routing, experts, x.shape)
    reference = sum(routing.weights[:, e:e + 1] * experts[e](x) for e in range(3))
    assert torch.allclose(y, reference, atol=1e-6)
    assert [e.rows[0] for e in experts] == mask.sum(0).tolist()


def test_unrouted_experts_do_no_work():
    experts = [Recorder(4) for _ in range(4)]
    mask = torch.zeros(8, 4, dtype=torch.bool)
    mask[:, 2] = True
    x = torch.randn(8, 4)
    with FlopCounterMode(display=False) as counter:
        y = sparse_dispatch(x, _routing(mask), experts, x.shape)
    assert [e.rows for e in experts] == [[0], [0], [8], [0]]
    assert counter.get_total_flops() == 2 * 8 * 4 * 4  # one 8x4 @ 4x4 matmul, nothing else
    assert y.shape == x.shape
    # rows routed nowhere come out zero
    mask[:3] = False
    y = sparse_dispatch(x, _routing(mask), experts, x.shape)
    assert (y[:3] == 0).all()


def test_hard_top1_spends_one_expert_of_compute():
    torch.manual_seed(0)
    model = models.create("resnet20", "hard", width=8, num_experts=4).eval()
    layer = model.stages[2]
    x = torch.randn(16, 16, 16, 16)  # stage-2 input: (B, 2w, 16, 16)
    with torch.no_grad():
        with FlopCounterMode(display=False) as routed:
            layer(x)
        with FlopCounterMode(display=False) as every:
            for expert in layer.experts:
                expert(x)
        with FlopCounterMode(display=False) as gate:
            layer.gate(layer.routing_features(x))
    assert layer.expert_load().sum() == 16
    ratio = (routed.get_total_flops() - gate.get_total_flops()) / every.get_total_flops()
    assert ratio == 1 / 4


def test_output_shape_follows_strided_stage():
    model = models.create("resnet20", "hard", width=4, moe_stages=[1]).eval()
    for side in (32, 31, 17):
        x = torch.randn(3, 4, side, side)
        with torch.no_grad():
            y = model.stages[1](x)
        assert y.shape == (3, 8, (side - 1) // 2 + 1, (side - 1) // 2 + 1)
        assert y.shape == model.stages[1].experts[0](x).shape


def test_exports_to_onnx_with_every_expert(tmp_path):
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    model = models.create("resnet20", "hard", width=4, num_experts=3).eval()
    x = torch.randn(5, 3, 32, 32)
    path = tmp_path / "hard.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    graph = onnx.load(str(path)).graph
    assert sum(node.op_type == "NonZero" for node in graph.node) == 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        xb = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(xb).numpy()
        got = session.run(None, {"x": xb.numpy()})[0]
        assert abs(got - expected).max() < 1e-4
