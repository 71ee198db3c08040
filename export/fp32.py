"""Step 1 of export: a PyTorch model -> fp32 ONNX with a dynamic batch.

BatchNorm is folded into the preceding convolution in PyTorch first (W' = W * g / sqrt(v + e),
b' = (b - m) * g / sqrt(v + e) + beta), so the exported Conv weights are exactly parameters
of the folded model: the quantized emulation and approximate retraining train those same
tensors. Node names keep the module scopes (`/layer1/layer1.0/conv1/Conv`), which is how
later steps map an ONNX node back to its module (`module_path_of`).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

#: onnxruntime 1.2x-1.3x loads IR versions up to 10+; onnx 1.23 writes 14 by default.
IR_VERSION = 10
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every Conv -> BatchNorm pair folded (BN -> Identity).

    Pairs are found as consecutive children of one parent (nn.Sequential or attributes
    registered in order conv, bn), the layout every axmoe CNN uses.
    """
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) \
                    and bn.track_running_stats and conv.out_channels == bn.num_features:
                parent._modules[first] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
    return model


def export_fp32(model: nn.Module, example: torch.Tensor, path: str | Path | None = None,
                opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export `model` (eval mode) to ONNX with a dynamic batch dimension.

    Args:
        model: the network; its forward takes one image batch (N, C, H, W) and returns logits.
        example: an example batch, (N, C, H, W) float32; only its trailing shape is baked in.
        path: where to save the model (optional).
    """
    model = model.eval()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save(proto, str(path))
    return proto


def module_path_of(node_name: str) -> str:
    """Module path from a TorchScript-exporter node name.

    "/layer1/layer1.0/conv1/Conv" -> "layer1.0.conv1": each scope segment is either the
    child's full path (it extends the parent's) or its local name (appended).
    """
    segments = [s for s in node_name.split("/") if s][:-1]
    path = ""
    for seg in segments:
        if not path or seg.startswith(path + "."):
            path = seg
        else:
            path = f"{path}.{seg}"
    return path


def max_abs_diff(session, model: nn.Module, batch: torch.Tensor) -> float:
    """Largest |onnxruntime - PyTorch| logit difference on `batch`."""
    with torch.no_grad():
        expected = model.eval()(batch).numpy()
    (got,) = session.run(None, {INPUT_NAME: batch.numpy()})
    return float(np.max(np.abs(got - expected)))
