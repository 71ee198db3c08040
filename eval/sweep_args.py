"""Command line of `python -m eval sweep`: `create_args_parser()` and `validate(args)`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.executors import EXECUTORS

DEPRECATED_BACKEND = ("warning: eval sweep --backend is deprecated and will be removed in the next release: "
                      "use --executor (a sweep's runtime, ort|tvm, is its config's backends: list)")


class _DeprecatedExecutorAlias(argparse._StoreAction):
    """--backend: stores into --executor's dest, after a one-line warning on stderr."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(DEPRECATED_BACKEND, file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval sweep",
        description="Run a study: every cell (arch, topology, multiplier, retrained, backend) of a YAML config is "
                    "trained, exported, rewritten and evaluated through the commands' own code, cached per "
                    "cell by config hash (an interrupted sweep resumes; a finished one re-renders at once; a "
                    "corrupt job folder is rerun), and summarised in results.csv/json and a report with plots.",
        epilog="example: python -m eval sweep configs/demo.yaml --workers 2")
    p.add_argument("config", type=Path, metavar="CONFIG.yaml", help="sweep definition (see eval.sweep_config)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where jobs run: local, a process pool (default); ray, Ray tasks on a cluster (--address)")
    p.add_argument("--backend", dest="executor", choices=EXECUTORS, action=_DeprecatedExecutorAlias,
                   help="deprecated alias of --executor")
    p.add_argument("--workers", type=int, metavar="N",
                   help="jobs at once (default: the config's workers, else the number of cores)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads per job (default: the config's threads, else cores / workers)")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join, e.g. 127.0.0.1:6379 or ray://host:10001 (default: a local "
                        "Ray instance of --workers CPUs)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: the config's out)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and whether they are cached; run nothing")
    p.add_argument("--report-only", action="store_true", help="render the report from cached cells; run nothing")
    p.add_argument("--rerun-stale", action="store_true",
                   help="rerun the jobs whose results were made by other code (package version, git commit and "
                        "uncommitted changes, custom-op library: eval.identity); without it they are reused and "
                        "the report says the sweep mixes code versions")
    return p


def validate(args: argparse.Namespace) -> None:
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value <= 0:
            raise SystemExit(f"error: {flag} must be positive, got {value}")
    if args.address and args.executor != "ray":
        raise SystemExit("error: --address needs --executor ray")
