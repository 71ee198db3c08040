"""Where a model's multiply-accumulates are: its MAC layers, their MoE roles, and the tensors
that say how many rows each one processed.

A *MAC layer* is one Conv / Gemm / MatMul of the source model, in whichever form it has now
(QDQ float op, QLinearConv, ConvInteger, axmoe.ApproxConvInteger, or the several integer
products of a decomposed rewrite, grouped back under the node name the pass was given). Its
work on one batch is

    MACs_l = rows_l x macs_per_row_l,     macs_per_row_l = prod(out_l.shape[1:]) x K_l

with K the reduction (Conv: C/group x kh x kw; MatMul: the last dim of A; Gemm: A's inner dim)
and rows_l the leading dim of its activation, which every op here keeps (N of NCHW, rows of a
matrix, the batch of a batched matmul). In an MoE layer rows_l is data-dependent: the rows
routed to that expert. It is read at run time from a *proxy*: the activation followed upward
through dequantization, casts, masks and shifts to the first tensor a QuantizeLinear (or the
graph input, or any other op) produced, so the extra Shape node hangs off a tensor that no
QDQ fusion of onnxruntime needs to own; a fused QLinearConv keeps running as fused.

MoE structure comes from node names, as torch.onnx writes them (`.../experts.<i>/...`): the
prefix before `experts.<i>` names the MoE layer; MAC layers under that prefix without an
expert index are its router. Models whose names carry no experts are all trunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import onnx
from onnx import helper

from modelfile import metadata as model_metadata
from modelfile.naming import EVAL_PREFIX, REWRITE_PREFIX, rewrite_scope, split_expert
from modelfile.ops import APPROX_CONV_INTEGER, APPROX_MATMUL_INTEGER, DOMAIN

#: (domain, op_type) -> (activation input, weight input, reduction rule)
MAC_OPS: dict[tuple[str, str], tuple[int, int, str]] = {
    ("", "Conv"): (0, 1, "conv"),
    ("", "ConvInteger"): (0, 1, "conv"),
    ("", "QLinearConv"): (0, 3, "conv"),
    (DOMAIN, APPROX_CONV_INTEGER): (0, 1, "conv"),
    ("", "MatMul"): (0, 1, "matmul"),
    ("", "MatMulInteger"): (0, 1, "matmul"),
    ("", "QLinearMatMul"): (0, 3, "matmul"),
    (DOMAIN, APPROX_MATMUL_INTEGER): (0, 1, "matmul"),
    ("", "Gemm"): (0, 1, "gemm"),
}
#: ops whose output has the leading dim of input 0 and that only prepare an activation for a
#: product (dequantize, widen, mask, split into bit planes); the proxy search walks up them
PASS_THROUGH = {"DequantizeLinear", "Cast", "Identity", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
                "BitShift", "Sub", "Add", "Mul"}


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def layer_label(prefix: str) -> str:
    """`/stages/stages.2/` -> `stages.2`: the torch module name of an MoE layer."""
    parts = [p for p in prefix.strip("/.").split("/") if p]
    return parts[-1] if parts else prefix


@dataclass
class MacLayer:
    name: str                      # source node name (the pass's key), or the node's own name
    op_type: str                   # op type of the representative node
    kind: str                      # conv | matmul | gemm (reduction rule)
    activation: str                # tensor: input A / x of the representative node
    weight: str                    # tensor: the other operand
    output: str                    # tensor: output of the representative node
    proxy: str                     # tensor whose leading dim is this layer's rows
    nodes: list[str] = field(default_factory=list)  # every node of the layer
    multiplier: str | None = None  # from axmoe.assignment (None: not rewritten -> exact)
    lowering: str | None = None    # lut | decomposed | none, when rewritten
    moe_layer: str | None = None   # MoE layer prefix, for experts and routers
    expert: int | None = None      # expert index, experts only
    macs_per_row: int | None = None  # set by the probe run
    reduction: int | None = None     # K, set by the probe run

    @property
    def role(self) -> str:
        if self.moe_layer is None:
            return "trunk"
        return "router" if self.expert is None else "expert"


@dataclass
class GraphInfo:
    layers: list[MacLayer]
    input_name: str
    output_name: str
    metadata: dict[str, str]

    @property
    def moe_layers(self) -> list[str]:
        seen: dict[str, None] = {}
        for layer in self.layers:
            if layer.moe_layer is not None:
                seen.setdefault(layer.moe_layer)
        return list(seen)

    def experts_of(self, moe_layer: str) -> dict[int, list[MacLayer]]:
        out: dict[int, list[MacLayer]] = {}
        for layer in self.layers:
            if layer.moe_layer == moe_layer and layer.expert is not None:
                out.setdefault(layer.expert, []).append(layer)
        return dict(sorted(out.items()))

    def routers_of(self, moe_layer: str) -> list[MacLayer]:
        return [l for l in self.layers if l.moe_layer == moe_layer and l.expert is None]

    def proxies(self) -> list[str]:
        return list(dict.fromkeys(l.proxy for l in self.layers))


def _origins(assignment: dict[str, dict]) -> dict[str, str]:
    """Prefix the pass gives a rewritten node's new nodes -> source node name."""
    return {rewrite_scope(name) + "/": name for name in assignment}


def _origin_of(node: onnx.NodeProto, origins: dict[str, str]) -> str:
    if node.name.startswith(REWRITE_PREFIX):
        head = REWRITE_PREFIX + node.name[len(REWRITE_PREFIX):].split("/", 1)[0] + "/"
        if head in origins:
            return origins[head]
    return node.name or node.output[0]


def _find_proxy(tensor: str, producers: dict[str, onnx.NodeProto], initializers: set[str]) -> str:
    seen = set()
    while tensor in producers and tensor not in seen:
        seen.add(tensor)
        node = producers[tensor]
        if node.op_type not in PASS_THROUGH or _domain(node) != "":
            return tensor
        nxt = node.input[0] if node.input else ""
        if not nxt or nxt in initializers:
            return tensor
        tensor = nxt
    return tensor


def analyse(model: onnx.ModelProto) -> GraphInfo:
    """The MAC layers of `model` (see module docstring), in graph order; shapes unset."""
    graph = model.graph
    metadata = model_metadata.raw(model)
    assignment = model_metadata.get(model, model_metadata.ASSIGNMENT, {})
    origins = _origins(assignment)
    initializers = {t.name for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output if out}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if not inputs or not graph.output:
        raise ValueError("the model has no graph input or output")
    layers: dict[str, MacLayer] = {}
    for node in graph.node:
        spec = MAC_OPS.get((_domain(node), node.op_type))
        if spec is None:
            continue
        origin = _origin_of(node, origins)
        if origin in layers:
            layers[origin].nodes.append(node.name)
            continue
        act, weight, kind = spec
        if len(node.input) <= max(act, weight):
            continue
        layer = MacLayer(origin, node.op_type, kind, node.input[act], node.input[weight], node.output[0],
                         _find_proxy(node.input[act], producers, initializers), [node.name])
        entry = assignment.get(origin)
        if entry and "lowering" in entry:  # the pass rewrote it (or kept it exact on purpose)
            layer.multiplier, layer.lowering = entry["multiplier"], entry["lowering"]
        split = split_expert(origin)
        if split:
            layer.moe_layer, layer.expert = split
        layers[origin] = layer
    moe_prefixes = {l.moe_layer for l in layers.values() if l.moe_layer is not None}
    for layer in layers.values():
        if layer.moe_layer is None:
            for prefix in moe_prefixes:
                if layer.name.startswith(prefix):
                    layer.moe_layer = prefix
    return GraphInfo(list(layers.values()), inputs[0], graph.output[0].name, metadata)


def with_shape_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` that also returns `Shape(t)` (int64 (rank,)) for each tensor `t`,
    after its first output; returns the copy and the names of the added outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = []
    for i, tensor in enumerate(dict.fromkeys(tensors)):
        name = f"{EVAL_PREFIX}shape_{i}"
        out.graph.node.append(helper.make_node("Shape", [tensor], [name], name=f"{EVAL_PREFIX}Shape_{i}"))
        out.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
        names.append(name)
    return out, names


def reduction(kind: str, node_attrs: dict, a_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    """K: products summed into one output value."""
    if kind == "conv":
        return int(np.prod(w_shape[1:]))
    if kind == "gemm":
        return int(a_shape[0] if node_attrs.get("transA", 0) else a_shape[-1])
    return int(a_shape[-1])


def node_attributes(model: onnx.ModelProto, name: str) -> dict:
    for node in model.graph.node:
        if node.name == name:
            return {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {}
