"""Evaluate one ONNX model on real data: accuracy, latency, normalised power, expert load.

Two passes over the same preprocessed batches:

1. the backend (`eval.backends`) after a warm-up: top-1 / top-5 and per-batch latency of the
   model as deployed;
2. an instrumented onnxruntime copy (`eval.macs`) that also returns the rows every MAC layer
   processed: active MACs, expert load and normalised power under the routing the model
   actually took on these images; its predictions are checked against pass 1 (`agreement`).

Models from other tools work too: without axmoe metadata the data preprocessing comes from
the dataset's own statistics and the input's shape, every op counts at the exact multiplier's
power unless the pass's assignment says otherwise, and a graph without `experts.<i>` names is
all trunk.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from eval.backends import make_runner
from eval.graph import analyse
from eval.latency import LatencyMeter
from eval.macs import MacCounter, instrumented, probe
from modelfile import metadata

PROBE_IMAGES = 8


class EvaluationError(ValueError):
    """A model or data problem, said in one line."""


def load_model(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception:
        raise EvaluationError(f"{path}: not an ONNX model") from None


def data_config(model: onnx.ModelProto, dataset: str | None) -> dict[str, Any]:
    """Preprocessing record: the model's `axmoe.data`, else the dataset's own statistics at
    the input's spatial size."""
    from models.datasets import dataset_spec

    data = metadata.get(model, metadata.DATA, {})
    name = dataset or data.get("dataset") or metadata.get(model, metadata.DATASET)
    if not name:
        raise EvaluationError("the model names no dataset (no axmoe metadata); pass --dataset")
    spec = dataset_spec(name)
    if not data:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        size = dims[-1].dim_value if len(dims) == 4 and dims[-1].dim_value > 0 else spec.size
        data = {"image_size": int(size), "mean": list(spec.mean), "std": list(spec.std),
                "num_classes": spec.num_classes}
    return {**data, "dataset": spec.name}


def model_summary(model: onnx.ModelProto) -> dict[str, Any]:
    assignment = metadata.get(model, metadata.ASSIGNMENT, {})
    used = sorted({e["multiplier"] for e in assignment.values() if "lowering" in e})
    return {"arch": metadata.get(model, metadata.ARCH), "topology": metadata.get(model, metadata.TOPOLOGY),
            "experts": metadata.get(model, metadata.EXPERTS), "plan": metadata.get(model, metadata.PLAN),
            "multipliers": used, "rewritten": metadata.has(model, metadata.ASSIGNMENT)}


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def evaluate(model_path: str | Path, images, labels: np.ndarray, data: Mapping[str, Any], backend: str = "ort",
             threads: int | None = None, batch: int = 64, warmup: int = 2, progress: bool = True,
             dense_macs_per_image: float | None = None) -> dict[str, Any]:
    """Evaluate `model_path` on uint8 `images` (N, C, S, S) with int `labels` (N,).

    Args:
        data: preprocessing record (`data_config`).
        backend: "ort" or "tvm" (accuracy and latency).
        threads: intra-op threads of both sessions (None: onnxruntime's default).
        batch: images per run; warmup: untimed runs of the first batch.
        dense_macs_per_image: denominator of the normalised power (default: inferred from
            the graph, `MacCounter.dense_per_image`).
    """
    from models.datasets import preprocess
    from runtime.ort import session

    start = time.time()
    model = load_model(model_path)
    info = analyse(model)
    if not info.layers:
        raise EvaluationError(f"{model_path}: no Conv/Gemm/MatMul found")
    labels = np.asarray(labels)
    batches = [preprocess(images[i:i + batch], data).numpy().astype(np.float32)
               for i in range(0, len(labels), batch)]
    if not batches:
        raise EvaluationError("no images to evaluate")

    def bar(desc: str):
        if not progress:
            return batches
        from tqdm import tqdm

        return tqdm(batches, desc=desc, unit="batch", leave=False)

    run = make_runner(backend, model_path, info.input_name, threads)
    meter = LatencyMeter(batch)
    meter.warm_up(run, batches[0], warmup)
    logits = np.concatenate([meter.timed(run, x) for x in bar(f"{backend} accuracy+latency")])
    top1 = int((logits.argmax(1) == labels).sum())
    top5 = _topk_hits(logits, labels, 5)

    make_session = lambda proto: session(proto, threads=threads)  # noqa: E731
    probe(model, info, batches[0][:PROBE_IMAGES], make_session)
    counted, shape_names = instrumented(model, info)
    sess = make_session(counted.SerializeToString())
    outputs = [info.output_name, *shape_names]
    counter = MacCounter(info)
    agree = 0
    offset = 0
    for x in bar("routing+MACs"):
        out = sess.run(outputs, {info.input_name: x})
        counter.add(len(x), out[1:])
        agree += int((out[0].argmax(1) == logits[offset:offset + len(x)].argmax(1)).sum())
        offset += len(x)
    power = counter.summary(dense_macs_per_image)
    n = len(labels)
    return {
        "model": str(model_path),
        "backend": backend,
        "threads": threads,
        "dataset": data.get("dataset"),
        "images": n,
        "model_info": model_summary(model),
        "top1": top1 / n,
        "top5": top5 / n,
        "latency": meter.summary(),
        "normalised_power": power["normalised_power"],
        "power": {k: v for k, v in power.items() if k not in ("layers", "normalised_power")},
        "expert_load": counter.expert_load(),
        "agreement": agree / n,
        "layers": power["layers"],
        "wall_time_s": round(time.time() - start, 3),
    }
