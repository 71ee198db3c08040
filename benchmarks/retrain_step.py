"""Benchmark: one approximate-aware retraining step (forward + backward) of ResNet-20.

    .venv/bin/python benchmarks/retrain_step.py [--batch 64] [--threads 2] [--repeats 5]

Emulations of the same int8 ResNet-20 (Fashion-MNIST-calibrated, BN folded) and the plain float
training step of that ResNet-20, timed round-robin in one run on the same machine, same batch and
threads, reported as ratios to the exact fake-quant step and to the plain fp32 step:

    fp32             the float model in train mode, no quantization (what retraining adds to)
    exact            QDQ emulation, exact products (the fake-quant baseline)
    <mask mult>      decomposed: one conv on masked operands
    <pp mult>        decomposed: main conv with gradient + correction convs without
    <pp mult> (lut)  LUT gather (im2col + table lookup), straight-through gradient
    mitchell         no decomposition: LUT gather

Writes benchmarks/results/retrain_step.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
import multipliers  # noqa: E402
from export.emulation import QDQEmulation  # noqa: E402
from export.exporter import calibration_batches, export_model  # noqa: E402
from export.fp32 import fold_batchnorm  # noqa: E402
from models.datasets import load_dataset  # noqa: E402

FP32 = "fp32"
CASES = [("exact", None, "auto"), ("mul8s_1L2L", "mul8s_1L2L", "auto"), ("mul8s_1KVM", "mul8s_1KVM", "auto"),
         ("mul8s_1KV8", "mul8s_1KV8", "auto"), ("mul8s_1KVA", "mul8s_1KVA", "auto"),
         ("mul8s_1KVA (lut)", "mul8s_1KVA", "lut"), ("mitchell", "mitchell", "auto")]


def timed_step(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one forward + backward pass of `module` on (x, y)."""
    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    F.cross_entropy(module(x), y).backward()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "retrain_step"))
    args = p.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = models.create("resnet20", "dense", num_classes=10).eval()
    train = load_dataset("fashion-mnist", "train", limit=2048)
    data = train.config()
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, model.axmoe_config, data, Path(tmp) / "m.onnx",
                     calibration_batches=calibration_batches(train.images, data, 256))
        import onnx

        int8 = onnx.load(str(Path(tmp) / "m.onnx"))
    weights = {k: v.detach().numpy() for k, v in fold_batchnorm(model).state_dict().items()}
    fp32 = copy.deepcopy(model).train()
    convs = [n.name for n in int8.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    from models.datasets import preprocess

    x = preprocess(train.images[:args.batch], data)
    y = train.labels[:args.batch]
    steps = {FP32: fp32}
    for label, name, method in CASES:
        mults = {n: multipliers.get(name) for n in convs} if name else {}
        steps[label] = QDQEmulation(int8, weights, multipliers=mults, method=method)
    times = {label: [] for label in steps}
    for _ in range(args.repeats + 1):  # first round warms up
        for label, module in steps.items():
            times[label].append(timed_step(module, x, y))
    median = {label: statistics.median(t[1:]) for label, t in times.items()}
    paths = {FP32: "float, no quantization"}
    for label, name, method in CASES:
        dec = multipliers.get(name).decomposition if name else None
        paths[label] = "exact" if not name else (
            "lut" if method == "lut" or not dec.exact else f"decomposed, {dec.num_terms} term(s)")
    rows = [{"case": label, "path": paths[label], "step_s": t, "ratio_to_exact": t / median["exact"],
             "ratio_to_fp32": t / median[FP32]} for label, t in median.items()]
    result = {"command": "benchmarks/retrain_step.py " + " ".join(sys.argv[1:]), "batch": args.batch,
              "threads": args.threads, "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"Retraining step (forward + backward), ResNet-20, batch {args.batch}, {args.threads} threads, "
             f"median of {args.repeats}; `{result['command']}`", "",
             "| emulation | products | step (s) | x exact fake-quant | x plain fp32 |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['path']} | {r['step_s']:.3f} | {r['ratio_to_exact']:.2f} | "
              f"{r['ratio_to_fp32']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
