"""`python -m export.to_onnx`: a trained checkpoint -> fp32 ONNX -> 8-bit QDQ ONNX.

    python -m export.to_onnx --checkpoint runs/resnet20-hard --out resnet20-hard.onnx

writes the int8 model to --out and its fp32 twin to `<out stem>.fp32.onnx` (or only the fp32
model with --fp32-only). The checkpoint carries its architecture, topology, options and
preprocessing; flags override them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from export.fp32 import DEFAULT_OPSET
from export.quantize import CALIBRATION_METHODS


def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.to_onnx",
        description="Export a trained axmoe checkpoint to fp32 ONNX (dynamic batch, real sparse "
                    "MoE dispatch) and to 8-bit QDQ ONNX (symmetric: int8 per-channel weights, "
                    "uint8 zero-point-128 activations calibrated on real data).")
    p.add_argument("--checkpoint", required=True, metavar="DIR_OR_FILE",
                   help="training output directory or checkpoint file (.pt)")
    p.add_argument("--out", required=True, metavar="MODEL.onnx",
                   help="output model; the int8 export also writes <stem>.fp32.onnx beside it")
    p.add_argument("--dataset", help="calibration/verification data (default: the checkpoint's dataset)")
    p.add_argument("--calibration", choices=CALIBRATION_METHODS, default="minmax",
                   help="activation range estimator (default: minmax)")
    p.add_argument("--calib-samples", type=int, default=512, metavar="N",
                   help="training images used for calibration (default: 512)")
    p.add_argument("--fp32-only", action="store_true", help="write only the fp32 model to --out")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset (default: {DEFAULT_OPSET}; 18+ has the Bitwise ops operand masks use)")
    p.add_argument("--arch", help="override the checkpoint's architecture (must match its weights)")
    p.add_argument("--topology", help="override the checkpoint's topology (must match its weights)")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="also compare fp32, int8 and the PyTorch int8 emulation on N test images")
    p.add_argument("--json", metavar="REPORT.json", help="write the export report as JSON")
    return p


def validate(args) -> None:
    if args.calib_samples <= 0:
        raise SystemExit("error: --calib-samples must be positive")
    if not 13 <= args.opset <= 21:
        raise SystemExit("error: --opset must be between 13 and 21 (per-channel QDQ needs 13)")
    if not args.out.endswith(".onnx"):
        raise SystemExit(f"error: --out must name a .onnx file, got {args.out!r}")


def run(args) -> dict:
    import torch

    from export.checkpoint import CheckpointError, load_for_export, load_quantization_state
    from export.exporter import ExportError, calibration_batches, export_model

    try:
        model, config, data = load_for_export(args.checkpoint, arch=args.arch, topology=args.topology)
        pinned = load_quantization_state(args.checkpoint)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}")
    dataset = args.dataset or data.get("dataset")
    calib = None
    test = None
    if not args.fp32_only or args.verify:
        if not dataset:
            raise SystemExit("error: no calibration data: the checkpoint names no dataset; pass --dataset")
        from models.data import DatasetNotFoundError
        from models.datasets import UnknownDatasetError, load_dataset

        try:
            train = load_dataset(dataset, "train", image_size=int(data.get("image_size", 32)))
            if args.verify:
                test = load_dataset(dataset, "test", image_size=int(data.get("image_size", 32)), limit=args.verify)
        except (UnknownDatasetError, DatasetNotFoundError, FileNotFoundError) as exc:
            raise SystemExit(f"error: {exc}")
        data = {**data, "dataset": train.spec.name}
        calib = calibration_batches(train.images, data, args.calib_samples)
    print(f"exporting {config['arch']}/{config['topology']} ({sum(p.numel() for p in model.parameters()):,} "
          f"parameters) from {args.checkpoint}")
    try:
        report = export_model(model, config, data, Path(args.out), calibration_batches=calib,
                              calibration=args.calibration, fp32_only=args.fp32_only, opset=args.opset,
                              quantization_state=pinned)
    except ExportError as exc:
        raise SystemExit(f"error: {exc}")
    parity = ", ".join(f"batch {b}: {d:.1e}" for b, d in report.parity.items())
    print(f"fp32  {report.fp32_path}  (ONNX Runtime vs PyTorch max |diff| {parity})")
    if report.int8_path:
        print(f"int8  {report.int8_path}  ({report.quantized_ops} quantized Conv/Gemm/MatMul, "
              f"{report.float_routers} router nodes kept float, {args.calibration} calibration on "
              f"{args.calib_samples} {dataset} training images)")
        if pinned is not None:
            print("note: scales pinned to the ones this (retrained) checkpoint was trained with")
        if report.uncalibrated:
            print(f"note: {len(report.uncalibrated)} activation tensors were never reached by calibration "
                  "data (unrouted experts); they borrow a sibling expert's scale")
    result = report.to_dict()
    if test is not None:
        result["verify"] = verify(report, test, data, torch)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return result


def verify(report, test, data, torch) -> dict:
    """Accuracies of fp32 / int8 ONNX and agreement of the PyTorch emulation with int8."""
    import numpy as np
    import onnx

    from export.emulation import QDQEmulation
    from export.exporter import onnx_predictions
    from models.datasets import preprocess

    labels = test.labels.numpy()
    out = {"images": len(labels)}
    fp32 = onnx_predictions(report.fp32_path, test.images, data, progress=True)
    out["fp32_top1"] = float((fp32.argmax(1) == labels).mean())
    if report.int8_path:
        int8 = onnx_predictions(report.int8_path, test.images, data, progress=True)
        out["int8_top1"] = float((int8.argmax(1) == labels).mean())
        emu = QDQEmulation(onnx.load(str(report.int8_path)))
        with torch.no_grad():
            logits = torch.cat([emu(preprocess(test.images[i:i + 256], data))
                                for i in range(0, len(labels), 256)]).numpy()
        out["emulation_top1"] = float((logits.argmax(1) == labels).mean())
        out["emulation_same_class"] = float((logits.argmax(1) == int8.argmax(1)).mean())
        out["emulation_max_abs_diff"] = float(np.abs(logits - int8).max())
    print("verify: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()))
    return out


def main(argv=None) -> int:
    args = create_args_parser().parse_args(argv)
    validate(args)
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer logs advice at WARNING
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
