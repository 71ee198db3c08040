"""Error compensation without retraining: tune the integers an int8 model already has so the
systematic part of each approximate multiplier's error cancels, at zero runtime cost (modes
none | bias | weights | weights+bias), or at one extra reduction per output pixel (linear).

    stats = calibration.collect(int8, images)                  # exact int8 model, onnxruntime
    model, report = compensate(int8, {node: multiplier, ...}, stats, "weights+bias")
    approximate(model, plan)                                    # the pass, as usual

It is a transform of the int8 model applied before the approximation pass, given the
multiplier each node will get (`assignment`, node name -> `Multiplier` whose LUT is indexed
`lut[a + 128, w + 128]` with a the activation; a plan with operand_order "wx" passes the
transposed table). Only weights and biases change, so every lowering and runtime (custom
op, decomposed, TVM, the retraining emulation) computes the same integers as before.

With h = the histogram of the signed activation a under one weight (per input channel and
kernel tap, `passes.calibration`), and M the multiplier:

- `weights`: each weight w becomes w' = argmin_{w' in [-127, 127]} E_h[(M(a, w') - a w)^2],
  exact from the LUT (ties: w itself, then the closest to w, then the smaller);
- `bias`: per output channel o, c_o = sum_k E_h[M(a, w'_ok) - a w_ok] (w' = w without weight
  tuning) is rounded (half to even) and subtracted from the int32 bias;
- `weights+bias`: both, the bias computed after tuning;
- `linear` (control variate): weights+bias plus a term linear in S = sum_k a_k, the sum of the
  activations of one output's receptive field. Per output channel o the residual error after
  tuning, e_o = approx_acc - exact_acc of one output pixel, is fitted by least squares
  e_o ~ beta_o + gamma_o S. gamma_o = Cov(S, e_o) / Var(S) over a uniform sample of
  `calibration.LINEAR_PIXELS` receptive fields per op (`collect(..., pixels=P)`, the exact
  e of each from the LUT); the means E[e_o] and E[S] are exact, from the histograms, so the
  intercept is beta_o = E[e_o] - gamma_o E[S] (with gamma = 0 this is the bias mode's
  correction). The rewrite adds t_o = floor((g_o S + 2^(F-1)) / 2^F), g_o = round(-gamma_o 2^F),
  F = `modelfile.ops.LINEAR_FRACTION_BITS`, in every lowering (the custom op's `linear` input,
  or standard ops: `passes.lowering.add_linear`), and the bias takes
  c_o = round(E[e_o] + g_o E[S] / 2^F), so bias and term together are that fit. An op without
  a bias input (QLinearMatMul) fits e_o ~ gamma_o S through the origin. g is not an integer
  the int8 model has: it is recorded per node (`linear` in the `axmoe.compensation` metadata,
  `linear_terms(model)` reads it back, keyed by the original node name) and the approximation
  pass applies it; the extra work is one reduction of K additions per output pixel and group
  (1/M of the op's MACs, no multiplies at exact-adder cost), which the pass reports per node
  as `linear_additions`.

Where the bias goes, by source form (the pass reads it back as the op's bias):

    QDQ Conv / Gemm with DQ(int32 b)        b - c in a new initializer of that DQ
    QDQ Conv / Gemm without a bias          a new DQ(int32 -c, s_x * s_w, zp 0) bias input
    QDQ MatMul, or a float bias             Add(y, DQ(int32 -c, s_x * s_w)) after the op
                                            (the op has no integer bias: the correction is
                                            applied to its float output, c_o * s_x * s_w)
    QLinearConv                             its int32 bias input (added when absent)
    QLinearMatMul                           none: the op has no bias (weights only; reported)
    ConvInteger / MatMulInteger             an int32 Add after the op

With the exact multiplier (or mode "none") nothing changes (g = 0: no term is recorded) and the model is returned as it
was, byte for byte. Otherwise the model's `axmoe.compensation` metadata records the mode, the
calibration set and each node's corrections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

import multipliers
from modelfile import metadata
from multipliers import Multiplier
from modelfile.ops import LINEAR_FRACTION_BITS
from passes.calibration import ActivationStats, CompensationError
from passes.candidates import IntegerOp
from passes.rules import find_candidates
from passes.rules._operands import through_identity

MODES = ("none", "bias", "weights", "weights+bias", "linear")
LINEAR_LIMIT = 1 << 31  # |g| the kernels accept (runtime/ort/csrc/cpu/op_util.h)
W_MIN, W_MAX = -127, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
_OPERANDS = np.arange(-128, 128, dtype=np.int64)
_CHUNK = 4096  # (histogram, weight) pairs per vectorised argmin

__all__ = ["MODES", "CompensationError", "CompensationReport", "ErrorModel", "NodeCompensation", "compensate",
           "linear_fit", "linear_terms", "parse_mode", "uniform_assignment"]


def parse_mode(mode: str) -> tuple[bool, bool]:
    """(tune weights, correct bias) of a mode name (linear: both, plus the linear term)."""
    if mode not in MODES:
        raise CompensationError(f"unknown compensation mode {mode!r} (valid: {', '.join(MODES)})")
    if mode == "linear":
        return True, True
    return "weights" in mode, "bias" in mode


# ------------------------------------------------------------------------------ the maths
class ErrorModel:
    """Exact moments of one multiplier's products under a set of activation histograms.

    hist (H, 256) counts; for histogram h and weight value v (columns, index v + 128):

        t1[h, v] = sum_a h(a) M(a, v)       s1[h, v] = sum_a h(a) M(a, v)^2
        s2[h, v] = sum_a h(a) a M(a, v)     s3[h] = sum_a h(a) a^2,  t0[h] = sum_a h(a) a

    so E_h[(M(a, v) - a w)^2] = (s1 - 2 w s2 + w^2 s3) / n_h and E_h[M(a, v) - a w] =
    (t1 - w t0) / n_h, all in int64 (exact for up to ~2^30 samples per histogram).
    """

    def __init__(self, lut: np.ndarray, hist: np.ndarray):
        table = np.asarray(lut, dtype=np.int64)
        hist = np.asarray(hist, dtype=np.int64)
        self.count = hist.sum(axis=1)
        self.t1 = hist @ table
        self.s1 = hist @ (table * table)
        self.s2 = (hist * _OPERANDS) @ table
        self.s3 = hist @ (_OPERANDS * _OPERANDS)
        self.t0 = hist @ _OPERANDS

    def tune(self, index: np.ndarray, w: np.ndarray) -> np.ndarray:
        """w' for each weight w under histogram index[i] (module docstring: argmin, ties)."""
        index, w = np.asarray(index, np.int64).ravel(), np.asarray(w, np.int64).ravel()
        pairs, inverse = np.unique(index * 256 + (w + 128), return_inverse=True)
        best = np.empty(pairs.size, np.int64)
        candidates = np.arange(W_MIN, W_MAX + 1, dtype=np.int64)
        columns = candidates + 128
        for start in range(0, pairs.size, _CHUNK):
            chunk = pairs[start:start + _CHUNK]
            h, v = chunk // 256, chunk % 256 - 128
            cost = (self.s1[h][:, columns] - 2 * v[:, None] * self.s2[h][:, columns]
                    + (v * v * self.s3[h])[:, None])
            tied = cost == cost.min(axis=1, keepdims=True)
            distance = np.abs(candidates[None, :] - v[:, None]) * 2 + (candidates[None, :] > v[:, None])
            best[start:start + chunk.size] = candidates[np.argmin(np.where(tied, distance, 1 << 20), axis=1)]
        return best[inverse]

    def error_sums(self, index: np.ndarray, w: np.ndarray, w_new: np.ndarray) -> np.ndarray:
        """n_h * E_h[M(a, w_new) - a w] per weight (int64; divide by the count for the mean)."""
        index = np.asarray(index, np.int64).ravel()
        w, w_new = np.asarray(w, np.int64).ravel(), np.asarray(w_new, np.int64).ravel()
        return self.t1[index, w_new + 128] - w * self.t0[index]

    def squared_error_sums(self, index: np.ndarray, w: np.ndarray, w_new: np.ndarray) -> np.ndarray:
        """n_h * E_h[(M(a, w_new) - a w)^2] per weight."""
        index = np.asarray(index, np.int64).ravel()
        w, w_new = np.asarray(w, np.int64).ravel(), np.asarray(w_new, np.int64).ravel()
        return self.s1[index, w_new + 128] - 2 * w * self.s2[index, w_new + 128] + w * w * self.s3[index]


def weight_layout(op: IntegerOp, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(histogram index into hist.reshape(C * taps, 256), output channel) of every element of
    `op.weight`, in its order: conv (M, C/g, *k) reads input channel g * C/g + c at tap t;
    matmul (K, N) reads K index k."""
    w = op.weight
    if op.kind == "conv":
        m, cg = w.shape[:2]
        taps = int(np.prod(w.shape[2:]))
        group = int(op.attributes.get("group", 1))
        if cg * group != channels:
            raise CompensationError(f"{op.name}: statistics for {channels} input channels, the weight reads "
                                    f"{cg * group}")
        o = np.arange(m)[:, None, None]
        c = (o // (m // group)) * cg + np.arange(cg)[None, :, None]
        index = c * taps + np.arange(taps)[None, None, :]
        full = (m, cg, taps)
        return np.broadcast_to(index, full).reshape(w.shape), np.broadcast_to(o, full).reshape(w.shape)
    k, n = w.shape
    if k != channels:
        raise CompensationError(f"{op.name}: statistics for {channels} input channels, the weight reads {k}")
    return np.broadcast_to(np.arange(k)[:, None], (k, n)), np.broadcast_to(np.arange(n)[None, :], (k, n))


def corrections(op: IntegerOp, lut: np.ndarray, hist: np.ndarray, tune: bool, bias: bool,
                patches: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray | None]:
    """(tuned int8 weight in op.weight's layout, int64 bias correction per output channel
    (zeros unless `bias`), error summary, int64 linear coefficients g (None unless `patches`,
    the sampled receptive fields of the linear mode, are given)) for one op under histogram
    `hist` (C, taps, 256)."""
    channels, taps = hist.shape[:2]
    model = ErrorModel(lut, hist.reshape(channels * taps, 256))
    index, out = weight_layout(op, channels)
    w = op.weight.astype(np.int64)
    w_new = model.tune(index, w).reshape(w.shape) if tune else w
    samples = int(model.count[0])

    def per_output(errors: np.ndarray) -> np.ndarray:
        total = np.zeros(op.out_channels, np.int64)
        np.add.at(total, out.ravel(), errors)
        return total

    before = per_output(model.error_sums(index, w, w)) / samples
    after = per_output(model.error_sums(index, w, w_new)) / samples
    correction = np.rint(after).astype(np.int64) if bias else np.zeros(op.out_channels, np.int64)
    summary = {"mean_abs_bias_before": float(np.abs(before).mean()),
               "mean_abs_bias_after": float(np.abs(after - correction).mean()),
               "squared_error_before": float(model.squared_error_sums(index, w, w).sum() / samples),
               "squared_error_after": float(model.squared_error_sums(index, w, w_new).sum() / samples)}
    g = None
    if patches is not None:
        errors, sums = patch_errors(op, lut, w, w_new, patches)
        g, fitted = linear_fit(errors, sums, after, _mean_sums(op, model, channels, taps), _has_bias_site(op))
        if _has_bias_site(op):
            correction = fitted
        # residual output error on the sample: weights+bias alone vs with the linear term
        plain = errors - np.rint(after).astype(np.int64)
        term = np.floor_divide(sums * g + (1 << (LINEAR_FRACTION_BITS - 1)), 1 << LINEAR_FRACTION_BITS)
        summary.update({"linear_pixels": int(patches.shape[0]),
                        "output_mse_bias": float((plain.astype(np.float64) ** 2).mean()),
                        "output_mse_linear": float(((errors - correction + term).astype(np.float64) ** 2).mean()),
                        "mean_abs_bias_after": float(np.abs(after + g * _mean_sums(op, model, channels, taps)
                                                            / (1 << LINEAR_FRACTION_BITS) - correction).mean())})
    return w_new.astype(np.int8), correction, summary, g


def patch_errors(op: IntegerOp, lut: np.ndarray, w: np.ndarray, w_new: np.ndarray, patches: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(e (P, M) = sum_k M(a_k, w'_ok) - a_k w_ok, S (P, M) = sum_k a_k over output o's group) of
    sampled receptive fields `patches` int8 (P, C, taps), in int64."""
    table = np.asarray(lut, np.int64)
    p = patches.shape[0]
    m = op.out_channels
    if op.kind == "conv":
        group = int(op.attributes.get("group", 1))
        cg = op.weight.shape[1]
        w2, wn2 = w.reshape(m, -1).astype(np.int64), w_new.reshape(m, -1).astype(np.int64)
    else:
        group, cg = 1, op.weight.shape[0]
        w2, wn2 = w.T.astype(np.int64), w_new.T.astype(np.int64)
    mg = m // group
    errors, sums = np.zeros((p, m), np.int64), np.zeros((p, m), np.int64)
    for gr in range(group):
        a = patches[:, gr * cg:(gr + 1) * cg, :].reshape(p, -1).astype(np.int64)  # (P, K): order c * taps + t
        rows = slice(gr * mg, (gr + 1) * mg)
        approx = np.zeros((p, mg), np.int64)
        for k in range(a.shape[1]):
            approx += table[a[:, k] + 128][:, wn2[rows, k] + 128]
        errors[:, rows] = approx - a @ w2[rows].T
        sums[:, rows] = a.sum(axis=1, keepdims=True)
    return errors, sums


def linear_fit(errors: np.ndarray, sums: np.ndarray, mean_error: np.ndarray, mean_sum: np.ndarray,
               intercept: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(g int64 [M], bias correction c int64 [M]) of the least-squares fit e_o ~ beta_o + gamma_o S
    (module docstring): gamma from the sampled (S, e) (P, M), means exact; without `intercept`
    e_o ~ gamma_o S through the origin and c = 0."""
    s, e = sums.astype(np.float64), errors.astype(np.float64)
    if intercept:
        ds, de = s - s.mean(axis=0), e - e.mean(axis=0)
        num, den = (ds * de).sum(axis=0), (ds * ds).sum(axis=0)
    else:
        num, den = (s * e).sum(axis=0), (s * s).sum(axis=0)
    gamma = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    g = np.clip(np.rint(-gamma * (1 << LINEAR_FRACTION_BITS)), -LINEAR_LIMIT + 1, LINEAR_LIMIT - 1).astype(np.int64)
    if not intercept:
        return g, np.zeros_like(g)
    c = np.rint(mean_error + g * mean_sum / (1 << LINEAR_FRACTION_BITS)).astype(np.int64)
    return g, c


def linear_terms(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Original node name -> int64 g [M] of every op with a linear compensation term, from the
    model's `axmoe.compensation` metadata (a compensated int8 model or its rewrite); {} if none.
    This is the mapping `export.emulation.QDQEmulation(..., linear_terms=...)` takes."""
    record = metadata.get(model, metadata.COMPENSATION, None) or {}
    return {n["node"]: np.asarray(n["linear"], np.int64) for n in record.get("nodes", []) if n.get("linear")}


def _mean_sums(op: IntegerOp, model: ErrorModel, channels: int, taps: int) -> np.ndarray:
    """Exact E[S] per output channel: sum over its group's (channel, tap) of E[a] (histograms)."""
    mean_a = (model.t0 / model.count[0]).reshape(channels, taps).sum(axis=1)  # per input channel
    if op.kind == "matmul":
        return np.full(op.out_channels, mean_a.sum())
    group = int(op.attributes.get("group", 1))
    per_group = mean_a.reshape(group, -1).sum(axis=1)
    return np.repeat(per_group, op.out_channels // group)


def _has_bias_site(op: IntegerOp) -> bool:
    return not (op.form == "qlinear" and op.node.op_type == "QLinearMatMul")


# ------------------------------------------------------------------------------ report
@dataclass
class NodeCompensation:
    node: str
    status: str  # compensated | unchanged | exact | skipped
    multiplier: str | None = None
    mode: str | None = None  # the node's mode, where it is not the report's
    reason: str = ""
    weights_changed: int = 0
    bias: list[int] | None = None  # c_o subtracted from the int32 bias, per output channel
    bias_site: str | None = None  # where the correction went (module docstring table)
    linear: list[int] | None = None  # g_o of the linear term (units of 2^-LINEAR_FRACTION_BITS), linear mode
    errors: dict = field(default_factory=dict)  # mean |c_o| and sum of E[e^2] before / after

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", {})}


@dataclass
class CompensationReport:
    mode: str
    calibration: dict = field(default_factory=dict)
    nodes: list[NodeCompensation] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(n.status == "compensated" for n in self.nodes)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "calibration": self.calibration, "nodes": [n.to_dict() for n in self.nodes]}


# ------------------------------------------------------------------------------ graph edits
class _Editor:
    def __init__(self, graph: ir.Graph):
        self.graph = graph

    def const(self, array: np.ndarray, base: str) -> ir.Value:
        name, i = f"{base}_compensated", 1
        while name in self.graph.initializers:
            i += 1
            name = f"{base}_compensated_{i}"
        tensor = ir.tensor(np.array(array, order="C"), name=name)
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                         const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def node_after(self, anchor: ir.Node, op_type: str, inputs, attributes=None, name="") -> ir.Value:
        node = ir.node(op_type, inputs, attributes or {}, name=name)
        node.outputs[0].name = name + "_out"
        self.graph.insert_after(anchor, [node])
        return node.outputs[0]

    def add_after(self, op: IntegerOp, addend_nodes: list[tuple[str, list, dict]], base: str) -> None:
        """y -> Add(y, addend) for every consumer of the op's output; addend built by the
        (op_type, inputs, attributes) chain (the last one's output is added)."""
        node, old = op.node, op.node.outputs[0]
        if not node.name:  # the op is known by its output's name, which may move to the Add below
            node.name = old.name
        uses = [(u.node, u.idx) if hasattr(u, "node") else (u[0], u[1]) for u in old.uses()]
        anchor, value = node, None
        for i, (op_type, inputs, attributes) in enumerate(addend_nodes):
            value = self.node_after(anchor, op_type, inputs, attributes, name=f"{base}/compensation_{i}")
            anchor = value.producer()
        total = self.node_after(anchor, "Add", [old, value], name=f"{base}/compensation_add")
        for user, idx in uses:
            user.replace_input_with(idx, total)
        if old.is_graph_output():
            outputs = self.graph.outputs
            position = list(outputs).index(old)
            outputs[position] = total
            name = old.name
            old.name = name + "_uncompensated"
            total.name = name


def _weight_site(op: IntegerOp) -> tuple[ir.Node, int] | None:
    """(node, input index) that reads the op's int8 weight constant, None when it is shared."""
    node = op.node
    if op.form == "qdq":
        dq = through_identity(node.inputs[1])
        if len(list(dq.outputs[0].uses())) != 1:
            return None
        return dq, 0
    return node, 3 if op.form == "qlinear" else 1


def _stored_shape(value: ir.Value, fallback: tuple) -> tuple:
    producer = through_identity(value)
    tensor = value.const_value
    if tensor is None and producer is not None and producer.op_type == "DequantizeLinear":
        tensor = producer.inputs[0].const_value
    return tuple(tensor.shape) if tensor is not None else fallback


def _product_scale(op: IntegerOp) -> np.ndarray:
    w_scale = np.broadcast_to(op.w_scale, (op.out_channels,)).astype(np.float32)
    return (np.float32(op.x_scale) * w_scale).astype(np.float32)


def _channel_shape(op: IntegerOp) -> tuple:
    if op.kind == "conv":
        return (op.out_channels,) + (1,) * (op.weight.ndim - 2)
    return (op.out_channels,)


def _checked_bias(op: IntegerOp, bias: np.ndarray) -> np.ndarray:
    if bias.min(initial=0) < INT32_MIN or bias.max(initial=0) > INT32_MAX:
        raise CompensationError(f"{op.name}: the compensated bias leaves the int32 range")
    return bias.astype(np.int32)


def _apply_bias(editor: _Editor, op: IntegerOp, correction: np.ndarray) -> str | None:
    """Subtracts `correction` from the op's bias; where it went, or None when it cannot."""
    node, base = op.node, op.name
    if op.form == "qdq":
        if op.bias is not None:
            dq_b = through_identity(node.inputs[2])
            shape = _stored_shape(dq_b.inputs[0], op.bias.shape)
            new = _checked_bias(op, op.bias.astype(np.int64) - correction).reshape(shape)
            dq_b.replace_input_with(0, editor.const(new, dq_b.inputs[0].name or f"{base}/bias"))
            return "bias initializer"
        scale = _product_scale(op)
        per_channel = np.unique(scale).size > 1 or np.asarray(op.w_scale).size > 1
        scale_value = editor.const(scale if per_channel else scale[:1].reshape(()), f"{base}/bias_scale")
        attributes = {"axis": 0} if per_channel else {}
        if op.float_bias is None and len(node.inputs) == 2 and node.op_type in ("Conv", "Gemm"):
            b = editor.const(_checked_bias(op, -correction), f"{base}/bias")
            dq = ir.node("DequantizeLinear", [b, scale_value], attributes, name=f"{base}/bias_dequantize")
            dq.outputs[0].name = dq.name + "_out"
            editor.graph.insert_before(node, [dq])
            node.resize_inputs(3)
            node.replace_input_with(2, dq.outputs[0])
            return "new bias input"
        b = editor.const(_checked_bias(op, -correction).reshape(_channel_shape(op)), f"{base}/bias")
        editor.add_after(op, [("DequantizeLinear", [b, scale_value], attributes)], base)
        return "float Add"
    if op.form == "qlinear":
        index = {"QLinearConv": 8, "QGemm": 6}.get(node.op_type)  # QLinearMatMul has no bias input
        if index is None:
            return None
        old = op.bias if op.bias is not None else np.zeros(op.out_channels, np.int32)
        new = _checked_bias(op, old.astype(np.int64) - correction)
        if len(node.inputs) <= index:
            node.resize_inputs(index + 1)
        node.replace_input_with(index, editor.const(new, f"{base}/bias"))
        return "bias input"
    b = editor.const(_checked_bias(op, -correction).reshape(_channel_shape(op)), f"{base}/bias")
    editor.add_after(op, [("Identity", [b], {})], base)
    return "int32 Add"


def _as_multiplier(value) -> Multiplier:
    if isinstance(value, Multiplier):
        return value
    return multipliers.exact() if value == "exact" else multipliers.get(value)


def uniform_assignment(model: onnx.ModelProto, multiplier: Multiplier | str) -> dict[str, Multiplier]:
    """Every candidate op of `model` -> `multiplier` (a uniform plan)."""
    mult = _as_multiplier(multiplier)
    graph = ir.from_proto(model).graph
    return {c.name: mult for _, c in find_candidates(graph) if isinstance(c, IntegerOp)}


def compensate(model: onnx.ModelProto, assignment: dict, stats: ActivationStats | None, mode: str,
               calibration: dict | None = None, modes: dict[str, str] | None = None
               ) -> tuple[onnx.ModelProto, CompensationReport]:
    """The compensated int8 model and the report (module docstring).

    assignment: node name -> Multiplier (or a name `multipliers.get` resolves); nodes it does
    not name stay as they are. stats: from `passes.calibration.collect` on this model (None
    only when nothing is to be compensated). modes: node name -> mode for the nodes whose
    mode is not `mode` (a plan's overrides).
    """
    modes = dict(modes or {})
    for node_mode in (mode, *modes.values()):
        parse_mode(node_mode)
    source = calibration if calibration is not None else (stats.source if stats is not None else {})
    report = CompensationReport(mode, dict(source))
    if all(modes.get(name, mode) == "none" for name in assignment):
        return model, report
    ir_model = ir.from_proto(model)
    editor = _Editor(ir_model.graph)
    for _, op in find_candidates(ir_model.graph):
        if not isinstance(op, IntegerOp) or op.name not in assignment:
            continue
        mult = _as_multiplier(assignment[op.name])
        node_mode = modes.get(op.name, mode)
        tune, bias = parse_mode(node_mode)
        entry = NodeCompensation(op.name, "unchanged", multiplier=mult.name,
                                 mode=node_mode if node_mode != mode else None)
        report.nodes.append(entry)
        if mult.is_exact:
            entry.status, entry.reason = "exact", "exact multiplier: nothing to compensate"
            continue
        if node_mode == "none":
            entry.reason = "mode none"
            continue
        if stats is None or op.name not in stats:
            raise CompensationError(f"no activation statistics for {op.name} (collected on another model?)")
        node_stats = stats[op.name]
        if node_stats.rows == 0 or node_stats.samples == 0:
            entry.status, entry.reason = "skipped", "no calibration rows reached it"
            continue
        site = _weight_site(op) if tune else None
        if tune and site is None:
            entry.reason = "weight shared with other nodes: not tuned"
        patches = None
        if node_mode == "linear":
            patches = node_stats.patches
            if patches is None or patches.shape[0] == 0:
                raise CompensationError(f"linear compensation of {op.name} needs sampled receptive fields: collect "
                                        f"the statistics with passes.calibration.collect(..., pixels=N)")
        new_weight, correction, entry.errors, g = corrections(op, mult.lut, node_stats.hist,
                                                              tune and site is not None, bias, patches)
        changed = int(np.count_nonzero(new_weight != op.weight))
        if changed:
            consumer, index = site
            stored = new_weight.T if op.node.op_type in ("Gemm", "QGemm") and _transposed(op.node) else new_weight
            old_name = consumer.inputs[index].name or f"{op.name}/weight"
            consumer.replace_input_with(index, editor.const(np.ascontiguousarray(stored), old_name))
            entry.weights_changed = changed
        if bias and np.any(correction):
            entry.bias_site = _apply_bias(editor, op, correction)
            if entry.bias_site is None:
                entry.reason = f"{op.node.op_type} has no bias input: bias correction not applied"
            else:
                entry.bias = correction.astype(int).tolist()
        if g is not None and np.any(g):
            entry.linear = g.astype(int).tolist()
        if changed or entry.bias_site is not None or entry.linear is not None:
            entry.status = "compensated"
    if not report.changed:
        return model, report
    out = ir.to_proto(ir_model)
    out.ir_version = model.ir_version
    metadata.write(out, {metadata.COMPENSATION: report.to_dict()})
    return out, report


def _transposed(node: ir.Node) -> bool:
    attribute = node.attributes.get("transB")
    return bool(attribute.value) if attribute is not None else False
