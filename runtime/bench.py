"""`python -m runtime.bench`: GMAC/s of the axmoe integer ops against onnxruntime's exact int8
ops, on ResNet-20 conv layers and ViT-small-sized GEMMs, every ratio measured in one run.

    python -m runtime.bench [--threads 1 2] [--batch 1 32] [--min-time 0.3] [--rounds 5] [--markdown OUT.md]

Columns (each a single-node onnxruntime session, same threads; MACs = multiply-accumulates):
    ort exact     the exact 8-bit baseline: QLinearConv (u8 activations, zero point 128; s8
                  weights) or MatMulInteger u8 x s8 -- onnxruntime's fast paths
    ConvInteger   onnxruntime's ConvInteger on the same operands (its slow integer conv)
    exact/1L2L/1KVA  axmoe op, decomposed path (exact int8 dot products on masked operands,
                  VNNI on AVX-512): 1, 1 and 5 dot-product terms
    lut:<isa>     axmoe op, general LUT path (any 256x256 table; Mitchell's here), per kernel ISA
Ratios are time / (ort exact time) of the same layer, threads and batch. Times are the fastest
of many runs, the sessions of a layer taking turns, so a shared machine disturbs them alike.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import multipliers
import runtime.ort
from modelfile.ops import APPROX_CONV_INTEGER, APPROX_MATMUL_INTEGER, DOMAIN, opset_imports


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str           # "conv" (3x3, pad 1) or "gemm"
    c: int              # conv: in = out channels; gemm: K
    size: int           # conv: H = W; gemm: rows (tokens) per batch item
    n: int = 0          # gemm: N

    def macs(self, batch: int) -> int:
        if self.kind == "conv":
            return batch * self.c * self.c * 9 * self.size * self.size
        return batch * self.size * self.c * self.n


LAYERS = [
    Layer("conv 16ch 32x32", "conv", 16, 32),
    Layer("conv 32ch 16x16", "conv", 32, 16),
    Layer("conv 64ch 8x8", "conv", 64, 8),
    Layer("gemm 65x384x384", "gemm", 384, 65, 384),
    Layer("gemm 65x384x1536", "gemm", 384, 65, 1536),
]


def _model(nodes, inputs, outputs, inits) -> bytes:
    graph = helper.make_graph(nodes, "bench", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=10).SerializeToString()


def _weights(layer: Layer) -> np.ndarray:
    rng = np.random.default_rng(1)
    shape = (layer.c, layer.c, 3, 3) if layer.kind == "conv" else (layer.c, layer.n)
    return rng.integers(-127, 128, shape, dtype=np.int8)


def baseline_model(layer: Layer, op: str) -> bytes:
    w = _weights(layer)
    x_info = helper.make_tensor_value_info("x", TensorProto.UINT8, None)
    if op == "QLinearConv":
        inits = {"w": w, "xs": np.array(0.02, np.float32), "xzp": np.array(128, np.uint8),
                 "ws": np.array(0.01, np.float32), "wzp": np.array(0, np.int8),
                 "ys": np.array(0.5, np.float32), "yzp": np.array(128, np.uint8)}
        node = helper.make_node(op, ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp"], ["y"], pads=[1, 1, 1, 1])
        out = TensorProto.UINT8
    else:
        inits = {"w": w, "xzp": np.array(128, np.uint8), "wzp": np.array(0, np.int8)}
        attrs = {"pads": [1, 1, 1, 1]} if op == "ConvInteger" else {}
        node = helper.make_node(op, ["x", "w", "xzp", "wzp"], ["y"], **attrs)
        out = TensorProto.INT32
    return _model([node], [x_info], [helper.make_tensor_value_info("y", out, None)], inits)


def axmoe_model(layer: Layer, lut: np.ndarray) -> bytes:
    op = APPROX_CONV_INTEGER if layer.kind == "conv" else APPROX_MATMUL_INTEGER
    attrs = {"pads": [1, 1, 1, 1]} if layer.kind == "conv" else {}
    node = helper.make_node(op, ["x", "w", "xzp", "", "lut"], ["y"], domain=DOMAIN, **attrs)
    inits = {"w": _weights(layer), "xzp": np.array(128, np.uint8), "lut": lut}
    return _model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                  [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)


def best_seconds(runs: dict[str, Callable[[], object]], min_time: float, rounds: int = 5) -> dict[str, float]:
    """Fastest single call of each zero-argument function. They take turns, a few calls each,
    over several rounds, so all columns see the same machine (this one is shared with other
    work); two warm-up calls each first."""
    for run in runs.values():
        for _ in range(2):
            run()
    best = {label: float("inf") for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            start = time.perf_counter()
            calls = 0
            while calls < 2 or time.perf_counter() - start < min_time / rounds:
                t = time.perf_counter()
                run()
                best[label] = min(best[label], time.perf_counter() - t)
                calls += 1
    return best


def columns(layer: Layer) -> list[tuple[str, dict]]:
    cols = [("ort exact", dict(baseline="QLinearConv" if layer.kind == "conv" else "MatMulInteger")),
            ("ConvInteger", dict(baseline="ConvInteger") if layer.kind == "conv" else {})]
    for label, name in (("exact", "mul8s_1KV6"), ("1L2L", "mul8s_1L2L"), ("1KVA", "mul8s_1KVA")):
        cols.append((label, dict(lut=name, kernel=runtime.ort.KernelConfig())))
    for isa in runtime.ort.kernel_variants():
        cols.append((f"lut:{isa}", dict(lut="mitchell", kernel=runtime.ort.KernelConfig(isa, "lut"))))
    return cols


def measure(layer: Layer, threads: int, batch: int, min_time: float, rounds: int = 5) -> dict[str, float]:
    shape = (batch, layer.c, layer.size, layer.size) if layer.kind == "conv" else (batch, layer.size, layer.c)
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    sessions = {}
    for label, spec in columns(layer):
        if not spec:
            continue
        if "baseline" in spec:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            sessions[label] = ort.InferenceSession(baseline_model(layer, spec["baseline"]), options,
                                                   providers=["CPUExecutionProvider"])
        else:
            sessions[label] = runtime.ort.session(axmoe_model(layer, multipliers.get(spec["lut"]).lut), threads=threads,
                                                  kernel=spec["kernel"])
    best = best_seconds({label: functools.partial(sess.run, None, {"x": x}) for label, sess in sessions.items()},
                        min_time, rounds)
    return {label: best.get(label, float("nan")) for label, _ in columns(layer)}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--layers", nargs="+", choices=[l.name for l in LAYERS], metavar="LAYER",
                        help=f"subset of: {', '.join(repr(l.name) for l in LAYERS)}")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds of runs per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="turns each session takes (fastest run wins)")
    parser.add_argument("--markdown", metavar="OUT.md", help="also write the table as markdown")
    args = parser.parse_args(argv)
    layers = [l for l in LAYERS if not args.layers or l.name in args.layers]
    machine = (f"{_cpu_name()}, {os.cpu_count()} logical cores, onnxruntime {ort.__version__}, "
               f"kernel ISAs {', '.join(runtime.ort.kernel_variants())}; load average at start "
               f"{os.getloadavg()[0]:.1f}")
    print(machine)
    lines = [machine]
    for threads in args.threads:
        for batch in args.batch:
            title = f"threads {threads}, batch {batch}: GMAC/s (time / ort exact)"
            print(f"\n{title}")
            lines += [f"\n{title}\n"]
            header = None
            for layer in layers:
                result = measure(layer, threads, batch, args.min_time, args.rounds)
                base = result["ort exact"]
                if header is None:
                    header = list(result)
                    print(f"{'layer':<18}" + "".join(f"{h:>17}" for h in header))
                    lines += ["| layer | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
                cells = [(layer.macs(batch) / t / 1e9, t / base) if t == t else None for t in result.values()]
                print(f"{layer.name:<18}" + "".join(f" {c[0]:7.1f} ({c[1]:5.2f}x)" if c else f"{'-':>17}"
                                                     for c in cells), flush=True)
                lines.append(f"| {layer.name} | " + " | ".join(f"{c[0]:.1f} ({c[1]:.2f}x)" if c else "-"
                                                           for c in cells) + " |")
    lines.append(f"\nload average at end {os.getloadavg()[0]:.1f}")
    print(lines[-1].strip())
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"\nwrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
