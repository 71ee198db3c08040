"""MoE routers in approximate-aware retraining: which float initializers train, the balancing
loss, and the expert load of the deployed graph.

The exporter keeps every `models.gating.Router` float (`export.exporter.router_node_names`, the
one rule for which nodes are router nodes), so a router's weights are float initializers of the
int8 graph. For each router module g of the (BatchNorm-folded) model:

    trainable    the float initializers of g's nodes that hold a parameter of g (or its
                 transpose; `export.requantize.float_initializers`). Buffers never train: the
                 k-means centroids of Cluster MoE (`CentroidGate`) stay as they are.
    aux loss     the gate's own `balance_loss(H)` when it has one (`TopKGate`: alpha E sum_e f_e P_e,
                 alpha the model config's aux_loss_weight, default `models.gating.AUX_LOSS_WEIGHT`),
                 on its noise-free logits H (R, E), tapped from the emulation: the input of the
                 Softmax node in g's scope. Soft MoE (`SoftmaxGate`) has none.
    load         the (R, E) bool dispatch mask leaving g's scope, read from onnxruntime:
                 share_e = sum_r mask[r, e] / sum_{r, e} mask[r, e] over the test images, and
                 max_share = max_e share_e, per MoE layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import torch
from torch import nn

from export.exporter import router_node_names
from export.fp32 import INPUT_NAME, module_path_of
from export.requantize import float_initializers
from models.gating import Router


@dataclass
class RouterSite:
    """One router of the int8 graph."""

    path: str                       # module path of the Router (e.g. "stages.2.gate")
    gate: Router                    # the folded model's module (its balance_loss, alpha, E, k)
    params: dict[str, tuple[str, bool]] = field(default_factory=dict)  # initializer -> (parameter, transposed)
    logits: str | None = None       # tensor the aux loss reads (Softmax input), None: no aux loss
    mask: str | None = None         # (R, E) bool dispatch mask leaving the router


def find_routers(folded: nn.Module, int8: onnx.ModelProto) -> list[RouterSite]:
    """Every Router of `folded` that appears in `int8`, in graph order."""
    names = set(router_node_names(folded, int8))
    nodes = [n for n in int8.graph.node if n.name in names]
    typed = onnx.shape_inference.infer_shapes(int8)
    elem = {v.name: v.type.tensor_type.elem_type for v in (*typed.graph.value_info, *typed.graph.output)}
    gates = {name: m for name, m in folded.named_modules() if isinstance(m, Router)}
    parameters = {k: v.detach().cpu().numpy() for k, v in folded.named_parameters()}
    sites: dict[str, RouterSite] = {}
    for node in nodes:
        path = module_path_of(node.name)
        gate_path = next(g for g in gates if path == g or path.startswith(g + "."))
        sites.setdefault(gate_path, RouterSite(gate_path, gates[gate_path]))
    outside_inputs = {i for n in int8.graph.node if n.name not in names for i in n.input}
    for site in sites.values():
        own = [n for n in nodes if _within(module_path_of(n.name), site.path)]
        gate_params = {k: v for k, v in parameters.items() if k.startswith(site.path + ".")}
        site.params = float_initializers(int8, [n.name for n in own], gate_params)
        softmax = [n for n in own if n.op_type == "Softmax"]
        if hasattr(site.gate, "balance_loss") and len(softmax) == 1:
            site.logits = softmax[0].input[0]
        masks = [o for n in own if n.op_type != "Constant" for o in n.output
                 if o in outside_inputs and elem.get(o) == onnx.TensorProto.BOOL]
        site.mask = masks[0] if len(masks) == 1 else None
    return list(sites.values())


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def trainable_floats(sites: list[RouterSite], int8: onnx.ModelProto) -> dict[str, np.ndarray]:
    """initializer name -> its stored value, for every router parameter of `sites`."""
    from onnx import numpy_helper

    inits = {i.name: i for i in int8.graph.initializer}
    return {name: numpy_helper.to_array(inits[name]) for site in sites for name in site.params}


def aux_loss(sites: list[RouterSite], tapped: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Sum of the gates' balancing losses on the tapped logits; None when no gate has one."""
    losses = [site.gate.balance_loss(tapped[site.logits].float()) for site in sites if site.logits]
    return torch.stack(losses).sum() if losses else None


def parameter_values(sites: list[RouterSite], values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Trained initializer values -> the router parameters they hold (transposed back)."""
    out = {}
    for site in sites:
        for init, (param, transposed) in site.params.items():
            if init in values:
                out[param] = np.ascontiguousarray(values[init].T if transposed else values[init])
    return out


def logits_and_load(path: str | Path, images: torch.Tensor, data: Mapping[str, Any], sites: list[RouterSite],
                    batch: int = 256, progress: bool = False) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Logits (N, classes) of the ONNX model at `path` in onnxruntime, and per router with a
    mask: {"rows": per-expert counts, "share", "max_share"} over the N images."""
    from models.datasets import preprocess
    from runtime.ort import session

    model = onnx.load(str(path))
    masks = [s for s in sites if s.mask]
    typed = onnx.shape_inference.infer_shapes(model)
    info = {v.name: v for v in typed.graph.value_info}
    for site in masks:
        model.graph.output.append(info[site.mask] if site.mask in info else
                                  onnx.helper.make_tensor_value_info(site.mask, onnx.TensorProto.BOOL, None))
    sess = session(model.SerializeToString())
    logits, counts = [], {s.path: 0 for s in masks}
    starts = range(0, len(images), batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="onnxruntime", unit="batch", leave=False)
    for start in starts:
        x = preprocess(images[start:start + batch], data).numpy()
        outs = sess.run(None, {INPUT_NAME: x})
        logits.append(outs[0])
        for site, mask in zip(masks, outs[len(outs) - len(masks):]):
            counts[site.path] = counts[site.path] + np.asarray(mask, dtype=np.int64).reshape(-1, mask.shape[-1]).sum(0)
    load = {}
    for path, rows in counts.items():
        rows = np.asarray(rows, dtype=np.int64)
        share = rows / max(int(rows.sum()), 1)
        load[path] = {"rows": rows.tolist(), "share": share.tolist(), "max_share": float(share.max())}
    return np.concatenate(logits), load
