"""The exported hard-MoE graph runs only the routed rows through each expert."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import torch

import models
from export.fp32 import export_fp32, fold_batchnorm
from runtime.ort import session_options


def routed_to_expert_zero(seed=0):
    """ResNet-20 hard MoE whose router sends every image to expert 0; experts 1-3 hold NaNs,
    so any row they processed would poison the output."""
    torch.manual_seed(seed)
    model = models.create("resnet20", "hard", num_classes=10, width=4).eval()
    (moe,) = [m for m in model.modules() if isinstance(m, models.MoELayer)]
    with torch.no_grad():
        moe.gate.w_gate.weight.zero_()
        moe.gate.w_gate.weight[0] = 1.0  # routing features are post-ReLU means, >= 0
        for expert in list(moe.experts)[1:]:
            for p in expert.parameters():
                p.fill_(float("nan"))
    return model, moe


def test_unrouted_experts_do_no_work(tmp_path):
    model, moe = routed_to_expert_zero()
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.isfinite(expected).all()
    (load,) = model.expert_load().values()
    assert load.tolist() == [8, 0, 0, 0]
    path = tmp_path / "hard.onnx"
    export_fp32(fold_batchnorm(model), torch.zeros(2, 3, 32, 32), path)
    graph = onnx.load(str(path)).graph
    # every expert is in the graph (a static loop), not only the one the example input hit
    for e in range(4):
        assert any(f"experts.{e}" in n.name and n.op_type == "Conv" for n in graph.node)
    options = session_options(threads=1)
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})
    profile = json.loads(open(sess.end_profiling()).read())
    assert np.isfinite(got).all()
    assert np.abs(got - expected).max() <= 1e-5
    # the profiler saw the unrouted experts' convolutions run on empty batches
    shapes = {}
    for event in profile:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time") and "/Conv" in name:
            first_input = event["args"]["input_type_shape"][0]
            shapes[name] = next(iter(first_input.values()))[0]
    for e in range(4):
        batches = {b for n, b in shapes.items() if f"experts.{e}/" in n}
        assert batches == ({8} if e == 0 else {0}), (e, batches)
