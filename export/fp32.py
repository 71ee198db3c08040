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


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, batchnorm path) of every Conv followed by a BatchNorm over its outputs.

    Pairs are consecutive children of one parent (nn.Sequential, or attributes registered in
    the order conv, bn), the layout every axmoe CNN uses.
    """
    pairs = []
    for prefix, parent in model.named_modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) \
                    and bn.track_running_stats and conv.out_channels == bn.num_features:
                join = (prefix + ".") if prefix else ""
                pairs.append((join + first, join + second))
    return pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every Conv -> BatchNorm pair folded (BN -> Identity)."""
    model = copy.deepcopy(model).eval()
    for conv_path, bn_path in batchnorm_pairs(model):
        parent_path, _, conv_name = conv_path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        bn_name = bn_path.rpartition(".")[2]
        parent._modules[conv_name] = torch.nn.utils.fusion.fuse_conv_bn_eval(parent._modules[conv_name],
                                                                           parent._modules[bn_name])
        parent._modules[bn_name] = nn.Identity()
    return model


def unfold_batchnorm_state(model: nn.Module, folded_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict for the *unfolded* `model` that folds back to `folded_state` exactly.

    Each folded conv (W', b') is stored as conv.weight = W' and an identity BatchNorm with
    beta = b': gamma = 1, mean = 0 and a running variance v with float32(v + eps) == 1, so
    fold_batchnorm computes W' * 1 and (0 - 0) * 1 + b', bit for bit.
    """
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = dict(batchnorm_pairs(model))
    for key, value in folded_state.items():
        owner, _, leaf = key.rpartition(".")
        if owner in pairs and leaf in ("weight", "bias"):
            bn = pairs[owner]
            if leaf == "weight":
                state[key] = value.clone()
            else:
                eps = model.get_submodule(bn).eps
                var = torch.tensor(1.0, dtype=torch.float32) - torch.tensor(eps, dtype=torch.float32)
                while float(var + torch.tensor(eps, dtype=torch.float32)) != 1.0:
                    var = torch.nextafter(var, torch.tensor(2.0))
                state[f"{bn}.weight"] = torch.ones_like(state[f"{bn}.weight"])
                state[f"{bn}.bias"] = value.clone()
                state[f"{bn}.running_mean"] = torch.zeros_like(state[f"{bn}.running_mean"])
                state[f"{bn}.running_var"] = torch.full_like(state[f"{bn}.running_var"], float(var))
        elif key in state:
            state[key] = value.clone()
    return state


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
