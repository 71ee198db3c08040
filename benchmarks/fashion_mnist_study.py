"""Study on Fashion-MNIST: fp32 vs int8 accuracy after export, and what approximate
multipliers do before and after approximate-aware retraining, for ResNet-20 dense and hard MoE.

    python benchmarks/fashion_mnist_study.py --epochs 4 --retrain-epochs 1 \\
        --multipliers mul8s_1KV9 mul8s_1L2J mul8s_1L2L mul8s_1KX5 mul8s_1L2N mul8s_1L12 \\
        --retrain mul8s_1L2L

Every step runs through the real entry points (one subprocess each): `python -m train`,
`python -m export.to_onnx --verify 10000`, `python -m passes.approximate`, `python -m eval`-free
accuracy via onnxruntime, `python -m train --retrain-approx`. Results go to
benchmarks/results/fashion_mnist_study.{json,md}; `--checkpoints DIR` reuses trained models
(DIR/<topology>/checkpoint.pt) instead of training.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sh(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run([sys.executable, *command], cwd=REPO, check=True)


def accuracy(model: Path, data: dict) -> float:
    from export.exporter import onnx_predictions
    from models.datasets import load_dataset

    test = load_dataset(data["dataset"], "test", image_size=int(data.get("image_size", 32)))
    logits = onnx_predictions(model, test.images, data)
    return float((logits.argmax(1) == test.labels.numpy()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / ".cache" / "bench" / "study")
    p.add_argument("--checkpoints", type=Path, help="reuse DIR/<topology>/checkpoint.pt")
    p.add_argument("--topologies", nargs="+", default=["dense", "hard"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--multipliers", nargs="+", default=["mul8s_1L2J", "mul8s_1L2L", "mul8s_1L2N", "mul8s_1L12"])
    p.add_argument("--retrain", nargs="*", default=["mul8s_1L2L"])
    p.add_argument("--retrain-epochs", type=float, default=1.0)
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "fashion_mnist_study")
    args = p.parse_args()
    import onnx

    from modelfile import metadata

    rows = {}
    start = time.time()
    for topology in args.topologies:
        work = args.work / topology
        ckpt = (args.checkpoints / topology) if args.checkpoints else work / "train"
        if not args.checkpoints:
            extra = ["--experts", "4", "--top-k", "1"] if topology == "hard" else []
            sh("-m", "train", "--arch", "resnet20", "--topology", topology, "--dataset", "fashion-mnist",
               "--epochs", str(args.epochs), "--batch-size", "128", "--lr", "0.1", "--schedule", "onecycle",
               "--no-augment", "--no-progress", "--out", str(ckpt), *extra)
        int8 = work / "resnet20.onnx"
        if not (work / "export.json").is_file():  # a rerun reuses the export
            sh("-m", "export.to_onnx", "--checkpoint", str(ckpt), "--out", str(int8), "--verify", "10000",
               "--json", str(work / "export.json"))
        export = json.loads((work / "export.json").read_text())
        data = metadata.get(onnx.load(str(int8)), metadata.DATA)
        row = {"fp32_top1": export["verify"]["fp32_top1"], "int8_top1": export["verify"]["int8_top1"],
               "emulation_same_class": export["verify"]["emulation_same_class"], "multipliers": {}}
        for name in args.multipliers:
            approx = work / f"resnet20.{name}.onnx"
            sh("-m", "passes.approximate", str(int8), str(approx), "--multiplier", name)
            entry = {"top1": accuracy(approx, data)}
            if name in args.retrain:
                out = work / f"retrain-{name}"
                sh("-m", "train", "--retrain-approx", "--from", str(ckpt), "--multiplier", name,
                   "--epochs", str(args.retrain_epochs), "--int8", str(int8), "--out", str(out))
                metrics = json.loads((out / "metrics.json").read_text())
                entry.update(retrained_top1=metrics["after_top1"], before_check=metrics["before_top1"],
                             emulation_same_class=metrics["emulation_same_class"],
                             retrain_steps=metrics["steps"], retrain_wall_s=metrics["wall_time_s"],
                             retrain_device=metrics["device"])
            row["multipliers"][name] = entry
            print(topology, name, entry, flush=True)
        rows[topology] = row
    import torch

    result = {"command": "benchmarks/fashion_mnist_study.py " + " ".join(sys.argv[1:]),
              "machine": platform.node(), "device": "cuda" if torch.cuda.is_available() else "cpu",
              "wall_time_s": time.time() - start, "models": rows}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(result, indent=2))
    import multipliers

    lines = [f"ResNet-20 on Fashion-MNIST (10,000 test images), `{result['command']}`, "
             f"training/retraining on {result['device']}", ""]
    for topology, row in rows.items():
        lines += [f"**{topology}**: fp32 {100 * row['fp32_top1']:.2f} %, int8 {100 * row['int8_top1']:.2f} % "
                  f"(int8 - fp32 = {100 * (row['int8_top1'] - row['fp32_top1']):+.2f} points), PyTorch emulation "
                  f"predicts the int8 model's class on {100 * row['emulation_same_class']:.2f} % of images", "",
                  "| multiplier | power vs exact | MAE | top-1 after the pass | after retraining |",
                  "|---|---|---|---|---|"]
        exact = multipliers.exact()
        for name, entry in row["multipliers"].items():
            m = multipliers.get(name)
            retrained = f"{100 * entry['retrained_top1']:.2f} % ({entry['retrain_steps']} steps)" \
                if "retrained_top1" in entry else "-"
            lines.append(f"| {name} | {100 * m.power_mW / exact.power_mW:.1f} % | {m.metrics.mae:g} | "
                         f"{100 * entry['top1']:.2f} % | {retrained} |")
        lines.append("")
    args.results.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
