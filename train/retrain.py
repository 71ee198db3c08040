"""Approximate-aware retraining, bit-exact with the deployed graph.

    python -m train --retrain-approx --from runs/r20 --multiplier mul8s_1L2N \\
        --dataset fashion-mnist --epochs 1 --out runs/r20-1L2N

1. The checkpoint is exported to 8-bit QDQ ONNX (or `--int8 MODEL.onnx` is taken as is): its
   scales are the scales the retrained model is trained and deployed with.
2. The approximation pass rewrites it under the plan; the per-node multiplier assignment it
   reports is what the emulation uses.
3. `export.emulation.QDQEmulation` runs the quantized graph in PyTorch with those products
   (exact decomposition: a few integer convs on masked operands; LUT gather otherwise) and
   the float weights behind every quantized initializer as trainable parameters, plus the
   float router weights of an MoE (`train.retrain_routing`; not Cluster MoE's k-means
   centroids, which are buffers). Forward is the deployed int8 computation; backward is the
   estimator `gradient` of the products ("ste": straight-through of the exact product; "lut":
   `multipliers.gradients`). The loss, on a batch (x, y) with student logits s:

       L = (1 - lam) CE(s, y) + lam T^2 KL(softmax(t / T) || softmax(s / T))  + aux
       t = the exact int8 model's logits (onnxruntime) on x, lam = 0 without `distill`
       aux = the topology's balancing loss on the emulation's router logits (hard MoE)

   `val_fraction` of the train split (seeded) is held out; every `eval_every` steps and at
   the end the emulation's top-1 on it is measured, the best weights kept (and restored at
   the end), and `patience` evaluations without improvement stop the run. Budgets
   (`max_steps`, `max_minutes` of training time over resumes) stop it too. Every
   `checkpoint_every` steps the state goes to DIR/retrain_state.pt (`train.retrain_state`);
   `resume=True` continues from it.
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
    DIR/metrics.json, DIR/log.jsonl         accuracies before/after, emulation agreement, steps,
                                            validation, max expert share per MoE layer (exact int8,
                                            before, after; measured in onnxruntime)
    DIR/retrain_state.pt                    resumable state (train.retrain_state)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx
import torch
from torch.nn import functional as F

import multipliers
from export.checkpoint import load_for_export
from export.emulation import QDQEmulation
from export.exporter import calibration_batches, export_model
from export.fp32 import INPUT_NAME, fold_batchnorm, unfold_batchnorm_state
from export.requantize import quantization_state, write_floats, write_weights
from modelfile import metadata
from models.datasets import ImageSet, load_dataset, preprocess
from models.loader import BatchLoader
from passes.approximate import approximate
from passes.plan import plan_from_dict
from train import retrain_routing as routing
from train.checkpoint import FORMAT
from train.retrain_state import STATE_FILE, ResumeError, load_state, rng_state, save_state, set_rng_state

#: temperature of `distill` when none is given. 2: Fashion-MNIST's exact int8 ResNet-20 is
#: confident (most test images get p_max > 0.9), so T = 1 leaves little besides the label,
#: while at T >= 4 the 10-class targets approach uniform and the KL term drowns in noise.
DISTILL_TEMPERATURE = 2.0
#: lam of the distillation loss: the exact model's soft targets and the labels count equally;
#: the teacher's errors (about 1 in 11 train images) are still corrected by the label term.
DISTILL_WEIGHT = 0.5
#: steps between two states saved for resuming (at most this many are lost to a kill; each
#: save of a ResNet-20 state takes a few ms).
CHECKPOINT_EVERY = 100
#: share of the train split held out for validation (never the test split).
VAL_FRACTION = 0.1


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


def split_validation(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(train minus validation, validation): round(fraction N) images of the train split drawn by
    a generator seeded with `seed`, both in their original order."""
    if not 0 < fraction < 1:
        raise RetrainError(f"val_fraction must be in (0, 1), got {fraction}")
    n = len(train)
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise RetrainError(f"val_fraction {fraction} of {n} train images leaves an empty split")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, rest = order[:n_val].sort().values, order[n_val:].sort().values
    part = lambda index: ImageSet(train.images[index], train.labels[index], train.spec, train.classes)  # noqa: E731
    return part(rest), part(val)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, weight: float,
                      temperature: float) -> torch.Tensor:
    """(1 - lam) CE(s, y) + lam T^2 KL(softmax(t / T) || softmax(s / T)); s, t (B, classes)."""
    ce = F.cross_entropy(student, labels)
    kl = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                  log_target=True, reduction="batchmean")
    return (1 - weight) * ce + weight * temperature ** 2 * kl


def retrain_approx(checkpoint: str | Path, plan: Mapping[str, Any], out: str | Path, dataset: str | None = None,
                   epochs: float = 1.0, batch_size: int = 128, lr: float = 1e-4, optimizer: str = "adam",
                   momentum: float = 0.9, weight_decay: float = 0.0, max_steps: int | None = None,
                   int8_model: str | Path | None = None,
                   calib_samples: int = 512, eval_limit: int | None = None, seed: int = 0,
                   device: str = "auto", progress: bool = True, *, gradient: str = "ste", method: str = "auto",
                   router: bool = True, distill: float | None = None, distill_weight: float = DISTILL_WEIGHT,
                   max_minutes: float | None = None, val_fraction: float = VAL_FRACTION, val_limit: int | None = None,
                   eval_every: int | None = None, patience: int | None = None,
                   checkpoint_every: int = CHECKPOINT_EVERY, resume: bool = False,
                   data_root: str | Path | None = None,
                   on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Retrain the model of `checkpoint` under `plan` (see module docstring); returns metrics.

    Args (beyond the training basics):
        gradient: "ste" | "lut", the products' backward pass (`QDQEmulation(gradient=)`).
        method: product kernels of the emulation ("auto", "decomposed", "lut", "kernel").
        router: train the MoE routers with the topology's balancing loss (False: frozen, no aux loss).
        distill: temperature T of distillation from the exact int8 model (None: labels only).
        distill_weight: lam of the distillation loss.
        max_minutes: stop after this much training time (summed over resumes).
        val_fraction: share of the train split held out for validation; val_limit: validate on
            its first N images only (the split itself does not change).
        eval_every: validate every N steps (None: only at the end); patience: stop after this
            many validations without a better top-1 (None: never).
        checkpoint_every: save the resumable state every N steps; resume: continue from it.
        data_root: dataset folder root (default `models.data.data_root()`).
        on_step: called with the step number after each step (and its state save).
    """
    from train.device import resolve_device

    for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every),
                        ("eval_every", eval_every), ("patience", patience), ("max_steps", max_steps),
                        ("val_limit", val_limit)):
        if value is not None and value < 1:
            raise RetrainError(f"{name} must be >= 1, got {value}")
    if distill is not None and distill <= 0:
        raise RetrainError(f"distillation temperature must be > 0, got {distill}")
    if not 0 <= distill_weight <= 1:
        raise RetrainError(f"distill_weight must be in [0, 1], got {distill_weight}")
    if max_minutes is not None and max_minutes <= 0:
        raise RetrainError(f"max_minutes must be > 0, got {max_minutes}")
    if optimizer not in ("adam", "sgd"):
        raise RetrainError(f"optimizer must be adam or sgd, got {optimizer!r}")
    out = Path(out)
    if resume and not (out / STATE_FILE).is_file():
        raise RetrainError(f"nothing to resume: no {out / STATE_FILE}")
    out.mkdir(parents=True, exist_ok=True)
    plan_obj = plan_from_dict(dict(plan))
    model, config, data = load_for_export(checkpoint)
    dataset = dataset or data.get("dataset")
    if not dataset:
        raise RetrainError("the checkpoint names no dataset; pass --dataset")
    size = int(data.get("image_size", 32))
    train_set, val_set = split_validation(load_dataset(dataset, "train", image_size=size, root=data_root),
                                          val_fraction, seed)
    test_set = load_dataset(dataset, "test", image_size=size, limit=eval_limit, root=data_root)
    data = {**data, "dataset": train_set.spec.name}
    torch.manual_seed(seed)

    # 1. the int8 model whose scales are kept (a resumed run keeps the one it started from)
    if resume and (out / "model.onnx").is_file():
        int8 = onnx.load(str(out / "model.onnx"))
    elif int8_model is not None:
        int8 = onnx.load(str(int8_model))
        onnx.save(int8, str(out / "model.onnx"))
    else:
        export_model(model, config, data, out / "model.onnx",
                     calibration_batches=calibration_batches(train_set.images, data, calib_samples))
        int8 = onnx.load(str(out / "model.onnx"))
    folded = fold_batchnorm(model)
    float_weights = {k: v.detach().numpy() for k, v in folded.state_dict().items()}
    sites = routing.find_routers(folded, int8)

    # 2. the pass: deployed model before retraining, and the per-node assignment
    approx, report = approximate(int8, plan_obj)
    onnx.save(approx, str(out / "model.approx.onnx"))
    mults = _multipliers(approx, plan_obj.operand_order)
    labels = test_set.labels.numpy()
    before, load_before = routing.logits_and_load(out / "model.approx.onnx", test_set.images, data, sites,
                                                  progress=progress)
    load_exact = routing.logits_and_load(out / "model.onnx", test_set.images, data, sites)[1] if sites else {}

    # 3. retrain the emulation
    dev = resolve_device(device)
    train_routers = router and any(site.params for site in sites)
    em = QDQEmulation(int8, float_weights, multipliers=mults, method=method, gradient=gradient,
                      trainable_floats=routing.trainable_floats(sites, int8) if train_routers else None,
                      taps=[s.logits for s in sites if s.logits] if router else ()).to(dev)
    params = list(em.parameters())
    if not params:
        raise RetrainError("the int8 model has no quantized weights to retrain")
    loader = BatchLoader(train_set, batch_size, train=True, seed=seed, device=dev)
    total = max_steps if max_steps is not None else max(1, math.ceil(epochs * len(loader)))
    # Adam at a small rate: the folded, BatchNorm-free network is fine-tuned across fixed
    # quantization grids, where SGD at training rates jumps many grid steps and diverges.
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    teacher = None
    if distill is not None:
        from runtime.ort import session

        teacher = session(str(out / "model.onnx"))
    settings = {"checkpoint": str(checkpoint), "plan": json.dumps(plan_obj.to_dict(), sort_keys=True),
                "dataset": dataset, "seed": seed, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                "momentum": momentum, "weight_decay": weight_decay, "total_steps": total,
                "val_fraction": val_fraction, "val_limit": val_limit, "eval_every": eval_every, "patience": patience,
                "gradient": gradient,
                "method": method, "router": bool(router), "distill": distill, "distill_weight": distill_weight}
    step, epoch, position, spent = 0, 0, 0, 0.0
    best: dict[str, Any] | None = None
    if resume:
        try:
            state = load_state(out, settings)
        except ResumeError as exc:
            raise RetrainError(str(exc)) from None
        em.load_state_dict(state["params"], strict=False)
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        step, epoch, position, spent = state["step"], state["epoch"], state["position"], state["wall_time_s"]
        best = state["best"]
        set_rng_state(state["rng"])
    log = (out / "log.jsonl").open("a" if resume else "w")
    if resume:
        log.write(json.dumps({"event": "resume", "step": step, "epoch": epoch, "position": position}) + "\n")
    val_images, val_labels = val_set.images[:val_limit], val_set.labels[:val_limit].numpy()

    def validate() -> float:
        em.eval()
        acc = _top1(_emulation_logits(em, val_images, data, dev), val_labels)
        em.train()
        return acc

    def snapshot() -> dict[str, Any]:
        return {"settings": settings, "params": {k: v.detach().cpu().clone() for k, v in em.state_dict().items()},
                "optimizer": opt.state_dict(), "scheduler": schedule.state_dict(), "step": step, "epoch": epoch,
                "position": position, "rng": rng_state(), "best": best,
                "wall_time_s": spent + time.time() - start}

    validated_at = None

    def record(val: float) -> bool:
        """Keep the best weights; True when patience has run out."""
        nonlocal best, validated_at
        validated_at = step
        # A tie keeps the later (longer-trained) weights but is no improvement for patience.
        bad = 0 if best is None or val > best["val_top1"] else best["bad_evals"] + 1
        if best is None or val >= best["val_top1"]:
            best = {"val_top1": val, "step": step,
                    "params": {k: v.detach().cpu().clone() for k, v in em.state_dict().items()}}
        best["bad_evals"] = bad
        log.write(json.dumps({"event": "validate", "step": step, "val_top1": val, "best_step": best["step"]}) + "\n")
        return patience is not None and best["bad_evals"] >= patience

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc="retrain (approximate)", unit="step")
    start = time.time()
    stopped = "completed"
    em.train()
    while step < total and stopped == "completed":
        loader.set_epoch(epoch)
        for index, (x, y) in enumerate(loader):
            if index < position:
                continue  # batches this epoch already used before the resume (replayed for the generator)
            logits = em(x)
            if teacher is not None:
                with torch.no_grad():
                    target = torch.from_numpy(teacher.run(None, {INPUT_NAME: x.cpu().numpy()})[0]).to(dev)
                task = distillation_loss(logits, target, y, distill_weight, distill)
            else:
                task = F.cross_entropy(logits, y)
            aux = routing.aux_loss(sites, em.tapped) if router else None
            loss = task if aux is None else task + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step, position = step + 1, index + 1
            acc = float((logits.argmax(1) == y).float().mean())
            log.write(json.dumps({"event": "step", "step": step, "epoch": epoch, "loss": float(loss), "acc": acc,
                                  "aux": None if aux is None else float(aux),
                                  "lr": schedule.get_last_lr()[0]}) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{acc:.3f}")
            if eval_every is not None and step % eval_every == 0 and step < total and record(validate()):
                stopped = "early_stopping"
            if max_minutes is not None and spent + time.time() - start >= 60 * max_minutes and step < total:
                stopped = "max_minutes"
            if step % checkpoint_every == 0 or stopped != "completed":
                save_state(out, snapshot())
            if on_step is not None:
                on_step(step)
            if step >= total or stopped != "completed":
                break
        else:
            epoch, position = epoch + 1, 0
    if bar is not None:
        bar.close()
    spent += time.time() - start
    if validated_at != step and (best is None or best["step"] != step):
        record(validate())
    restored = best is not None and best["step"] != step
    if restored:
        em.load_state_dict(best["params"], strict=False)
    save_state(out, {**snapshot(), "wall_time_s": spent})
    em.eval()

    # 4. write back with the same scales, rewrite, evaluate what is deployed
    trained = {name: em.float_weight(name).detach().cpu().numpy() for name in em.trainable_names()}
    trained_floats = {name: em.float_value(name).detach().cpu().numpy() for name in em.trainable_float_names()}
    retrained = onnx.load(str(out / "model.onnx"))
    write_weights(retrained, trained)
    write_floats(retrained, trained_floats)
    onnx.save(retrained, str(out / "retrained.onnx"))
    retrained_approx, _ = approximate(retrained, plan_obj)
    onnx.save(retrained_approx, str(out / "retrained.approx.onnx"))
    after, load_after = routing.logits_and_load(out / "retrained.approx.onnx", test_set.images, data, sites,
                                                progress=progress)
    emulated = _emulation_logits(em, test_set.images, data, dev)
    differ = np.flatnonzero(emulated.argmax(1) != after.argmax(1))

    trained_state = {**trained, **routing.parameter_values(sites, trained_floats)}
    folded_state = {k: (torch.from_numpy(trained_state[k]) if k in trained_state else v)
                    for k, v in folded.state_dict().items()}
    state = unfold_batchnorm_state(model, folded_state)
    torch.save({"format": FORMAT, "config": dict(config), "data": dict(data), "state_dict": state,
                "quantization": {k: torch.from_numpy(np.asarray(v)) for k, v in quantization_state(retrained).items()},
                "plan": plan_obj.to_dict(), "retrain": {"from": str(checkpoint), "steps": step}},
               out / "checkpoint.pt")
    metrics = {
        "plan": plan_obj.to_dict(), "dataset": dataset, "test_images": int(len(labels)),
        "before_top1": _top1(before, labels), "after_top1": _top1(after, labels),
        "emulation_top1": _top1(emulated, labels),
        # exact, not rounded: the invariant is that every test image gets the same class
        "emulation_same_class": float(len(labels) - len(differ)) / len(labels),
        "emulation_differs_on": differ[:20].tolist(),
        "val_images": len(val_labels), "val_held_out": len(val_set), "val_top1": best["val_top1"] if best else None,
        "best_step": best["step"] if best else None, "restored_best": restored, "stopped": stopped,
        "steps": step, "total_steps": total, "epochs": step / len(loader), "batch_size": batch_size, "lr": lr,
        "optimizer": optimizer, "gradient": gradient, "method": method,
        "distill": {"temperature": distill, "weight": distill_weight} if distill is not None else None,
        "router": {"trained": bool(train_routers), "aux_loss": bool(router and any(s.logits for s in sites)),
                   "layers": [s.path for s in sites],
                   "trainable": sorted(p for s in sites for p, _ in s.params.values()) if train_routers else []},
        # share of the test images' routings that go to the most used expert, per MoE layer,
        # from the mask each router hands to the dispatch, run in onnxruntime
        "max_expert_share": {"source": "onnxruntime",
                             "exact": {k: v["max_share"] for k, v in load_exact.items()},
                             "before": {k: v["max_share"] for k, v in load_before.items()},
                             "after": {k: v["max_share"] for k, v in load_after.items()}} if sites else None,
        "expert_load": {"exact": load_exact, "before": load_before, "after": load_after} if sites else None,
        "wall_time_s": spent, "device": str(dev), "rewritten_ops": report.summary().get("rewritten", 0),
        "int8_model": str(out / "retrained.onnx"), "approx_model": str(out / "retrained.approx.onnx"),
        "before_model": str(out / "model.approx.onnx"), "checkpoint": str(out / "checkpoint.pt"),
    }
    log.write(json.dumps({"event": "final", **metrics}) + "\n")
    log.close()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
