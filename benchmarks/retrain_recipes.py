"""Retraining recipes at equal steps: gradient (ste | lut) x distillation (off | on) x router
(on | off), on ResNet-20 dense and hard MoE, under 1L2L, 1L2N, 1KX5.

    python benchmarks/retrain_recipes.py --steps 300 [--dense CKPT] [--hard DIR] [--eval-limit N]
    python benchmarks/retrain_recipes.py --smoke        # 2 steps, 64 test images, one cell per axis

Each cell is one `train.retrain.retrain_approx` run (same seed, steps, lr, batch): top-1 of the
deployed (onnxruntime) model before and after, the emulation agreement, and for the hard MoE the
max expert share (exact int8, before, after). Router on/off only varies for the hard MoE.
Results: benchmarks/results/retrain_recipes.{json,md}; each run's folder under --work.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.retrain import retrain_approx  # noqa: E402

MULTIPLIERS = ("mul8s_1L2L", "mul8s_1L2N", "mul8s_1KX5")
DENSE = ROOT / "benchmarks/results/checkpoints/resnet20_dense_fashion_mnist.pt"
HARD = ROOT / ".cache/bench/train_fashion_mnist/hard"


def cells(models: dict[str, Path], smoke: bool):
    for (topology, ckpt), mult, gradient, distill, router in itertools.product(
            models.items(), MULTIPLIERS, ("ste", "lut"), (False, True), (True, False)):
        if topology == "dense" and not router:
            continue  # no router to freeze
        if smoke and (mult != MULTIPLIERS[0] or (gradient, distill, router) not in
                      {("ste", False, True), ("lut", False, True), ("ste", True, True), ("ste", False, False)}):
            continue
        yield {"topology": topology, "checkpoint": str(ckpt), "multiplier": mult, "gradient": gradient,
               "distill": distill, "router": router}


def markdown(rows: list[dict]) -> str:
    head = ("| topology | multiplier | gradient | distill | router | before | after | same class | "
            "max share exact / before / after | s |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        share = r.get("max_expert_share")
        share_text = " / ".join(f"{max(share[k].values()):.3f}" for k in ("exact", "before", "after")) if share else ""
        lines.append(f"| {r['topology']} | {r['multiplier']} | {r['gradient']} | {r['distill']} | {r['router']} | "
                     f"{r['before_top1']:.4f} | {r['after_top1']:.4f} | {r['emulation_same_class']:.4f} | "
                     f"{share_text} | {r['wall_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dense", default=str(DENSE), help="dense ResNet-20 checkpoint")
    p.add_argument("--hard", default=str(HARD), help="hard MoE ResNet-20 checkpoint (dir or .pt)")
    p.add_argument("--steps", type=int, default=300, help="retraining steps of every cell (default 300)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--eval-limit", type=int, help="first N test images only")
    p.add_argument("--val-limit", type=int, default=1000, help="validation images (default 1000)")
    p.add_argument("--work", default=str(ROOT / ".cache/bench/retrain_recipes"), help="run folders")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"), help="results folder")
    p.add_argument("--smoke", action="store_true", help="2 steps, 64 test images, a few cells")
    args = p.parse_args(argv)
    models = {name: Path(path) for name, path in (("dense", args.dense), ("hard", args.hard)) if Path(path).exists()}
    if not models:
        print("error: neither checkpoint exists (--dense, --hard)", file=sys.stderr)
        return 2
    steps, limit = (2, 64) if args.smoke else (args.steps, args.eval_limit)
    rows = []
    for cell in cells(models, args.smoke):
        tag = "_".join(str(cell[k]) for k in ("topology", "multiplier", "gradient", "distill", "router"))
        start = time.time()
        m = retrain_approx(cell["checkpoint"], {"multiplier": cell["multiplier"]}, Path(args.work) / tag,
                           max_steps=steps, batch_size=args.batch_size, lr=args.lr, eval_limit=limit,
                           val_limit=64 if args.smoke else args.val_limit, progress=False,
                           gradient=cell["gradient"], distill=2.0 if cell["distill"] else None,
                           router=cell["router"], calib_samples=64 if args.smoke else 512)
        rows.append({**cell, **{k: m[k] for k in ("before_top1", "after_top1", "emulation_same_class", "val_top1",
                                                  "steps", "max_expert_share")}, "wall_time_s": time.time() - start})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.work) if args.smoke else Path(args.out)  # a smoke run leaves the results alone
    name = "retrain_recipes"
    (out / f"{name}.json").write_text(json.dumps({"steps": steps, "batch_size": args.batch_size, "lr": args.lr,
                                                  "eval_limit": limit, "rows": rows}, indent=2))
    (out / f"{name}.md").write_text(f"Retraining recipes, {steps} steps each (batch {args.batch_size}, lr {args.lr})"
                                    f"; top-1 in onnxruntime\n\n" + markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
