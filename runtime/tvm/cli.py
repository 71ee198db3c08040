"""`python -m runtime.tvm`: compile an axmoe ONNX model to a deployable library, run a library.

    python -m runtime.tvm compile MODEL.onnx --target host|aarch64|'<json>' --out LIB.so [--batch N] [--kernel auto|lut]
    python -m runtime.tvm run LIB.so --input X.npy [--output Y.npy] [--threads N]

`compile` writes LIB.so and LIB.so.json (input name, shape, dtype; target; kernel form), so
`run` needs nothing but the library. User mistakes (missing or non-ONNX file, bad target,
an op the TVM import does not lower, an input of the wrong shape, no apache-tvm installed) end
in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from runtime.tvm.config import KERNELS, MissingTVMError, require_tvm

TARGET_HELP = ("'host' (this CPU), 'aarch64' (Raspberry Pi 4 class, Cortex-A72, cross-linked with "
               "aarch64-linux-gnu-g++) or a TVM JSON target such as "
               "'{\"kind\": \"llvm\", \"mtriple\": \"aarch64-linux-gnu\", \"mcpu\": \"cortex-a76\"}'")


class UserError(Exception):
    """A mistake in the command line or its files: printed as one line, exit code 2."""


def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runtime.tvm",
        description="Compile an axmoe ONNX model (int8 QDQ, approximate ops in either lowering) with TVM "
                    "for x86 or aarch64, or run a compiled library.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{compile,run}")
    c = sub.add_parser("compile", help="build LIB.so (+ LIB.so.json) from MODEL.onnx",
                       description="Import MODEL.onnx into Relax, lower the approximate ops to TIR, compile for "
                                   "the target and write a standalone shared library with its metadata.")
    c.add_argument("model", help="ONNX model (e.g. from python -m passes.approximate)")
    c.add_argument("--target", default="host", help=TARGET_HELP + " (default: host)")
    c.add_argument("--out", required=True, help="library to write (LIB.so; LIB.so.json is written beside it)")
    c.add_argument("--batch", type=int, default=None,
                   help="fix the batch size (default: any batch, the model's symbolic dimension)")
    c.add_argument("--kernel", choices=KERNELS, default="auto",
                   help="product form of the approximate ops: auto = exact integer decomposition where the "
                        "multiplier has one (VNNI / NEON dot products), else table lookups; lut = table lookups "
                        "everywhere (default: auto)")
    r = sub.add_parser("run", help="run LIB.so on an input .npy",
                       description="Run a library built by `compile` for this machine on one batch.")
    r.add_argument("library", help="LIB.so from `python -m runtime.tvm compile` (LIB.so.json beside it)")
    r.add_argument("--input", required=True, help="input batch as .npy, shape and dtype of the model's input")
    r.add_argument("--output", default=None, help="write the first output here (.npy); default: print a summary")
    r.add_argument("--threads", type=int, default=None, help="TVM runtime threads (default: all CPUs)")
    return p


@contextlib.contextmanager
def _quiet_native_stderr():
    """TVM's C++ warnings (e.g. one per MoE gather) go to fd 2: hide them during a compile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    return p


def compile_command(args) -> int:
    from runtime.tvm import build, converters, frontend, ort_fusions
    from runtime.tvm.runner import SessionError, load_onnx_bytes, sidecar

    model_path = _existing(args.model)
    if args.batch is not None and args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    try:
        model = load_onnx_bytes(model_path)
        target = build.resolve_target(args.target)
        metadata = {**build.signature(model, args.batch), "kernel": args.kernel, "source": model_path.name}
        build.check_toolchain(target)
    except (SessionError, build.TargetError) as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # signature: not one input
        raise UserError(f"{model_path}: {exc}") from None
    start = time.perf_counter()
    print(f"compiling {model_path.name} for {build.describe_target(target)} (kernel {args.kernel}, "
          f"batch {args.batch or 'any'}) ...", file=sys.stderr, flush=True)
    try:
        with _quiet_native_stderr():
            executable = build.compile_model(model, target, batch=args.batch, kernel=args.kernel)
            compiled = time.perf_counter()
            out = build.export(executable, args.out, target, metadata)
    except (frontend.UnsupportedModelError, ort_fusions.FusionError, converters.ConversionError,
            build.TargetError) as exc:
        raise UserError(f"{model_path}: {exc}") from None
    done = time.perf_counter()
    print(f"wrote {out} and {sidecar(out).name} (compile {compiled - start:.1f} s, link {done - compiled:.1f} s)",
          file=sys.stderr)
    return 0


def run_command(args) -> int:
    from runtime.tvm.runner import Session, SessionError

    library = _existing(args.library)
    inputs = _existing(args.input)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    try:
        x = np.load(inputs, allow_pickle=False)
    except Exception:
        raise UserError(f"{inputs}: not a .npy array") from None
    try:
        sess = Session(library, threads=args.threads)
        start = time.perf_counter()
        y = sess.run(x)
    except SessionError as exc:
        raise UserError(str(exc)) from None
    elapsed = time.perf_counter() - start
    if args.output:
        np.save(args.output, y)
        print(f"wrote {args.output}: {y.dtype} {list(y.shape)} ({elapsed * 1e3:.1f} ms)", file=sys.stderr)
    else:
        print(f"output {y.dtype} {list(y.shape)} ({elapsed * 1e3:.1f} ms)")
        if y.ndim == 2:
            print("argmax per row:", " ".join(map(str, y.argmax(axis=1))))
    return 0


def main(argv=None) -> int:
    args = create_args_parser().parse_args(argv)
    try:
        require_tvm()
        return compile_command(args) if args.command == "compile" else run_command(args)
    except (UserError, MissingTVMError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
