"""Benchmark: a whole 8-bit ResNet-20 rewritten by the approximation pass, against the exact
8-bit model in onnxruntime (u8 activations, its fused QLinearConv fast path), 1 and 2
threads, batch 1 and 32, every ratio measured in one run.

    python benchmarks/whole_model.py [--model INT8.onnx] [--threads 1 2] [--batch 1 32]
        [--min-time 2] [--rounds 8] [--no-tvm]

The model is `--model` (an int8 ResNet-20 from `python -m export.to_onnx`) or, by default, a
ResNet-20 (dense, 10 classes, seeded random weights) exported and calibrated on 256
Fashion-MNIST test images here: timing does not depend on the weights' values.

Columns (label = multiplier / lowering; every one a separate onnxruntime session, same
threads; time of one batch, the fastest of many runs with the sessions taking turns):

    exact             the int8 model as exported (QDQ -> onnxruntime's QLinearConv)
    1L2L dec / lut    mul8s_1L2L, operand masks: QLinearConv on masked operands / custom op
    1KVA dec / lut    mul8s_1KVA, main product + 4 correction terms: standard integer ops
                      (ConvInteger for the corrections) / custom op (its fast path)
    mitchell lut      Mitchell's log multiplier (no structure: the general LUT kernel)
    tvm ...           the same rewritten models compiled by `runtime.tvm` (when available)

Cells: milliseconds per batch (time / exact). The general-LUT column also gets GMAC/s per
thread (MACs from the pass's report). Results: benchmarks/results/whole_model.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from runtime.bench import best_seconds, _cpu_name  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
INPUT = "input"
VARIANTS = {  # label -> (multiplier, lowering); None: the int8 model itself
    "exact": None,
    "1L2L dec": ("mul8s_1L2L", "decomposed"),
    "1L2L lut": ("mul8s_1L2L", "lut"),
    "1KVA dec": ("mul8s_1KVA", "decomposed"),
    "1KVA lut": ("mul8s_1KVA", "lut"),
    "mitchell lut": ("mitchell", "lut"),
}
TVM_VARIANTS = ("exact", "1L2L dec", "1KVA lut")


def default_model(work: Path) -> Path:
    """A seeded ResNet-20 (dense) exported to int8 and calibrated on Fashion-MNIST."""
    path = work / "resnet20.onnx"
    if path.exists():
        return path
    import torch

    import models
    from export.exporter import calibration_batches, export_model
    from models.datasets import load_dataset

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer logs advice at WARNING
    torch.manual_seed(0)
    net = models.create("resnet20", "dense", num_classes=10)
    test = load_dataset("fashion-mnist", "test", image_size=32)
    data = {**test.config(), "dataset": "fashion-mnist"}
    export_model(net, net.axmoe_config, data, path, calibration_batches(test.images, data, 256))
    return path


def rewrite(int8: Path, work: Path) -> dict[str, tuple[Path, dict]]:
    """Every variant's model file and the pass's report summary."""
    from passes.approximate import approximate

    out = {}
    for label, variant in VARIANTS.items():
        if variant is None:
            out[label] = (int8, {})
            continue
        multiplier, lowering = variant
        path = work / f"resnet20.{multiplier}.{lowering}.onnx"
        model, report = approximate(int8, {"multiplier": multiplier, "lowering": lowering})
        onnx.save(model, str(path))
        macs = sum(n.macs_per_row or 0 for n in report.nodes if n.status == "rewritten")
        out[label] = (path, {**report.summary(), "macs_per_image": macs})
    return out


def tvm_session_factory():
    """`runtime.tvm.session` when this checkout has the TVM backend, else None."""
    try:
        import runtime.tvm as tvm_backend
    except ImportError:
        return None
    return getattr(tvm_backend, "session", None)


def measure(models: dict, threads: int, batch: int, min_time: float, rounds: int, tvm_session) -> tuple[dict, dict]:
    """Fastest seconds per batch of every column, and for each TVM column the number of images
    whose output differs from onnxruntime's on the same model (0: bit-exact)."""
    import runtime.ort

    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    runs, mismatches = {}, {}
    for label, (path, _) in models.items():
        sess = runtime.ort.session(str(path), threads=threads)
        runs[label] = (lambda s: lambda: s.run(None, {INPUT: x}))(sess)
    reference = {label: run() for label, run in runs.items()}
    if tvm_session is not None:
        for label in TVM_VARIANTS:
            sess = tvm_session(str(models[label][0]), threads=threads)
            out = np.asarray(sess.run(x))
            mismatches[f"tvm {label}"] = int((out != reference[label][0]).reshape(batch, -1).any(axis=1).sum())
            runs[f"tvm {label}"] = (lambda s: lambda: s.run(x))(sess)
    return best_seconds(runs, min_time, rounds), mismatches


def write_markdown(result: dict, path: Path) -> None:
    labels = list(result["cells"][0]["seconds"])
    lines = [f"Machine: {result['machine']}. Model: {result['model']} "
             f"({result['macs_per_image'] / 1e6:.1f} M MACs per image). Command: `{result['command']}`.", "",
             "Cells: ms per batch (time / exact); last column: the general LUT kernel's GMAC/s per thread.", "",
             "| threads, batch | " + " | ".join(labels) + " | LUT GMAC/s |", "|---|" + "---|" * (len(labels) + 1)]
    for cell in result["cells"]:
        exact = cell["seconds"]["exact"]
        lines.append(f"| {cell['threads']}, {cell['batch']} | "
                     + " | ".join(f"{1e3 * s:.2f} ({s / exact:.2f}x)" for s in cell["seconds"].values())
                     + f" | {cell['lut_gmacs_per_thread']:.1f} |")
    differing = {f"{c['threads']}, {c['batch']}: {label} {n}/{c['batch']}" for c in result["cells"]
                 for label, n in c.get("tvm_images_differing", {}).items() if n}
    if differing:
        lines += ["", "Images whose TVM output differs from onnxruntime's: " + "; ".join(sorted(differing)) + "."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="int8 ResNet-20 ONNX (default: export a seeded one)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of runs per column and cell")
    parser.add_argument("--rounds", type=int, default=8, help="turns each session takes (fastest run wins)")
    parser.add_argument("--no-tvm", action="store_true", help="leave the TVM columns out")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench" / "whole_model")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    args.work.mkdir(parents=True, exist_ok=True)
    int8 = args.model or default_model(args.work)
    models = rewrite(int8, args.work)
    tvm_session = None if args.no_tvm else tvm_session_factory()
    macs = models["mitchell lut"][1]["macs_per_image"]
    import onnxruntime

    machine = (f"{_cpu_name()}, {os.cpu_count()} logical cores, onnxruntime {onnxruntime.__version__}; "
               f"load average at start {os.getloadavg()[0]:.1f}")
    print(machine, flush=True)
    cells = []
    for threads in args.threads:
        for batch in args.batch:
            seconds, mismatches = measure(models, threads, batch, args.min_time, args.rounds, tvm_session)
            exact = seconds["exact"]
            gmacs = macs * batch / seconds["mitchell lut"] / 1e9 / threads
            print(f"threads {threads}, batch {batch}: " + ", ".join(
                f"{label} {1e3 * s:.2f} ms ({s / exact:.2f}x)" for label, s in seconds.items())
                + f"; general LUT {gmacs:.1f} GMAC/s per thread"
                + "".join(f"; {label}: {n}/{batch} images differ from onnxruntime"
                          for label, n in mismatches.items() if n),
                flush=True)
            cells.append({"threads": threads, "batch": batch, "seconds": seconds, "tvm_images_differing": mismatches,
                          "lut_gmacs_per_thread": gmacs})
    machine += f", {os.getloadavg()[0]:.1f} at the end"
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine,
              "model": str(args.model) if args.model else "ResNet-20 dense, seeded random weights, "
                                                            "calibrated on 256 Fashion-MNIST images",
              "macs_per_image": macs, "reports": {label: r for label, (_, r) in models.items()},
              "command": "python benchmarks/whole_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cells": cells}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "whole_model.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.results / "whole_model.md")
    print(f"results: {args.results / 'whole_model.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
