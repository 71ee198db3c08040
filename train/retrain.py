"""Approximate-aware retraining, bit-exact with the deployed graph.

    python -m train --retrain-approx --from runs/r20 --multiplier mul8s_1L2N \\
        --dataset fashion-mnist --epochs 1 --out runs/r20-1L2N

1. The checkpoint is exported to 8-bit QDQ ONNX (or `--int8 MODEL.onnx` is taken as is): its
   scales are the scales the retrained model is trained and deployed with.
2. The approximation pass rewrites it under the plan; the per-node multiplier assignment it
   reports is what the emulation uses.
3. `export.emulation.QDQEmulation` runs the quantized graph in PyTorch with those products
   (exact decomposition: a few integer convs on masked operands; LUT gather otherwise) and
   the float weights behind every quantized initializer as trainable parameters. Forward is
   the deployed int8 computation; backward is the straight-through estimator of the exact
   product (rounding and masking pass gradients through; corrections and LUT differences
   are constants of the backward pass).
4. The trained weights are requantized with the unchanged scales into the int8 model, the
   pass is applied again, and both models are evaluated with onnxruntime.

Output folder:

    DIR/model.onnx, DIR/model.fp32.onnx     the int8 export retraining starts from (and its fp32 twin)
    DIR/model.approx.onnx                   ... rewritten under the plan (accuracy "before")
    DIR/retrained.onnx                      retrained int8 model, same scales
    DIR/retrained.approx.onnx               ... rewritten under the plan (accuracy "after")
    DIR/checkpoint.pt                       retrained weights (+ every scale, + the plan):
                                            `python -m export.to_onnx --checkpoint DIR` then
                                            `python -m passes.approximate` reproduce the two
                                            models above bit for bit
    DIR/metrics.json, DIR/log.jsonl         accuracies before/after, emulation agreement, steps
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import torch
from torch.nn import functional as F

import multipliers
from export.checkpoint import load_for_export
from export.emulation import QDQEmulation
from export.exporter import calibration_batches, export_model, onnx_predictions
from export.fp32 import fold_batchnorm, unfold_batchnorm_state
from export.requantize import quantization_state, write_weights
from modelfile import metadata
from models.datasets import load_dataset, preprocess
from models.loader import BatchLoader
from passes.approximate import approximate
from passes.plan import plan_from_dict
from train.checkpoint import FORMAT


class RetrainError(ValueError):
    pass


def _multipliers(rewritten: onnx.ModelProto, operand_order: str) -> dict[str, multipliers.Multiplier]:
    out = {}
    for name, entry in metadata.get(rewritten, metadata.ASSIGNMENT, {}).items():
        mult = multipliers.get(entry["multiplier"])
        if operand_order == "wx":
            mult = multipliers.Multiplier(mult.name + "^T", np.ascontiguousarray(mult.lut.T), mult.kind)
        out[name] = mult
    return out


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def _emulation_logits(em: QDQEmulation, images: torch.Tensor, data: Mapping[str, Any], device,
                      batch: int = 256) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = preprocess(images[start:start + batch], data).to(device)
            outs.append(em(x).float().cpu().numpy())
    return np.concatenate(outs)


def retrain_approx(checkpoint: str | Path, plan: Mapping[str, Any], out: str | Path, dataset: str | None = None,
                   epochs: float = 1.0, batch_size: int = 128, lr: float = 1e-4, optimizer: str = "adam",
                   momentum: float = 0.9, weight_decay: float = 0.0, max_steps: int | None = None,
                   int8_model: str | Path | None = None,
                   calib_samples: int = 512, eval_limit: int | None = None, seed: int = 0,
                   device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Retrain the model of `checkpoint` under `plan` (see module docstring); returns metrics."""
    from train.device import resolve_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan_obj = plan_from_dict(dict(plan))
    model, config, data = load_for_export(checkpoint)
    dataset = dataset or data.get("dataset")
    if not dataset:
        raise RetrainError("the checkpoint names no dataset; pass --dataset")
    size = int(data.get("image_size", 32))
    train_set = load_dataset(dataset, "train", image_size=size)
    test_set = load_dataset(dataset, "test", image_size=size, limit=eval_limit)
    data = {**data, "dataset": train_set.spec.name}
    torch.manual_seed(seed)

    # 1. the int8 model whose scales are kept
    if int8_model is not None:
        int8 = onnx.load(str(int8_model))
        onnx.save(int8, str(out / "model.onnx"))
    else:
        export_model(model, config, data, out / "model.onnx",
                     calibration_batches=calibration_batches(train_set.images, data, calib_samples))
        int8 = onnx.load(str(out / "model.onnx"))
    folded = fold_batchnorm(model)
    float_weights = {k: v.detach().numpy() for k, v in folded.state_dict().items()}

    # 2. the pass: deployed model before retraining, and the per-node assignment
    approx, report = approximate(int8, plan_obj)
    onnx.save(approx, str(out / "model.approx.onnx"))
    mults = _multipliers(approx, plan_obj.operand_order)
    labels = test_set.labels.numpy()
    before = onnx_predictions(out / "model.approx.onnx", test_set.images, data, progress=progress)

    # 3. retrain the emulation
    dev = resolve_device(device)
    em = QDQEmulation(int8, float_weights, multipliers=mults).to(dev)
    params = list(em.parameters())
    if not params:
        raise RetrainError("the int8 model has no quantized weights to retrain")
    loader = BatchLoader(train_set, batch_size, train=True, seed=seed, device=dev)
    total = max_steps if max_steps is not None else max(1, math.ceil(epochs * len(loader)))
    # Adam at a small rate: the folded, BatchNorm-free network is fine-tuned across fixed
    # quantization grids, where SGD at training rates jumps many grid steps and diverges.
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    else:
        raise RetrainError(f"optimizer must be adam or sgd, got {optimizer!r}")
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    log = (out / "log.jsonl").open("w")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="retrain (approximate)", unit="step")
    start, step, epoch = time.time(), 0, 0
    em.train()
    while step < total:
        loader.set_epoch(epoch)
        for x, y in loader:
            logits = em(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            acc = float((logits.argmax(1) == y).float().mean())
            log.write(json.dumps({"event": "step", "step": step, "epoch": epoch, "loss": float(loss), "acc": acc,
                                  "lr": schedule.get_last_lr()[0]}) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{acc:.3f}")
            if step >= total:
                break
        epoch += 1
    if bar is not None:
        bar.close()
    wall = time.time() - start
    em.eval()

    # 4. write back with the same scales, rewrite, evaluate what is deployed
    trained = {name: em.float_weight(name).detach().cpu().numpy() for name in em.trainable_names()}
    retrained = onnx.load(str(out / "model.onnx"))
    write_weights(retrained, trained)
    onnx.save(retrained, str(out / "retrained.onnx"))
    retrained_approx, _ = approximate(retrained, plan_obj)
    onnx.save(retrained_approx, str(out / "retrained.approx.onnx"))
    after = onnx_predictions(out / "retrained.approx.onnx", test_set.images, data, progress=progress)
    emulated = _emulation_logits(em, test_set.images, data, dev)

    folded_state = {k: (torch.from_numpy(trained[k]) if k in trained else v) for k, v in folded.state_dict().items()}
    state = unfold_batchnorm_state(model, folded_state)
    torch.save({"format": FORMAT, "config": dict(config), "data": dict(data), "state_dict": state,
                "quantization": {k: torch.from_numpy(np.asarray(v)) for k, v in quantization_state(retrained).items()},
                "plan": plan_obj.to_dict(), "retrain": {"from": str(checkpoint), "steps": step}},
               out / "checkpoint.pt")
    metrics = {
        "plan": plan_obj.to_dict(), "dataset": dataset, "test_images": int(len(labels)),
        "before_top1": _top1(before, labels), "after_top1": _top1(after, labels),
        "emulation_top1": _top1(emulated, labels),
        "emulation_same_class": float((emulated.argmax(1) == after.argmax(1)).mean()),
        "steps": step, "epochs": step / len(loader), "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "wall_time_s": wall, "device": str(dev), "rewritten_ops": report.summary().get("rewritten", 0),
        "int8_model": str(out / "retrained.onnx"), "approx_model": str(out / "retrained.approx.onnx"),
        "before_model": str(out / "model.approx.onnx"), "checkpoint": str(out / "checkpoint.pt"),
    }
    log.write(json.dumps({"event": "final", **metrics}) + "\n")
    log.close()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
