"""`run(args)`: data, model, optimiser, epochs, evaluation, checkpoints, metrics.

Dense, hard and soft models train in one phase. A topology whose spec asks for a dense trunk
first (`TopologySpec.dense_trunk_init`: cluster) runs two (`train.cluster`): `DIR/dense/`
holds the dense phase (a complete dense run of its own), `DIR/` the expert phase.
Seeding: weights from `seed`; epoch e's data order, augmentation, gate noise and dropout
from (seed, e), so a resumed run repeats an uninterrupted one epoch for epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import models
from models.datasets import ImageSet, dataset_spec, load_dataset
from models.loader import BatchLoader
from models.registry import arch_entry
from models.topology import topology_spec
from models.upcycle import upcycle_state_dict
from train.args import UsageError, plain_args
from train.checkpoint import CheckpointError, load_checkpoint, resolve, save_checkpoint, FILENAME
from train.cluster import fit_centroids
from train.device import resolve_device
from train.log import MetricsLog, write_json
from train.loop import evaluate, train_epoch
from train.optim import make_optimizer, resolve_settings
from train.schedule import make_schedule


@dataclass
class Phase:
    name: str                                   # "train", "dense" or "experts"
    out: Path                                   # folder of this phase's files
    config: dict[str, Any]                      # model config for models.create
    epochs: int                                 # epochs to reach
    resume: Path | None = None                  # checkpoint to continue from
    init_state: dict[str, torch.Tensor] | None = None   # weights to start from
    prepare: Callable[[nn.Module], dict[str, Any]] | None = None  # fresh start set-up (k-means)
    freeze_trunk: bool = False                  # keep layers before the first MoE layer fixed
    extra: dict[str, Any] = field(default_factory=dict)  # added to metrics.json


@dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    train_set: ImageSet
    test_set: ImageSet


def seed_for(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch + 1


#: topology option -> the parsed `python -m train` flag (args attribute) that sets it; an
#: option without a flag keeps its default unless --model-opt sets it
TOPOLOGY_FLAGS = {"num_experts": "experts", "top_k": "top_k", "noisy_gating": "noisy_gating",
                  "aux_loss_weight": "aux_loss_weight", "slots_per_expert": "slots"}


def model_config(args: argparse.Namespace, topology: str, image_size: int, num_classes: int) -> dict[str, Any]:
    """The `models.create` config the command line asks for: the flags of the options that
    `topology` takes on `args.arch`, over --model-opt."""
    options: dict[str, Any] = dict(args.model_opt)
    if args.arch == "vit_small":
        options.setdefault("img_size", image_size)
        options.setdefault("patch_size", max(1, options["img_size"] // 8))
    entry, spec = arch_entry(args.arch), topology_spec(topology)
    for name in spec.option_names(entry.tokens):
        if name in TOPOLOGY_FLAGS:
            options[name] = getattr(args, TOPOLOGY_FLAGS[name])
    if spec.is_moe and args.moe_layers:
        options[entry.moe_option] = args.moe_layers
    return {"arch": args.arch, "topology": topology, "num_classes": num_classes, "options": options}


def train_phase(ctx: Context, phase: Phase) -> dict[str, Any]:
    """Train one phase to `phase.epochs` (or `--max-steps`); write its checkpoint, log.jsonl
    and metrics.json under `phase.out`; return the metrics."""
    args, device = ctx.args, ctx.device
    start = time.time()
    cpu_start = time.process_time()
    torch.manual_seed(args.seed)
    model = models.create(**phase.config)
    checkpoint = None
    prepared: dict[str, Any] = {}
    if phase.resume is not None:
        checkpoint = load_checkpoint(phase.resume)
        ours = model.axmoe_config
        theirs = checkpoint["config"]
        if (theirs.get("arch"), theirs.get("topology")) != (ours["arch"], ours["topology"]):
            raise CheckpointError(f"{phase.resume} is a {theirs.get('arch')}/{theirs.get('topology')} "
                                  f"checkpoint; this run trains {ours['arch']}/{ours['topology']}")
        model = models.create(**theirs)
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{phase.resume}: weights do not fit: {str(exc).splitlines()[0]}") from None
        prepared = checkpoint.get("prepared", {})
    elif phase.init_state is not None:
        model.load_state_dict(phase.init_state)
    model.to(device)
    if checkpoint is None and phase.prepare is not None:
        prepared = phase.prepare(model)

    frozen: list[nn.Module] = []
    if phase.freeze_trunk:
        frozen = model.trunk_modules()
        for param in model.trunk_parameters():
            param.requires_grad_(False)
    settings = resolve_settings(args.optimizer, args.arch, args.lr, args.weight_decay, args.momentum)
    optimizer = make_optimizer(model, settings)
    epoch, step, elapsed, cpu_elapsed = 0, 0, 0.0, 0.0
    metrics: dict[str, Any] = {}
    if checkpoint is not None:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{phase.resume}: optimizer state does not fit ({exc})") from None
        epoch, step = int(checkpoint["epoch"]), int(checkpoint["step"])
        elapsed = float(checkpoint.get("wall_time_s", 0.0))
        cpu_elapsed = float(checkpoint.get("cpu_time_s", 0.0))
        metrics = dict(checkpoint.get("metrics", {}))

    train_loader = BatchLoader(ctx.train_set, args.batch_size, train=True, seed=args.seed,
                               augment=args.augment, device=device)
    test_loader = BatchLoader(ctx.test_set, args.eval_batch_size, device=device)
    # --max-steps truncates the run without reshaping its schedule, so a truncated run
    # resumed later matches an uninterrupted one.
    total_steps = phase.epochs * len(train_loader)
    schedule = make_schedule(args.schedule, settings.lr, total_steps, args.warmup)
    log = MetricsLog(phase.out / "log.jsonl", fresh=checkpoint is None)
    if checkpoint is None:
        log.write({"event": "start", "phase": phase.name, "config": model.axmoe_config,
                   "data": ctx.train_set.config(), "device": str(device),
                   "threads": torch.get_num_threads(), "steps_per_epoch": len(train_loader),
                   "total_steps": total_steps, "optimizer": vars(settings),
                   "params": sum(p.numel() for p in model.parameters()),
                   "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)})
        if prepared:
            log.write({"event": "prepare", "phase": phase.name, **prepared})
    else:
        log.write({"event": "resume", "phase": phase.name, "epoch": epoch, "step": step})

    def save(completed: bool) -> None:
        save_checkpoint(phase.out / FILENAME, {
            "config": model.axmoe_config, "data": ctx.train_set.config(),
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "step": step, "epochs": phase.epochs, "complete": completed,
            "phase": phase.name, "args": plain_args(args), "metrics": metrics,
            "prepared": prepared, "wall_time_s": elapsed + time.time() - start,
            "cpu_time_s": cpu_elapsed + time.process_time() - cpu_start})

    stopped = False
    while epoch < phase.epochs and not stopped:
        train_loader.set_epoch(epoch)
        torch.manual_seed(seed_for(args.seed, epoch))
        desc = f"{phase.name} {epoch + 1}/{phase.epochs}"
        stats, step = train_epoch(
            model, train_loader, optimizer, schedule, step, max_steps=args.max_steps,
            label_smoothing=args.label_smoothing, frozen=frozen, progress=args.progress,
            desc=desc, log_every=args.log_every,
            on_log=lambda record: log.write({"phase": phase.name, "epoch": epoch + 1, **record}))
        stopped = args.max_steps is not None and step >= args.max_steps
        finished_epoch = stats["train_batches"] == len(train_loader)
        test = evaluate(model, test_loader, progress=args.progress, desc=f"{desc} test")
        epoch += 1 if finished_epoch else 0
        metrics = {**stats, **test, "epoch": epoch, "step": step, "lr": schedule(max(step - 1, 0))}
        log.write({"event": "epoch", "phase": phase.name, **metrics})
        save(completed=epoch >= phase.epochs)
        if args.progress:
            print(f"{desc}: train loss {stats['train_loss']:.4f} acc {stats['train_acc']:.4f}, "
                  f"test loss {test['test_loss']:.4f} acc {test['test_acc']:.4f}", flush=True)
    if not metrics:
        metrics = evaluate(model, test_loader, progress=args.progress)
    result = {"phase": phase.name, "test_acc": metrics["test_acc"], "test_loss": metrics["test_loss"],
              "test_samples": metrics["test_samples"], "epochs": epoch, "steps": step,
              "wall_time_s": round(elapsed + time.time() - start, 3),
              "cpu_time_s": round(cpu_elapsed + time.process_time() - cpu_start, 3), "device": str(device),
              "threads": torch.get_num_threads(), "config": model.axmoe_config,
              "data": ctx.train_set.config(), "params": sum(p.numel() for p in model.parameters()),
              "last_epoch": metrics, **({"prepared": prepared} if prepared else {}), **phase.extra}
    log.write({"event": "final", **{k: v for k, v in result.items() if k not in ("config", "data", "last_epoch")}})
    write_json(phase.out / "metrics.json", result)
    return result


def _auto_resume(args: argparse.Namespace, out: Path, required: bool) -> Path | None:
    if args.resume != "auto":
        return None
    if (out / FILENAME).is_file():
        return out / FILENAME
    if required:
        raise CheckpointError(f"--resume: no checkpoint in {out} to continue from")
    return None


def run_cluster(ctx: Context, num_classes: int) -> dict[str, Any]:
    """Phase 1 (dense trunk) in DIR/dense, then k-means and phase 2 (experts) in DIR, for
    `args.topology` (a topology with `dense_trunk_init`)."""
    args = ctx.args
    out = Path(args.out)
    size = ctx.train_set.size
    dense_config = model_config(args, "dense", size, num_classes)
    cluster_config = model_config(args, args.topology, size, num_classes)
    dense_resume = _auto_resume(args, out / "dense", required=False)
    expert_resume = _auto_resume(args, out, required=False)
    if args.resume not in (None, "auto"):
        explicit = resolve(args.resume)
        kind = load_checkpoint(explicit).get("phase")
        if kind == "experts":
            expert_resume = explicit
        elif kind == "dense":
            dense_resume = explicit
        else:
            raise CheckpointError(f"{explicit}: not a cluster-MoE phase checkpoint (phase {kind!r})")

    dense_metrics: dict[str, Any] = {}
    if (out / "dense" / "metrics.json").is_file():
        dense_metrics = json.loads((out / "dense" / "metrics.json").read_text())
    init_state = None
    if expert_resume is None:
        if args.init_from is not None:
            trunk = load_checkpoint(args.init_from)
            if trunk["config"].get("topology") != "dense" or trunk["config"].get("arch") != args.arch:
                raise CheckpointError(f"--init-from {args.init_from}: need a dense {args.arch} checkpoint, "
                                      f"got {trunk['config'].get('arch')}/{trunk['config'].get('topology')}")
            dense_state = trunk["state_dict"]
            dense_metrics = {"init_from": str(args.init_from), **trunk.get("metrics", {})}
        else:
            dense_phase = Phase("dense", out / "dense", dense_config, args.dense_epochs or args.epochs,
                                resume=dense_resume)
            dense_metrics = train_phase(ctx, dense_phase)
            dense_state = load_checkpoint(out / "dense")["state_dict"]
        try:
            init_state = upcycle_state_dict(models.create(**cluster_config), dense_state)
        except ValueError as exc:
            raise CheckpointError(f"dense weights do not fit the cluster model: {exc}") from None

    kmeans_loader = BatchLoader(ctx.train_set, args.eval_batch_size, device=ctx.device)
    phase = Phase("experts", out, cluster_config, args.epochs, resume=expert_resume,
                  init_state=init_state, freeze_trunk=args.freeze_trunk,
                  prepare=lambda model: {"kmeans": fit_centroids(model, kmeans_loader, args.kmeans_samples,
                                                                 seed=args.seed)},
                  extra={"dense_phase": {k: v for k, v in dense_metrics.items()
                                         if k in ("test_acc", "test_loss", "epochs", "steps",
                                                  "wall_time_s", "init_from")}})
    return train_phase(ctx, phase)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train as the parsed command line says; returns the final metrics (also in
    DIR/metrics.json)."""
    device = resolve_device(args.device, args.threads)
    spec = dataset_spec(args.dataset)
    size = args.image_size or spec.size
    if args.arch.startswith("vgg") and size < 32:
        raise UsageError(f"--image-size {size}: VGG's five poolings need at least 32x32 inputs")
    train_set = load_dataset(spec.name, "train", size, args.data_dir, args.limit_train)
    test_set = load_dataset(spec.name, "test", size, args.data_dir, args.limit_test)
    if len(train_set) == 0 or len(test_set) == 0:
        raise UsageError(f"{spec.name}: empty split after limits")
    ctx = Context(args, device, train_set, test_set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if topology_spec(args.topology).dense_trunk_init:
        return run_cluster(ctx, spec.num_classes)
    config = model_config(args, args.topology, size, spec.num_classes)
    models.create(**config)  # fail fast on a bad option, before any data work
    init_state = None
    resume = _auto_resume(args, out, required=True) if args.resume == "auto" else \
        (resolve(args.resume) if args.resume else None)
    if args.init_from is not None and resume is None:
        source = load_checkpoint(args.init_from)
        if source["config"].get("arch") != args.arch or source["config"].get("topology") != "dense":
            raise CheckpointError(f"--init-from {args.init_from}: need a dense {args.arch} checkpoint, "
                                  f"got {source['config'].get('arch')}/{source['config'].get('topology')}")
        try:
            init_state = upcycle_state_dict(models.create(**config), source["state_dict"])
        except ValueError as exc:
            raise CheckpointError(f"--init-from {args.init_from}: {exc}") from None
    return train_phase(ctx, Phase("train", out, config, args.epochs, resume=resume, init_state=init_state))
