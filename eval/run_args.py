"""Command line of `python -m eval run`: `create_args_parser()` and `validate(args)`."""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.backends import BACKENDS


def create_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval run",
        description="Evaluate an ONNX model (int8, or rewritten by passes.approximate) on real data: "
                    "top-1/top-5, latency, normalised power under the model's actual routing, and "
                    "expert load per MoE layer.",
        epilog="example: python -m eval run out/r20-hard.1L2L.onnx --dataset fashion-mnist --json r.json")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--dataset", help="evaluation data (default: the model's axmoe.dataset metadata)")
    p.add_argument("--data-dir", type=Path, help="dataset root (default: $AXMOE_DATA_DIR or .cache/datasets)")
    p.add_argument("--backend", choices=list(BACKENDS), default="ort", help="what runs the model (default: ort)")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: all cores)")
    p.add_argument("--batch", type=int, default=64, metavar="B", help="images per run (default: 64)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N test images only")
    p.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed warm-up runs (default: 2)")
    p.add_argument("--dense-macs", type=float, metavar="MACS",
                   help="MACs per image of the dense reference model, e.g. the 'active MACs/image' of the "
                        "dense model's own eval run (default: inferred from the graph: trunk + one expert "
                        "per MoE layer, which undercounts a ViT Soft MoE's dense MLP)")
    p.add_argument("--json", metavar="OUT.json", help="write the full result (per-layer MACs included)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def validate(args: argparse.Namespace) -> None:
    for flag, value in (("--threads", args.threads), ("--batch", args.batch), ("--limit", args.limit),
                        ("--dense-macs", args.dense_macs)):
        if value is not None and not value > 0:
            raise SystemExit(f"error: {flag} must be positive, got {value}")
    if args.warmup < 0:
        raise SystemExit("error: --warmup must be >= 0")
