"""`python -m eval run MODEL.onnx`: `run(args)` evaluates one model and prints a summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eval.evaluate import EvaluationError, data_config, evaluate, load_model


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models.datasets import load_dataset

    model = load_model(args.model)
    data = data_config(model, args.dataset)
    test = load_dataset(data["dataset"], "test", image_size=int(data.get("image_size", 32)),
                        root=args.data_dir, limit=args.limit)
    result = evaluate(args.model, test.images, test.labels.numpy(), data, backend=args.backend,
                      threads=args.threads, batch=args.batch, warmup=args.warmup, progress=args.progress,
                      dense_macs_per_image=args.dense_macs)
    print(format_summary(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def format_summary(result: dict[str, Any]) -> str:
    info = result["model_info"]
    lat = result["latency"]
    power = result["power"]
    what = "/".join(str(v) for v in (info.get("arch"), info.get("topology")) if v) or "model"
    mults = ", ".join(info["multipliers"]) or "none (int8 as exported)"
    norm = result["normalised_power"]
    lines = [
        f"{result['model']}: {what}, multipliers {mults}",
        f"  accuracy   top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  "
        f"({result['images']} {result['dataset']} test images)",
        f"  latency    {result['backend']}, batch {lat['batch']}, threads {result['threads'] or 'default'}: "
        f"p50 {lat['p50_ms']:.2f} ms  p90 {lat['p90_ms']:.2f} ms  {lat['images_per_s']:.0f} images/s",
        f"  power      normalised {norm:.4f}" if norm is not None else
        f"  power      unknown (no published power for {', '.join(power['unknown_power'])})",
        f"             {power['active_macs_per_image'] / 1e6:.3f} M active MACs/image "
        f"(dense reference {power['dense_macs_per_image'] / 1e6:.3f} M)",
    ]
    for name, load in result["expert_load"].items():
        shares = " ".join(f"{100 * s:.1f}%" for s in load["share"])
        lines.append(f"  load {name}: rows {load['rows']} ({shares})")
    if result["agreement"] < 1.0:
        lines.append(f"  note: the instrumented copy agreed with {result['backend']} on "
                     f"{100 * result['agreement']:.2f} % of images")
    return "\n".join(lines)


__all__ = ["run", "format_summary", "EvaluationError"]
