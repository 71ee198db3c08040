"""Entry point of `python -m eval`: `run` (one model) or `sweep` (a YAML study)."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Sequence

USAGE = ("usage: python -m eval run MODEL.onnx [--dataset NAME] [--backend ort|tvm] [--threads N] "
         "[--batch B] [--limit N] [--json OUT]\n"
         "       python -m eval sweep CONFIG.yaml [--executor local|ray] [--workers N] [--address ADDR] "
         "[--rerun-stale]")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if command == "run":
        from eval import run_args
        from eval.run import run
        parse, execute = run_args, run
    elif command == "sweep":
        from eval import sweep_args
        from eval.sweep import run
        parse, execute = sweep_args, run
    else:
        print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    args = parse.create_args_parser().parse_args(rest)
    parse.validate(args)
    try:
        result = execute(args)
    except USER_ERRORS() as exc:
        print(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # the sweep's workers are stopped by then (eval.sweep.execute)
        terminated = type(exc).__name__ == "Terminated"
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    return 1 if isinstance(result, dict) and result.get("failed") else 0


def USER_ERRORS() -> tuple[type[BaseException], ...]:  # noqa: N802 (a constant, computed lazily)
    from eval.backends import BackendError
    from eval.evaluate import EvaluationError
    from modelfile.metadata import MetadataError
    from models.data import DatasetFormatError, DatasetNotFoundError
    from models.datasets import UnknownDatasetError
    from multipliers import UnknownMultiplierError

    errors: list[type[BaseException]] = [BackendError, EvaluationError, DatasetNotFoundError, DatasetFormatError,
                                         UnknownDatasetError, UnknownMultiplierError, MetadataError]
    try:
        from eval.executors import ExecutorError
        from eval.locks import LockError
        from eval.sweep_config import SweepConfigError
        errors += [ExecutorError, LockError, SweepConfigError]
    except ImportError:
        pass
    return tuple(errors)
