"""The pass's post-condition: the model it writes is valid.

    check(model, source)    raises InvalidModelError (one line, naming the node or value)

A rewritten `model` is valid when, in this order:

1. every value a node reads (main graph and subgraphs, outer-scope values included) is a
   graph input, an initializer or the output of an earlier node, and so is every graph output;
2. every graph output of the input model `source` is still a graph output of `model`, with its
   name, element type and (where `source` records one) shape;
3. `onnx.checker.check_model(model, full_check=True)` passes with the axmoe schemas registered
   (`modelfile.ops.register_schemas`), and so does strict type-checking shape inference: no
   recorded shape or type disagrees with what its producer infers.

A failure of 3 names the first node at which strict inference fails. Loading the model in
onnxruntime is not part of the check (it needs the custom-op library); the tests do it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from modelfile.ops import register_schemas


PROTOBUF_LIMIT = 2**31 - 1


class InvalidModelError(ValueError):
    """The pass's output is not a valid model (a bug of the pass, never written to disk)."""


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node writing {list(node.output)}"


def _subgraphs(node: onnx.NodeProto):
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def dangling_reads(graph: onnx.GraphProto, outer: frozenset = frozenset()) -> str | None:
    """Why some node of `graph` (or of its subgraphs) reads a value nothing produces before it,
    or None. `outer`: the names visible from enclosing graphs."""
    known = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer}
    known |= {t.name for t in graph.sparse_initializer}
    for node in graph.node:
        for name in node.input:
            if name and name not in known:
                return f"{_node_label(node)} reads {name!r}, which no graph input, initializer or earlier node produces"
        for sub in _subgraphs(node):
            why = dangling_reads(sub, frozenset(known))
            if why:
                return why
        known.update(name for name in node.output if name)
    for value in graph.output:
        if value.name not in known:
            return f"graph output {value.name!r} is produced by no node"
    return None


def _dims(value: onnx.ValueInfoProto) -> list | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


def lost_outputs(model: onnx.ModelProto, source: onnx.ModelProto) -> str | None:
    """Why a graph output of `source` is missing from `model` or changed type, or None."""
    outputs = {v.name: v for v in model.graph.output}
    for before in source.graph.output:
        after = outputs.get(before.name)
        if after is None:
            return f"graph output {before.name!r} of the input model is gone"
        was, now = before.type.tensor_type.elem_type, after.type.tensor_type.elem_type
        if was and now != was:
            return (f"graph output {before.name!r} changed type: "
                    f"{onnx.TensorProto.DataType.Name(was)} -> {onnx.TensorProto.DataType.Name(now)}")
        shape, new = _dims(before), _dims(after)
        if shape is not None and not _refines(new, shape):
            return f"graph output {before.name!r} changed shape: {shape} -> {new}"
    return None


def _refines(new: list | None, old: list) -> bool:
    """`new` is `old` or a refinement of it: same rank, every fixed dim kept, a symbolic or
    unknown dim possibly resolved (shape inference may resolve what the input left open)."""
    if new is None or len(new) != len(old):
        return False
    return all(not isinstance(o, int) or n == o for n, o in zip(new, old))


def _strict_inference(model: onnx.ModelProto) -> None:
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _failing_node(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The first node at which strict shape inference fails (binary search over graph prefixes),
    or None when every prefix passes."""
    nodes = list(model.graph.node)

    def fails(count: int) -> bool:
        prefix = onnx.ModelProto()
        prefix.CopyFrom(model)
        del prefix.graph.node[count:]
        produced = {name for node in nodes[:count] for name in node.output}
        kept = [v for v in model.graph.value_info if v.name in produced]
        del prefix.graph.value_info[:]
        prefix.graph.value_info.extend(kept)
        del prefix.graph.output[:]
        try:
            _strict_inference(prefix)
        except Exception:
            return True
        return False

    if not fails(len(nodes)):
        return None
    low, high = 0, len(nodes)  # fails(high), not fails(low) (the empty graph infers)
    while high - low > 1:
        mid = (low + high) // 2
        if fails(mid):
            high = mid
        else:
            low = mid
    return nodes[high - 1]


def check(model: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Raises `InvalidModelError` unless `model` is valid and keeps `source`'s graph outputs.

    When `source` itself fails the checker (a model onnxruntime runs but onnx rejects), only
    checks 1 and 2 apply: the pass cannot make such a model valid, and must not refuse it."""
    why = dangling_reads(model.graph) or lost_outputs(model, source)
    if why:
        raise InvalidModelError(why)
    problem = checker_failure(model)
    if problem is not None and checker_failure(source) is None:
        node = _failing_node(model)
        where = f"at {_node_label(node)}: " if node is not None else ""
        raise InvalidModelError(f"{where}{problem}")


def checker_failure(model: onnx.ModelProto) -> str | None:
    """The first line of what `onnx.checker.check_model(model, full_check=True)` (strict,
    type-checking shape inference included) objects to, or None."""
    register_schemas()
    try:
        if model.ByteSize() < PROTOBUF_LIMIT:
            onnx.checker.check_model(model, full_check=True)
        else:  # the checker takes a model over 2 GB only as a file with external data
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.onnx"
                onnx.save(model, str(path), save_as_external_data=True)
                onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError, InferenceError, or a bare RuntimeError
        return _first_line(exc)
    return None
