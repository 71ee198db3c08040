"""The export pipeline behind `python -m export.to_onnx`: checkpoint -> fp32 -> int8 ONNX."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import torch
from torch import nn

from export.fp32 import DEFAULT_OPSET, INPUT_NAME, export_fp32, fold_batchnorm, max_abs_diff, module_path_of
from export.quantize import SCHEME, check_scheme, fix_uncalibrated, quantize_model
from modelfile import metadata

PARITY_BATCHES = (1, 3, 32)
PARITY_TOLERANCE = 1e-5


class ExportError(ValueError):
    """A user-facing export problem (bad checkpoint, mismatched options, missing data)."""


def axmoe_version() -> str:
    try:
        return importlib_metadata.version("axmoe")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def router_node_names(model: nn.Module, onnx_model: onnx.ModelProto) -> list[str]:
    """Nodes inside MoE routers (every `models.gating.Router`): routing stays float."""
    from models.gating import Router

    gates = [name for name, m in model.named_modules() if isinstance(m, Router)]
    out = []
    for node in onnx_model.graph.node:
        path = module_path_of(node.name)
        if any(path == g or path.startswith(g + ".") for g in gates):
            out.append(node.name)
    return out


@dataclass
class ExportReport:
    fp32_path: Path
    int8_path: Path | None
    parity: dict[int, float] = field(default_factory=dict)  # batch -> max |ORT - torch| (fp32)
    quantized_ops: int = 0
    float_routers: int = 0
    uncalibrated: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fp32": str(self.fp32_path), "int8": str(self.int8_path) if self.int8_path else None,
                "parity": self.parity, "quantized_ops": self.quantized_ops,
                "float_routers": self.float_routers, "uncalibrated": self.uncalibrated,
                "metadata": self.metadata}


def model_metadata(config: Mapping[str, Any], data: Mapping[str, Any], calibration: str | None,
                   scheme: str | None) -> dict[metadata.Key, Any]:
    """What an export writes (`modelfile.metadata`), in this order; calibration and scheme
    only for the int8 model."""
    options = dict(config.get("options", {}))
    topology = config.get("topology", "dense")
    meta = {
        metadata.ARCH: config.get("arch"),
        metadata.TOPOLOGY: topology,
        metadata.NUM_CLASSES: config.get("num_classes"),
        metadata.EXPERTS: options.get("num_experts", 0) if topology != "dense" else 0,
        metadata.OPTIONS: options,
        metadata.DATASET: data.get("dataset", ""),
        metadata.DATA: dict(data),
        metadata.VERSION: axmoe_version(),
    }
    if calibration:
        meta[metadata.CALIBRATION] = calibration
    if scheme:
        meta[metadata.QUANTIZATION] = scheme
    return meta


def export_model(model: nn.Module, config: Mapping[str, Any], data: Mapping[str, Any], out: Path,
                 calibration_batches=None, calibration: str = "minmax", fp32_only: bool = False,
                 opset: int = DEFAULT_OPSET, scale_overrides: dict[str, float] | None = None,
                 quantization_state: Mapping[str, np.ndarray] | None = None) -> ExportReport:
    """Export a model to fp32 ONNX and (unless `fp32_only`) 8-bit QDQ ONNX.

    Args:
        model: the trained network (eval mode is set here).
        config: its construction config (arch, topology, num_classes, options).
        data: preprocessing record (dataset, image_size, mean, std, ...).
        out: path of the final model: the int8 model, or the fp32 one with `fp32_only`;
            the fp32 model of an int8 export goes next to it as `<stem>.fp32.onnx`.
        calibration_batches: iterable of float32 (N, 3, S, S) batches of real data.
        quantization_state: every scale / zero point of a retrained model
            (`export.requantize.quantization_state`); pinned after calibration, so the export
            reproduces the model it was retrained as.
    """
    from runtime.ort import session

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    folded = fold_batchnorm(model)
    size = int(data.get("image_size", 32))
    example = torch.zeros(2, 3, size, size)
    fp32_path = out if fp32_only else out.with_name(out.stem + ".fp32.onnx")
    fp32 = export_fp32(folded, example, opset=opset)
    metadata.write(fp32, model_metadata(config, data, None, None))
    onnx.save(fp32, str(fp32_path))
    report = ExportReport(fp32_path, None)
    sess = session(fp32_path, threads=None)
    gen = torch.Generator().manual_seed(0)
    for batch in PARITY_BATCHES:
        x = torch.randn(batch, 3, size, size, generator=gen)
        report.parity[batch] = max_abs_diff(sess, model, x)
    worst = max(report.parity.values())
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"fp32 ONNX differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE})")
    if fp32_only:
        report.metadata = metadata.raw(fp32)
        return report
    if calibration_batches is None:
        raise ExportError("int8 export needs calibration data (--dataset), or use --fp32-only")
    routers = router_node_names(folded, fp32)
    int8 = quantize_model(fp32, calibration_batches, method=calibration, nodes_to_exclude=routers,
                          scale_overrides=scale_overrides)
    report.uncalibrated = fix_uncalibrated(int8)
    if quantization_state is not None:
        from export.requantize import apply_quantization_state

        weights = {k: v.detach().numpy() for k, v in folded.state_dict().items()}
        try:
            apply_quantization_state(int8, quantization_state, weights)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        report.uncalibrated = []
    problems = check_scheme(int8)
    if problems:
        raise ExportError(f"quantized graph breaks the axmoe scheme: {problems[0]} (and {len(problems) - 1} more)")
    metadata.write(int8, model_metadata(config, data, calibration, SCHEME))
    onnx.checker.check_model(int8, full_check=True)
    onnx.save(int8, str(out))
    from export.quantize import quantized_ops

    report.int8_path = out
    report.quantized_ops = len(quantized_ops(int8))
    report.float_routers = len(routers)
    report.metadata = metadata.raw(int8)
    return report


def calibration_batches(images: torch.Tensor, data: Mapping[str, Any], samples: int, batch: int = 64,
                        seed: int = 0):
    """Float32 batches of `samples` images drawn (seeded) from uint8 (N, C, S, S) `images`."""
    from models.datasets import preprocess

    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(images), generator=gen)[:samples]
    for start in range(0, len(index), batch):
        yield preprocess(images[index[start:start + batch]], data).numpy().astype(np.float32)


def onnx_predictions(path_or_session, images: torch.Tensor, data: Mapping[str, Any], batch: int = 256,
                     progress: bool = False) -> np.ndarray:
    """Logits of an ONNX model (fp32 or int8, with the axmoe ops) on uint8 images."""
    from models.datasets import preprocess
    from runtime.ort import session

    sess = session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    outs = []
    starts = range(0, len(images), batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="onnxruntime", unit="batch", leave=False)
    for start in starts:
        x = preprocess(images[start:start + batch], data).numpy()
        outs.append(sess.run(None, {INPUT_NAME: x})[0])
    return np.concatenate(outs)
