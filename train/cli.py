"""Entry point of `python -m train`: parse, run, and turn user mistakes into one-line errors."""

from __future__ import annotations

import sys
from typing import Sequence

from models.config import ModelConfigError
from models.data import DatasetFormatError, DatasetNotFoundError
from models.datasets import UnknownDatasetError
from train.args import UsageError, parse_args
from train.checkpoint import CheckpointError

#: errors caused by the command line or the files it names, reported without a traceback
USER_ERRORS = (UsageError, ModelConfigError, UnknownDatasetError, DatasetNotFoundError,
               DatasetFormatError, CheckpointError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--retrain-approx" in argv:  # approximate-aware retraining has its own options
        from train.retrain_cli import main as retrain_main

        raise SystemExit(retrain_main(argv))
    from train.run import run
    try:
        args = parse_args(argv)
        metrics = run(args)
    except USER_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"test accuracy {metrics['test_acc']:.4f} ({metrics['test_samples']} images), "
          f"{metrics['steps']} steps in {metrics['wall_time_s']:.1f} s -> {args.out}/metrics.json")
    return 0
