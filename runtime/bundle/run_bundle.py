"""Run an axmoe bundle with onnxruntime's Python API (copied into every bundle as run.py).

    python3 run.py [--bundle DIR] --input X.npy [--input X2.npy] [--output Y.npy] [--runs N]
                   [--threads N] [--kernel ISA] [--path auto|lut|decomposed]

Needs only `pip install onnxruntime numpy` (no axmoe). DIR defaults to this file's folder.
Every file the manifest lists is checked against its sha256 before anything is loaded;
outputs are written in the model's output order; latency percentiles over --runs.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def verify(folder):
    """The manifest of the bundle in `folder`, every listed file checked against its sha256."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, want in manifest["files"].items():
        got = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if got != want:
            raise SystemExit(f"run.py: error: {folder / name}: sha256 {got[:12]}... does not match the manifest's "
                             f"{want[:12]}... (corrupted or replaced; rebuild the bundle)")
    return manifest


def session(folder, threads=1, kernel="auto", path="auto"):
    folder = Path(folder)
    manifest = verify(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if manifest["library"]:
        # read by the library when it is registered, so set first
        options.add_session_config_entry("axmoe.kernel", kernel)
        options.add_session_config_entry("axmoe.path", path)
        options.register_custom_ops_library(str(folder / manifest["library"]))
    return ort.InferenceSession(str(folder / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"])


def run(folder, inputs, threads=1, kernel="auto", path="auto"):
    """Outputs of the bundle's model on `inputs` (arrays, in the model's input order)."""
    sess = session(folder, threads, kernel, path)
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), inputs)})


def main(argv=None):
    p = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    p.add_argument("--input", action="append", required=True)
    p.add_argument("--output", action="append", default=[])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kernel", default="auto")
    p.add_argument("--path", default="auto")
    args = p.parse_args(argv)
    sess = session(args.bundle, args.threads, args.kernel, args.path)
    feed = {i.name: np.load(x) for i, x in zip(sess.get_inputs(), args.input)}
    outputs, times = None, []
    for _ in range(max(1, args.runs) + 1):
        t0 = time.perf_counter()
        outputs = sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    for y, path in zip(outputs, args.output):
        np.save(path, y)
    ms = np.array(times[1:])
    print(f"latency ms over {len(ms)} runs (threads {args.threads}): p50 {np.percentile(ms, 50):.3f}  "
          f"p90 {np.percentile(ms, 90):.3f}  p99 {np.percentile(ms, 99):.3f}  min {ms.min():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
