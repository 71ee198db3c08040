"""`python -m train --retrain-approx ...`: approximate-aware retraining (see train.retrain)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Sequence


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
    p.add_argument("--max-steps", type=int, help="stop after N steps (smoke runs)")
    p.add_argument("--int8", metavar="MODEL.onnx", help="use this int8 model's scales instead of exporting")
    p.add_argument("--calib-samples", type=int, default=512, help="calibration images when exporting (default 512)")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda")
    return p


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
        if args.epochs <= 0 or args.batch_size <= 0:
            raise RetrainError("--epochs and --batch-size must be positive")
        plan = dict(load_plan(args.plan).source) if args.plan else {"multiplier": args.multiplier}
        metrics = retrain_approx(args.checkpoint, plan, args.out, dataset=args.dataset, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                                 weight_decay=args.weight_decay,
                                 max_steps=args.max_steps, int8_model=args.int8, calib_samples=args.calib_samples,
                                 eval_limit=args.eval_limit, seed=args.seed, device=args.device)
    except (RetrainError, PlanError, CheckpointError, ExportError, UnknownDatasetError, DatasetNotFoundError,
            FileNotFoundError) as exc:
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"top-1 with {plan.get('multiplier', 'the plan')}: before {metrics['before_top1']:.4f} -> after "
          f"{metrics['after_top1']:.4f} ({metrics['test_images']} test images, {metrics['steps']} steps, "
          f"{metrics['wall_time_s']:.0f} s); emulation agrees with onnxruntime on "
          f"{100 * metrics['emulation_same_class']:.2f} % -> {args.out}/metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
