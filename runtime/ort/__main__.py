"""`python -m runtime.ort`: run a model with the axmoe ops, or check the op library.

    python -m runtime.ort run MODEL.onnx --input X.npy [--threads N] [--isa ISA] [--path PATH] [--out Y.npy]
    python -m runtime.ort check     # every op against the numpy oracle, every kernel ISA here
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def cmd_run(args) -> int:
    import onnxruntime as ort

    from runtime.ort import KernelConfig, LibraryNotFoundError, session

    model = Path(args.model)
    if not model.is_file():
        print(f"error: {model}: no such file", file=sys.stderr)
        return 2
    try:
        kernel = KernelConfig.from_environment()
        kernel = KernelConfig(args.isa or kernel.isa, args.path or kernel.path)
    except (LibraryNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        sess = session(model, threads=args.threads, kernel=kernel)
    except LibraryNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # onnxruntime reports malformed models with its own exceptions
        print(f"error: {model}: cannot load as an ONNX model ({str(exc).splitlines()[0]})", file=sys.stderr)
        return 2
    inputs = sess.get_inputs()
    if len(args.input) != len(inputs):
        print(f"error: the model takes {len(inputs)} input(s) "
              f"({', '.join(i.name for i in inputs)}), got {len(args.input)}", file=sys.stderr)
        return 2
    feeds = {}
    for meta, path in zip(inputs, args.input):
        try:
            feeds[meta.name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
    try:
        outputs = sess.run(None, feeds)
    except ort.capi.onnxruntime_pybind11_state.Fail as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    for meta, value in zip(sess.get_outputs(), outputs):
        print(f"{meta.name}: {value.dtype} {tuple(value.shape)}")
        if value.ndim == 2 and value.shape[1] > 1 and np.issubdtype(value.dtype, np.floating):
            print(f"  argmax: {value.argmax(axis=1)[:16].tolist()}{' ...' if len(value) > 16 else ''}")
    if args.out:
        np.save(args.out, outputs[0])
        print(f"wrote {args.out}")
    return 0


def cmd_check(args) -> int:
    """Run axmoe.ApproxMul over all 65,536 operand pairs for every catalog multiplier and
    compare with the LUT (the oracle)."""
    import onnx
    from onnx import TensorProto, helper

    from modelfile.ops import DOMAIN, opset_imports, register_schemas
    from multipliers import catalog
    from runtime.ort import library_path, session

    register_schemas()
    graph = helper.make_graph(
        [helper.make_node("ApproxMul", ["a", "b", "lut"], ["y"], domain=DOMAIN)], "approx_mul",
        [helper.make_tensor_value_info("a", TensorProto.INT8, ["n"]),
         helper.make_tensor_value_info("b", TensorProto.INT8, ["n"]),
         helper.make_tensor_value_info("lut", TensorProto.INT32, [256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["n"])])
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    sess = session(model.SerializeToString())
    a, b = np.meshgrid(np.arange(-128, 128, dtype=np.int8), np.arange(-128, 128, dtype=np.int8), indexing="ij")
    print(f"library: {library_path()}")
    failures = 0
    for mult in catalog().values():
        y = sess.run(None, {"a": a.ravel(), "b": b.ravel(), "lut": mult.lut})[0]
        ok = np.array_equal(y.reshape(256, 256), mult.lut)
        failures += not ok
        print(f"  {mult.name:<12} axmoe.ApproxMul over 65536 pairs == LUT: {'yes' if ok else 'NO'}")
    return 1 if failures or _check_integer_ops() else 0


def _check_integer_ops() -> int:
    """ApproxConvInteger (3x3, stride 2, 2 groups) and ApproxMatMulInteger (broadcast batch) on
    random operands, against the numpy oracle, for every kernel ISA here and both paths."""
    from onnx import TensorProto, helper

    from modelfile.ops import DOMAIN, opset_imports
    from multipliers import catalog, get
    from multipliers.oracle import lut_conv, lut_matmul
    from runtime.ort import KernelConfig, describe_lut, kernel_variants, session

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 8, 9, 9), dtype=np.uint8)
    w = rng.integers(-128, 128, (6, 4, 3, 3), dtype=np.int8)
    a = rng.integers(-128, 128, (3, 1, 5, 40), dtype=np.int8)
    b = rng.integers(-128, 128, (2, 40, 7), dtype=np.int8)
    conv_attrs = dict(strides=[2, 2], pads=[1, 1, 1, 1], group=2)

    def model(node, inputs):
        graph = helper.make_graph([node], "check", inputs,
                                  [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
        return helper.make_model(graph, opset_imports=opset_imports(), ir_version=10).SerializeToString()

    lut_info = helper.make_tensor_value_info("lut", TensorProto.INT32, [256, 256])
    conv = model(helper.make_node("ApproxConvInteger", ["x", "w", "xzp", "", "lut"], ["y"], domain=DOMAIN,
                                  **conv_attrs),
                 [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape),
                  helper.make_tensor_value_info("w", TensorProto.INT8, w.shape),
                  helper.make_tensor_value_info("xzp", TensorProto.UINT8, []), lut_info])
    matmul = model(helper.make_node("ApproxMatMulInteger", ["a", "b", "", "", "lut"], ["y"], domain=DOMAIN),
                   [helper.make_tensor_value_info("a", TensorProto.INT8, a.shape),
                    helper.make_tensor_value_info("b", TensorProto.INT8, b.shape), lut_info])
    mults = list(catalog().values()) + [get("mitchell")]
    print(f"kernel ISAs here (best first): {', '.join(kernel_variants())}")
    failures = 0
    for isa in kernel_variants():
        for path in ("auto", "lut"):
            kernel = KernelConfig(isa, path)
            conv_sess, matmul_sess = session(conv, kernel=kernel), session(matmul, kernel=kernel)
            bad = []
            for mult in mults:
                y = conv_sess.run(None, {"x": x, "w": w, "xzp": np.array(128, np.uint8), "lut": mult.lut})[0]
                z = matmul_sess.run(None, {"a": a, "b": b, "lut": mult.lut})[0]
                if not (np.array_equal(y, lut_conv(x.astype(np.int64) - 128, w, mult.lut, **conv_attrs))
                        and np.array_equal(z, lut_matmul(a, b, mult.lut))):
                    bad.append(mult.name)
            failures += len(bad)
            print(f"  {isa:<7} path={path:<5} conv + matmul == oracle for {len(mults) - len(bad)}/{len(mults)} "
                  f"multipliers{'; wrong: ' + ', '.join(bad) if bad else ''}")
    for mult in (get("mul8s_1KVA"), get("mitchell")):
        print(f"  {mult.name}: {describe_lut(mult.lut)}")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.ort", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run MODEL.onnx on .npy inputs with the axmoe ops registered")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--input", action="append", required=True, metavar="X.npy",
                   help="one per model input, in order")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--isa", help="kernel ISA: auto or one this CPU has (default: $AXMOE_KERNEL, else auto)")
    p.add_argument("--path", help="GEMM path: auto, lut or decomposed (default: $AXMOE_PATH, else auto)")
    p.add_argument("--out", metavar="Y.npy", help="save the first output")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", help="check the op library against the multiplier LUTs")
    p.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
