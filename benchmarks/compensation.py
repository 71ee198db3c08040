"""Error compensation without retraining (passes.compensate): top-1 per multiplier and mode.

    for t in dense hard; do
        python -m export.to_onnx --checkpoint benchmarks/results/checkpoints/resnet20_${t}_fashion_mnist.pt \
            --out /tmp/comp/r20_$t.onnx
        AXMOE_DATA_DIR=.cache/datasets python benchmarks/compensation.py /tmp/comp/r20_$t.onnx \
            --calibration 512 --limit 10000 --multipliers $(every mul8s_ name of the catalog) \
            --out benchmarks/results/compensation_resnet20_$t
    done

(the checkpoints come from benchmarks/train_fashion_mnist.py). A run resumes from the .json
of an interrupted one with the same setup and writes it cell by cell.
Calibration: the first N images of the model's dataset, *train* split (`calibration_images`),
statistics from the exact int8 model (`passes.calibration.collect`; for `linear` also
`--pixels` sampled receptive fields per op, default `LINEAR_PIXELS`). Evaluation: the first
`--limit` test images, top-1 of the compensated model rewritten by the approximation pass
(uniform assignment, auto lowering), run in onnxruntime with the axmoe op library. Writes
OUT.json and OUT.md (--out stem): the table, and the lowest normalised power within 1 point of
the exact int8 model for each mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

import multipliers
from modelfile import metadata
from models.datasets import load_dataset, preprocess
from passes.approximate import approximate
from passes.calibration import LINEAR_PIXELS, calibration_images, collect
from passes.compensate import MODES, compensate, uniform_assignment
from runtime.ort import session

MULTIPLIERS = ["mul8s_1KVA", "mul8s_1KVP", "mul8s_1L2J", "mul8s_1L2L", "mul8s_1KX5", "mul8s_1L2N"]
RESULTS = Path(__file__).resolve().parent / "results"


def top1(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray, threads: int, batch: int = 250) -> float:
    sess = session(model.SerializeToString(), threads=threads)
    name = sess.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), batch):
        logits = sess.run(None, {name: x[start:start + batch]})[0]
        correct += int((logits.argmax(axis=1) == labels[start:start + batch]).sum())
    return 100.0 * correct / len(x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="int8 ONNX model (export.to_onnx)")
    p.add_argument("--calibration", type=int, default=512, help="training images for the statistics")
    p.add_argument("--limit", type=int, default=2000, help="first N test images")
    p.add_argument("--multipliers", nargs="+", default=MULTIPLIERS)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--pixels", type=int, default=LINEAR_PIXELS,
                   help="receptive fields sampled per op for the linear mode's fit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "compensation_resnet20_dense"), help="output stem (.json and .md)")
    args = p.parse_args(argv)

    model = onnx.load(args.model)
    data = metadata.get(model, metadata.DATA, {})
    started = time.time()
    images, source = calibration_images(model, n=args.calibration)
    stats = collect(model, images, threads=args.threads, source=source,
                    pixels=args.pixels if "linear" in args.modes else 0)
    calibrate_s = time.time() - started
    test = load_dataset(data["dataset"], "test", image_size=int(data.get("image_size", 32)), limit=args.limit)
    x = preprocess(test.images, {**test.config(), **{k: data[k] for k in ("mean", "std") if k in data}}).numpy()
    labels = test.labels.numpy()
    exact = top1(model, x, labels, args.threads)
    print(f"exact int8: {exact:.2f} % ({len(x)} test images); statistics from {source} in {calibrate_s:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/compensation.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"model": args.model, "arch": metadata.get(model, metadata.ARCH), "topology": metadata.get(
              model, metadata.TOPOLOGY, None), "calibration": source, "test_images": len(x), "exact_int8": exact,
              "calibrate_s": round(calibrate_s, 1), "rows": [], "command": command}
    done = {}
    if out.with_suffix(".json").exists():  # resume: keep the cells an earlier run of the same setup measured
        earlier = json.loads(out.with_suffix(".json").read_text())
        if all(earlier.get(k) == result[k] for k in ("test_images", "exact_int8", "calibration")):
            done = {row["multiplier"]: row for row in earlier["rows"]}
    for name in args.multipliers:
        mult = multipliers.get(name)
        assignment = uniform_assignment(model, mult)
        row = dict(done.get(mult.name, {"multiplier": mult.name, "power": mult.relative_power(multipliers.exact())}))
        for mode in args.modes:
            if mode in row:
                continue
            t = time.time()
            compensated, report = compensate(model, assignment, stats, mode)
            compensate_s = time.time() - t
            rewritten, _ = approximate(compensated, {"multiplier": mult.name})
            row[mode] = top1(rewritten, x, labels, args.threads)
            row[f"{mode}_compensate_s"] = round(compensate_s, 2)
            changed = sum(n.weights_changed for n in report.nodes)
            print(f"{mult.name:12s} {mode:13s} {row[mode]:6.2f} %  ({changed} weights tuned, {compensate_s:.1f} s)",
                  flush=True)
            result["rows"] = [r for r in result["rows"] if r["multiplier"] != mult.name] + [row]
            out.with_suffix(".json").write_text(json.dumps(result, indent=2))  # grows cell by cell
    rows = result["rows"] = sorted(result["rows"], key=lambda r: args.multipliers.index(r["multiplier"]))
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    modes = [m for m in args.modes if all(m in r for r in rows)]
    lines = [f"# Error compensation, {result['arch']} {result['topology'] or ''} ({args.model}), top-1 %, "
             f"first {len(x)} test images",
             "", f"exact int8: {exact:.2f} %; calibration: {source['n']} {source['dataset']} {source['split']} "
             f"images, no retraining; uniform assignment (every approximable op); `{command}`", "",
             "| multiplier | power | " + " | ".join(modes) + " | best - exact |",
             "|---|---|" + "---|" * (len(modes) + 1)]
    for row in rows:
        power = f"{row['power']:.3f}" if row["power"] is not None else "-"
        best = max(row[m] for m in modes)
        lines.append(f"| {row['multiplier']} | {power} | " + " | ".join(f"{row[m]:.2f}" for m in modes)
                     + f" | {best - exact:+.2f} |")
    lines += ["", "Lowest normalised multiply power within 1 point of the exact int8 model (uniform assignment):", ""]
    for label, picks in [(m, [m]) for m in modes] + [("best mode per multiplier", modes)]:
        ok = [r for r in rows if r["power"] is not None and max(r[m] for m in picks) >= exact - 1.0]
        low = min(ok, key=lambda r: r["power"], default=None)
        lines.append(f"- {label}: " + (f"{low['power']:.3f} ({low['multiplier']})" if low else "none"))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
