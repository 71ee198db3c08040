"""Benchmark: one approximate-aware retraining step (forward + backward) of ResNet-20.

    .venv/bin/python benchmarks/retrain_step.py [--batch 64] [--threads 2] [--repeats 5] [--slow]

Emulations of the same int8 ResNet-20 (Fashion-MNIST-calibrated, BN folded) and the plain float
training step of that ResNet-20, timed round-robin in one run on the same machine, same batch and
threads (median), reported as ratios to the exact fake-quant step and to the plain fp32 step:

    fp32                 the float model in train mode, no quantization (what retraining adds to)
    exact                QDQ emulation, exact products in torch (the fake-quant baseline)
    <mult>               torch products (multipliers.torch_kernels): mask forms one conv on masked
                         operands, partial-product forms the main conv with gradient + corrections
    <mult> (kernel)      forward products in axmoe's C++ kernels through onnxruntime
                         (export.kernel_products), backward one float conv backward
    <mult> (kernel, lut) the same with the LUT-1D gradient (--gradient lut)
    mitchell (kernel)    no decomposition: the LUT kernels
    --slow adds the torch LUT gather (im2col + table lookup, ~17 s a step) for 1KVA and mitchell.

The emulation is built the way retraining builds it (QDQEmulation of the int8 model with the
fp32 weights trainable); until QDQEmulation takes method="kernel" and gradient=, the products are
routed through a subclass that overrides its two product methods (`_emulation`).

Writes benchmarks/results/retrain_step.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import os
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
from export import kernel_products  # noqa: E402
from export.emulation import QDQEmulation  # noqa: E402
from export.exporter import calibration_batches, export_model  # noqa: E402
from export.fp32 import fold_batchnorm  # noqa: E402
from models.datasets import load_dataset  # noqa: E402
from multipliers import torch_kernels  # noqa: E402

FP32 = "fp32"
# label, multiplier, products method ("auto" | "lut" torch, "kernel" C++), gradient
CASES = [("exact", None, "auto", "ste"), ("exact (kernel)", None, "kernel", "ste")]
for _name in ("mul8s_1L2L", "mul8s_1KVM", "mul8s_1KV8", "mul8s_1KVA"):
    CASES += [(_name, _name, "auto", "ste"), (f"{_name} (kernel)", _name, "kernel", "ste")]
CASES += [("mul8s_1KVA (lut)", "mul8s_1KVA", "auto", "lut"),
          ("mul8s_1KVA (kernel, lut)", "mul8s_1KVA", "kernel", "lut"),
          ("mitchell (kernel)", "mitchell", "kernel", "ste"),
          ("mitchell (kernel, lut)", "mitchell", "kernel", "lut")]
SLOW_CASES = [("mul8s_1KVA (torch gather)", "mul8s_1KVA", "lut", "ste"),
              ("mitchell (torch gather)", "mitchell", "auto", "ste")]


class _ProductsEmulation(QDQEmulation):
    """QDQEmulation whose products take `method="kernel"` (export.kernel_products) and `gradient=`,
    as QDQEmulation itself will."""

    def __init__(self, *args, method: str = "auto", gradient: str = "ste", **kwargs):
        super().__init__(*args, method="auto" if method == "kernel" else method, **kwargs)
        self.kernel = method == "kernel"
        self.gradient = gradient

    def conv_products(self, name, a, w, params):
        mult = self.multipliers.get(name)
        if self.kernel:
            return kernel_products.conv_products(a, w, params, mult, gradient=self.gradient)
        return torch_kernels.conv_products(a, w, params, mult, self.method, gradient=self.gradient)

    def matmul_products(self, name, a, w):
        mult = self.multipliers.get(name)
        if self.kernel:
            return kernel_products.matmul_products(a, w, mult, gradient=self.gradient)
        return torch_kernels.matmul_products(a, w, mult, self.method, gradient=self.gradient)


def _emulation(model, weights, mults, method: str, gradient: str) -> QDQEmulation:
    """The retraining emulation: QDQEmulation's own products once it takes gradient= (and so
    method="kernel"), the local override until then."""
    if "gradient" in inspect.signature(QDQEmulation.__init__).parameters:
        return QDQEmulation(model, weights, multipliers=mults, method=method, gradient=gradient)
    return _ProductsEmulation(model, weights, multipliers=mults, method=method, gradient=gradient)


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
    p.add_argument("--slow", action="store_true", help="add the torch LUT gather cases (~17 s a step each)")
    p.add_argument("--only", nargs="*", help="time only these cases (labels; exact always runs)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "retrain_step"))
    args = p.parse_args()
    cases = [c for c in CASES + (SLOW_CASES if args.slow else [])
             if not args.only or c[0] in args.only or c[0] == "exact"]
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
    for label, name, method, gradient in cases:
        mults = {n: multipliers.get(name) for n in convs} if name else {}
        steps[label] = _emulation(int8, weights, mults, method, gradient)
    times = {label: [] for label in steps}
    load_before = os.getloadavg()
    for _ in range(args.repeats + 1):  # first round warms up
        for label, module in steps.items():
            times[label].append(timed_step(module, x, y))
    median = {label: statistics.median(t[1:]) for label, t in times.items()}
    paths = {FP32: "float, no quantization"}
    gradients = {FP32: "-"}
    for label, name, method, gradient in cases:
        dec = multipliers.get(name).decomposition if name else None
        where = "C++ kernels" if method == "kernel" else "torch"
        form = "exact" if not name else (
            "lut" if method == "lut" or not dec.exact else f"decomposed, {dec.num_terms} term(s)")
        paths[label] = f"{where}: {form}"
        gradients[label] = gradient
    rows = [{"case": label, "path": paths[label], "gradient": gradients[label], "step_s": t,
             "ratio_to_exact": t / median["exact"], "ratio_to_fp32": t / median[FP32]} for label, t in median.items()]
    result = {"command": "benchmarks/retrain_step.py " + " ".join(sys.argv[1:]), "batch": args.batch,
              "threads": args.threads, "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    load = ", ".join(f"{v:.2f}" for v in load_before) + " before, " + ", ".join(
        f"{v:.2f}" for v in result["load_average_after"]) + " after"
    lines = [f"Retraining step (forward + backward), ResNet-20, batch {args.batch}, {args.threads} threads, "
             f"median of {args.repeats}, round robin; `{result['command']}`; load average (1, 5, 15 min) {load}", "",
             "| emulation | products | gradient | step (s) | x exact fake-quant | x plain fp32 |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['path']} | {r['gradient']} | {r['step_s']:.3f} | {r['ratio_to_exact']:.2f} | "
              f"{r['ratio_to_fp32']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
