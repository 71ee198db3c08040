"""Command line of `python -m train`: `create_args_parser()` and `validate(args)`.

A `--config FILE.yaml` mapping of option names (dest spelling, e.g. `batch_size: 256`) sets
defaults that explicit flags still override.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from models.config import suggest
from models.gating import AUX_LOSS_WEIGHT
from models.registry import list_archs, list_topologies

ARCHS = tuple(list_archs())
TOPOLOGIES = tuple(list_topologies())
SCHEDULES = ("onecycle", "cosine", "step", "constant")


class UsageError(ValueError):
    """A command-line mistake; printed as one line, without a traceback."""


def _model_opt(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a dense or MoE model (ResNet-20, VGG11/19_bn, ViT-Small) and write "
                    "DIR/checkpoint.pt, DIR/log.jsonl and DIR/metrics.json (see `train` docs).",
        epilog="example: python -m train --arch resnet20 --topology hard --dataset fashion-mnist "
               "--epochs 8 --out runs/r20-hard. Approximate-aware retraining of a trained model: "
               "python -m train --retrain-approx --from CKPT --multiplier NAME|--plan PLAN.yaml --out DIR "
               "(see python -m train --retrain-approx --help).")
    g = p.add_argument_group("model")
    g.add_argument("--arch", metavar="ARCH",
                   help=f"architecture: {', '.join(ARCHS)} (required)")
    g.add_argument("--topology", default="dense", metavar="TOPOLOGY",
                   help=f"{', '.join(TOPOLOGIES)} (default: dense). cluster runs the two-phase "
                        "recipe: dense trunk, k-means on pooled features, experts from the trunk")
    g.add_argument("--experts", type=int, default=4, metavar="E",
                   help="experts per MoE layer (default: 4)")
    g.add_argument("--top-k", type=int, default=1, metavar="K",
                   help="experts each input runs through, hard MoE (default: 1)")
    g.add_argument("--aux-loss-weight", type=float, default=AUX_LOSS_WEIGHT, metavar="ALPHA",
                   help=f"weight of the Switch balancing loss, hard MoE (default: {AUX_LOSS_WEIGHT}; Switch "
                        "used 0.01 for tokens, too weak for per-image routing)")
    g.add_argument("--no-noisy-gating", dest="noisy_gating", action="store_false",
                   help="hard MoE: no Gaussian gate noise while training")
    g.add_argument("--slots", type=int, default=1, metavar="P",
                   help="Soft MoE slots per expert, ViT only (default: 1)")
    g.add_argument("--moe-layers", type=_int_list, default=None, metavar="I,J",
                   help="which stages (CNN: 0..2 ResNet, 0..4 VGG) or blocks (ViT) become MoE "
                        "layers (default: the last stage; every second ViT block)")
    g.add_argument("--model-opt", type=_model_opt, action="append", default=[], metavar="KEY=VALUE",
                   help="any other arch option, repeatable, e.g. width=8, embed_dim=192, depth=6, "
                        "patch_size=8 (see models.list_options)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="fashion-mnist", metavar="NAME",
                   help="fashion-mnist (default, real data shipped by Debian), cifar100 (python "
                        "pickles), tiny-imagenet (folder format)")
    d.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="folder holding the dataset (default: $AXMOE_DATA_DIR or .cache/datasets)")
    d.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="side the model sees (default: 32 for fashion-mnist and cifar100, "
                        "64 for tiny-imagenet)")
    d.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop / flip while training")
    d.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="use only the first N training images")
    d.add_argument("--limit-test", type=int, default=None, metavar="N",
                   help="evaluate on only the first N test images")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=10, metavar="N",
                   help="training epochs (cluster: of the expert phase) (default: 10)")
    o.add_argument("--batch-size", type=int, default=128, metavar="B", help="default: 128")
    o.add_argument("--optimizer", choices=("auto", "sgd", "adamw"), default="auto",
                   help="auto: SGD + Nesterov momentum for CNNs, AdamW for ViT")
    o.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="peak learning rate (default: 0.1 SGD, 1e-3 AdamW)")
    o.add_argument("--momentum", type=float, default=0.9, metavar="M", help="SGD momentum (default: 0.9)")
    o.add_argument("--weight-decay", type=float, default=None, metavar="WD",
                   help="decoupled for AdamW; not applied to biases and norms "
                        "(default: 5e-4 SGD, 0.05 AdamW)")
    o.add_argument("--schedule", choices=SCHEDULES, default="onecycle",
                   help="learning-rate schedule per step: onecycle (warm up, cosine down), cosine "
                        "(warm up, cosine to 0), step (x0.1 at 50%% and 75%%), constant "
                        "(default: onecycle)")
    o.add_argument("--warmup", type=float, default=0.15, metavar="FRAC",
                   help="fraction of the steps spent warming up (onecycle, cosine) (default: 0.15)")
    o.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS", help="default: 0")
    o.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after N optimiser steps (per phase), then evaluate and save; the "
                        "schedule still spans --epochs, so --resume can continue: smoke runs")
    o.add_argument("--seed", type=int, default=0, help="seeds weights, data order, augmentation, "
                                                       "gate noise (default: 0)")
    c = p.add_argument_group("cluster MoE")
    c.add_argument("--dense-epochs", type=int, default=None, metavar="N",
                   help="epochs of the dense phase (default: --epochs)")
    c.add_argument("--kmeans-samples", type=int, default=10000, metavar="N",
                   help="training images whose pooled features k-means clusters (default: 10000)")
    c.add_argument("--train-trunk", dest="freeze_trunk", action="store_false",
                   help="also train the layers before the first MoE layer in the expert phase "
                        "(default: frozen, so the routing stays that of the fitted centroids)")
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder: checkpoint.pt, log.jsonl, metrics.json (required)")
    r.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="continue from a checkpoint (file or folder); without PATH, from --out")
    r.add_argument("--init-from", type=Path, default=None, metavar="PATH",
                   help="start from a dense checkpoint of the same arch (MoE: experts copied "
                        "from it; cluster: it is the trunk and the dense phase is skipped)")
    r.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (CUDA when present, else CPU with all cores), cpu, cuda, cuda:N")
    r.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads (default: all cores available to this process)")
    r.add_argument("--eval-batch-size", type=int, default=512, metavar="B", help="default: 512")
    r.add_argument("--log-every", type=int, default=50, metavar="N",
                   help="also log training loss every N steps (default: 50; 0: per epoch only)")
    r.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    r.add_argument("--config", type=Path, default=None, metavar="YAML",
                   help="YAML mapping of option defaults (keys as above with underscores)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, applying `--config` defaults first; raises `UsageError` for bad values."""
    parser = create_args_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"--config {args.config}: {exc}".splitlines()[0]) from exc
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {args.config}: expected a mapping of option names")
        known = {a.dest for a in parser._actions}
        for key in loaded:
            if key.replace("-", "_") not in known:
                raise UsageError(f"--config {args.config}: unknown option {key!r}"
                                 f"{suggest(key, known)}")
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in loaded.items()})
        args = parser.parse_args(argv)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    """Check values argparse cannot; raise `UsageError` with a one-line message."""
    if args.arch is None:
        raise UsageError(f"--arch is required (valid: {', '.join(ARCHS)})")
    if args.arch not in ARCHS:
        raise UsageError(f"unknown arch {args.arch!r}{suggest(args.arch, ARCHS)} "
                         f"(valid: {', '.join(ARCHS)})")
    if args.out is None:
        raise UsageError("--out DIR is required")
    if args.topology not in TOPOLOGIES:
        raise UsageError(f"unknown topology {args.topology!r}{suggest(args.topology, TOPOLOGIES)} "
                         f"(valid: {', '.join(TOPOLOGIES)})")
    positive = {"--epochs": args.epochs, "--batch-size": args.batch_size, "--experts": args.experts,
                "--top-k": args.top_k, "--slots": args.slots, "--eval-batch-size": args.eval_batch_size,
                "--kmeans-samples": args.kmeans_samples}
    optional_positive = {"--max-steps": args.max_steps, "--image-size": args.image_size,
                         "--limit-train": args.limit_train, "--limit-test": args.limit_test,
                         "--threads": args.threads, "--dense-epochs": args.dense_epochs,
                         "--lr": args.lr}
    for flag, value in {**positive, **{k: v for k, v in optional_positive.items() if v is not None}}.items():
        if not value > 0:
            raise UsageError(f"{flag} must be > 0, got {value}")
    if args.top_k > args.experts:
        raise UsageError(f"--top-k {args.top_k} exceeds --experts {args.experts}")
    if not 0 <= args.warmup < 1:
        raise UsageError(f"--warmup must be in [0, 1), got {args.warmup}")
    if args.weight_decay is not None and args.weight_decay < 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if not 0 <= args.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.log_every < 0:
        raise UsageError(f"--log-every must be >= 0, got {args.log_every}")


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments as JSON types (paths as strings), for logs and checkpoints."""
    return json.loads(json.dumps(vars(args), default=str))
