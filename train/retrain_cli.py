"""`python -m train --retrain-approx ...`: approximate-aware retraining (see train.retrain)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Sequence

from export.emulation import METHODS
from multipliers.gradients import GRADIENTS
from train.retrain import CHECKPOINT_EVERY, DISTILL_TEMPERATURE, DISTILL_WEIGHT, VAL_FRACTION
from train.retrain_state import STATE_FILE


def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train --retrain-approx",
        description="Retrain a model so it recovers under an approximate multiplier, bit-exactly "
                    "with the deployed int8 graph (export -> approximation pass -> PyTorch emulation "
                    "of that graph -> requantize with the same scales -> pass again).")
    p.add_argument("--retrain-approx", action="store_true", required=True, help="select this mode")
    p.add_argument("--from", dest="checkpoint", required=True, metavar="CKPT",
                   help="trained checkpoint (directory or .pt) to start from")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--multiplier", metavar="NAME", help="one multiplier for every approximable op")
    which.add_argument("--plan", metavar="PLAN.yaml", help="per-layer / per-expert plan (passes.plan)")
    p.add_argument("--dataset", help="training data (default: the checkpoint's dataset)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of retraining (default 1; fractions allowed)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--lr", type=float, default=1e-4, help="initial learning rate, cosine to 0 (default 1e-4)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="default adam")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default 0)")
    p.add_argument("--max-steps", type=int, metavar="N", help="train N steps (instead of --epochs)")
    p.add_argument("--int8", metavar="MODEL.onnx", help="use this int8 model's scales instead of exporting")
    p.add_argument("--calib-samples", type=int, default=512, help="calibration images when exporting (default 512)")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only")
    p.add_argument("--seed", type=int, default=0, help="seeds the batches and the validation split (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda")
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder root (default: models.data.data_root())")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g = p.add_argument_group("estimator and MoE routing")
    g.add_argument("--gradient", choices=GRADIENTS, default="ste",
                   help="backward pass of the approximate products: ste (straight-through of the exact product) "
                        "or lut (multipliers.gradients); default ste")
    g.add_argument("--method", choices=METHODS, default="auto",
                   help="emulation products: auto, decomposed, lut (torch) or kernel (axmoe's C++ ops); default auto")
    g.add_argument("--no-router", dest="router", action="store_false",
                   help="freeze MoE routers and drop the balancing loss (default: routers train with the "
                        "topology's balancing loss; Cluster MoE centroids never train)")
    g = p.add_argument_group("distillation from the exact int8 model")
    g.add_argument("--distill", nargs="?", type=float, const=DISTILL_TEMPERATURE, metavar="T",
                   help=f"loss (1-lam) CE + lam T^2 KL(teacher/T || student/T) with the exact int8 model "
                        f"(onnxruntime) as teacher; T default {DISTILL_TEMPERATURE}")
    g.add_argument("--distill-weight", type=float, default=DISTILL_WEIGHT, metavar="LAM",
                   help=f"lam of --distill, in [0, 1] (default {DISTILL_WEIGHT})")
    g = p.add_argument_group("budgets, validation, resuming")
    g.add_argument("--max-minutes", type=float, metavar="M",
                   help="stop after M minutes of training (summed over resumes); the state is saved")
    g.add_argument("--val-fraction", type=float, default=VAL_FRACTION, metavar="F",
                   help=f"share of the TRAIN split held out for validation, seeded (default {VAL_FRACTION})")
    g.add_argument("--val-limit", type=int, metavar="N", help="validate on the first N held-out images only")
    g.add_argument("--eval-every", type=int, metavar="N",
                   help="validate (emulation top-1) every N steps, keep the best weights (default: at the end only)")
    g.add_argument("--patience", type=int, metavar="K",
                   help="stop after K validations without improvement (needs --eval-every)")
    g.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY, metavar="N",
                   help=f"save DIR/retrain_state.pt every N steps (default {CHECKPOINT_EVERY}); a kill loses "
                        f"at most N steps")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from DIR/retrain_state.pt")
    return p


def validate(args: argparse.Namespace) -> None:
    """One-line errors for option combinations argparse cannot check."""
    from train.retrain import RetrainError

    if args.epochs <= 0 or args.batch_size <= 0:
        raise RetrainError("--epochs and --batch-size must be positive")
    if not 0 < args.val_fraction < 1:
        raise RetrainError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.patience is not None and args.eval_every is None:
        raise RetrainError("--patience needs --eval-every")
    if not 0 <= args.distill_weight <= 1:
        raise RetrainError(f"--distill-weight must be in [0, 1], got {args.distill_weight}")
    for flag in ("max_steps", "eval_every", "patience", "checkpoint_every", "val_limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise RetrainError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise RetrainError(f"--max-minutes must be > 0, got {args.max_minutes}")
    if args.distill is not None and args.distill <= 0:
        raise RetrainError(f"--distill temperature must be > 0, got {args.distill}")
    if args.resume and not (Path(args.out) / STATE_FILE).is_file():
        raise RetrainError(f"--resume: nothing to resume in {args.out} (no {STATE_FILE})")


def main(argv: Sequence[str] | None = None) -> int:
    from export.checkpoint import CheckpointError
    from export.exporter import ExportError
    from models.data import DatasetNotFoundError
    from models.datasets import UnknownDatasetError
    from passes.plan import PlanError, load_plan
    from train.retrain import RetrainError, retrain_approx

    args = create_args_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        validate(args)
        plan = dict(load_plan(args.plan).source) if args.plan else {"multiplier": args.multiplier}
        metrics = retrain_approx(args.checkpoint, plan, args.out, dataset=args.dataset, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                                 weight_decay=args.weight_decay,
                                 max_steps=args.max_steps, int8_model=args.int8, calib_samples=args.calib_samples,
                                 eval_limit=args.eval_limit, seed=args.seed, device=args.device,
                                 progress=args.progress, gradient=args.gradient, method=args.method,
                                 router=args.router, distill=args.distill, distill_weight=args.distill_weight,
                                 max_minutes=args.max_minutes, val_fraction=args.val_fraction, val_limit=args.val_limit,
                                 eval_every=args.eval_every, patience=args.patience,
                                 checkpoint_every=args.checkpoint_every, resume=args.resume,
                                 data_root=args.data_dir)
    except (RetrainError, PlanError, CheckpointError, ExportError, UnknownDatasetError, DatasetNotFoundError,
            FileNotFoundError) as exc:
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; continue with --resume (state every {args.checkpoint_every} steps in "
              f"{args.out}/{STATE_FILE})", file=sys.stderr)
        return 130
    print(f"top-1 with {plan.get('multiplier', 'the plan')}: before {metrics['before_top1']:.4f} -> after "
          f"{metrics['after_top1']:.4f} ({metrics['test_images']} test images, {metrics['steps']} steps, "
          f"{metrics['wall_time_s']:.0f} s); emulation agrees with onnxruntime on "
          f"{100 * metrics['emulation_same_class']:.2f} % -> {args.out}/metrics.json")
    share = metrics.get("max_expert_share")
    if share:
        for layer, value in share["after"].items():
            print(f"  {layer}: max expert share {share['exact'][layer]:.3f} exact int8, {share['before'][layer]:.3f} "
                  f"before -> {value:.3f} after (onnxruntime)")
    if metrics["emulation_same_class"] != 1.0:
        print(f"error: the emulation disagrees with onnxruntime on test images {metrics['emulation_differs_on']}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
