"""The fusions onnxruntime's graph optimizer makes, applied to a model before the TVM import.

onnxruntime (level 2, "extended") fuses every int8 QDQ group it runs as an integer kernel:
DQ -> Conv -> Q into QLinearConv, DQ -> MatMul -> Q into QLinearMatMul (weights and
activation x activation products alike), DQ -> Gemm (-> Q) into com.microsoft.QGemm, and the
group around Softmax into com.microsoft.QLinearSoftmax (a table of exponentials); on float
tensors Add + GELU into BiasGelu, Add + LayerNorm into SkipLayerNormalization, Transpose +
MatMul into FusedMatMul. Each fused kernel rounds unlike the ops it replaces (an integer
product and one requantization instead of a float32 op on dequantized operands), so TVM must
run the fused op wherever onnxruntime does, and only there: a group onnxruntime leaves as it
is (say, a bias whose scale is not s_x s_w) stays float in both. Which groups it fuses depends
on details of its pattern rules (zero points, scales, how many consumers a tensor has, which
constants are exactly sqrt(2), ...), so instead of re-implementing them this module asks
onnxruntime:

    optimized = onnxruntime's level-2 graph of `model`
    for each fused node F of optimized (FUSED op types):
        the nodes of `model` between F's inputs and F's outputs are replaced by F
        (with the nodes onnxruntime rewrote around F, when F reads or writes new tensors)

Only the fused nodes are taken over: onnxruntime's other rewrites (constant folding and
deduplication in the shape subgraphs) would leave shapes that TVM's importer cannot follow, and
do not change any value. Level 3 is left out: it changes layouts (NHWC integer convs, NCHWc
float convs), not the ops.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

ORT_DOMAIN = "com.microsoft"
#: (domain, op type) of the fused nodes taken over from onnxruntime's graph.
FUSED = {("", "QLinearConv"), ("", "QLinearMatMul"), (ORT_DOMAIN, "QGemm"), (ORT_DOMAIN, "QLinearSoftmax"),
         (ORT_DOMAIN, "BiasGelu"), (ORT_DOMAIN, "SkipLayerNormalization"), (ORT_DOMAIN, "FusedMatMul")}


class FusionError(ValueError):
    """onnxruntime's graph cannot be mapped back onto the model (names the fused node)."""


def optimized_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's level-2 optimized graph of `model` (CPU provider, axmoe ops registered)."""
    import onnxruntime as ort

    from runtime.ort import session_options

    options = session_options(threads=1)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for invalid models
            raise FusionError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
        return onnx.load(options.optimized_model_filepath)


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with onnxruntime's fused nodes in place of the groups they replace."""
    optimized = optimized_graph(model)
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    known = set(producer) | {t.name for t in graph.initializer} | {v.name for v in graph.input}
    ort_initializers = {t.name: t for t in optimized.graph.initializer}
    taken = _taken_nodes(optimized.graph, known, producer, graph)
    if not taken:
        return model
    nodes = [optimized.graph.node[i] for i in sorted(taken)]
    inputs = {name for n in nodes for name in n.input if name in known}
    outputs = {name for n in nodes for name in n.output if name in known}
    missing = {name for n in nodes for name in n.input if name and name not in known} - {
        o for n in nodes for o in n.output}
    for name in missing:
        if name not in ort_initializers:
            raise FusionError(f"onnxruntime's graph reads {name!r}, unknown to the model")
    sources = [producer[o] for o in outputs if o in producer]
    removed = _keep_read(graph, producer, _between(graph, producer, inputs, sources), nodes)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    kept = [n for i, n in enumerate(graph.node) if i not in removed]
    result.graph.node.extend(_topological(kept + nodes, graph, missing))
    result.graph.initializer.extend(ort_initializers[name] for name in sorted(missing))
    if any(n.domain == ORT_DOMAIN for n in nodes) and not any(o.domain == ORT_DOMAIN for o in result.opset_import):
        result.opset_import.append(onnx.helper.make_opsetid(ORT_DOMAIN, 1))
    return result


def _taken_nodes(optimized, known: set, producer: dict, graph) -> set[int]:
    """Indices (in onnxruntime's graph) of its fused nodes not already in the model, with the
    nodes around them that read or write tensors the model does not have (onnxruntime moves
    a QuantizeLinear across a Transpose before fusing, say: the int8 Transpose comes along)."""
    ort_producer = {out: i for i, node in enumerate(optimized.node) for out in node.output if out}
    ort_consumers: dict[str, list[int]] = {}
    for i, node in enumerate(optimized.node):
        for name in node.input:
            ort_consumers.setdefault(name, []).append(i)
    stack = []
    for i, node in enumerate(optimized.node):
        if (node.domain, node.op_type) not in FUSED:
            continue
        sources = [producer.get(o) for o in node.output if o]
        if all(s is not None and graph.node[s].op_type == node.op_type and graph.node[s].domain == node.domain
               for s in sources):
            continue  # already the fused op in the model
        stack.append(i)
    taken = set()
    while stack:
        i = stack.pop()
        if i in taken:
            continue
        taken.add(i)
        node = optimized.node[i]
        for name in node.output:
            if name and name not in known:
                stack.extend(ort_consumers.get(name, []))
        for name in node.input:
            if name and name not in known and name in ort_producer:
                stack.append(ort_producer[name])
    return taken


def _between(graph, producer: dict, inputs: set, sources: list[int]) -> set[int]:
    """Indices of the nodes that compute the fused node's outputs from its inputs."""
    group, stack = set(), list(sources)
    while stack:
        i = stack.pop()
        if i in group:
            continue
        group.add(i)
        for name in graph.node[i].input:
            if name and name not in inputs and name in producer:
                stack.append(producer[name])
    return group


def _keep_read(graph, producer: dict, removed: set[int], added: list[onnx.NodeProto]) -> set[int]:
    """`removed` less the nodes whose tensors other nodes (or the graph outputs) still read:
    onnxruntime duplicates a DequantizeLinear with several consumers before fusing one of
    them, so the original stays for the others."""
    remade = {o for n in added for o in n.output if o}
    removed = set(removed)
    outputs = {v.name for v in graph.output}
    while True:
        gone = {o for i in removed for o in graph.node[i].output if o} - remade
        read = {name for i, node in enumerate(graph.node) if i not in removed for name in node.input} | outputs
        restore = {producer[name] for name in gone & read}
        if not restore:
            return removed
        removed -= restore


def _topological(nodes: list[onnx.NodeProto], graph, extra: set) -> list[onnx.NodeProto]:
    """`nodes` in an order where every tensor is made before it is read (stable otherwise);
    `extra`: initializers to be added."""
    available = {t.name for t in graph.initializer} | {v.name for v in graph.input} | {""} | extra
    pending, order = list(nodes), []
    while pending:
        progress = []
        for node in pending:
            if all(name in available for name in node.input):
                order.append(node)
                available.update(node.output)
            else:
                progress.append(node)
        if len(progress) == len(pending):
            raise FusionError(f"a cycle or a missing tensor before {progress[0].op_type} {progress[0].name!r}")
        pending = progress
    return order
