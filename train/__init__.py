"""axmoe training: `python -m train --arch ARCH --topology TOPO --dataset NAME --epochs N --out DIR`.

    python -m train --arch resnet20 --topology hard --dataset fashion-mnist --epochs 8 --out runs/r20-hard
    python -m train --arch resnet20 --topology cluster --epochs 4 --dense-epochs 8 --out runs/r20-cluster
    python -m train --arch vit_small --topology soft --dataset tiny-imagenet --epochs 100 --out runs/vit
    python -m train ... --out runs/r20-hard --resume          # continue an interrupted run
    python -m train --help                                    # every option

Output folder layout:

    DIR/checkpoint.pt   torch.save of a dict, loads with torch.load(path, weights_only=True):
                          "format"     "axmoe.checkpoint/1"
                          "config"     {"arch", "topology", "num_classes", "options"}:
                                       models.create(**config) rebuilds the architecture
                          "data"       {"dataset", "image_size", "in_chans", "num_classes",
                                       "mean", "std", "classes"}: models.datasets.preprocess
                                       (images_uint8, data) prepares inputs as in training
                          "state_dict" weights and buffers (cluster centroids included)
                          "optimizer"  optimiser state; "epoch" completed epochs; "step"
                                       optimiser steps; "epochs" target; "complete" bool
                          "phase"      "train" | "dense" | "experts" (cluster recipe)
                          "args"       command line as plain data; "metrics" last evaluation;
                          "prepared"   cluster k-means report; "wall_time_s" and
                                       "cpu_time_s" (all threads) spent training
    DIR/log.jsonl       one JSON object a line: "start", "prepare" (k-means), "step" (every
                        --log-every steps), "epoch" (train/test loss, accuracy, expert load),
                        "resume", "final"
    DIR/metrics.json    final: "test_acc", "test_loss", "test_samples", "epochs", "steps",
                        "wall_time_s", "cpu_time_s", "config", "data", "params", "last_epoch" (with
                        per-expert load on the test set), cluster: "dense_phase", "prepared"
    DIR/dense/          cluster MoE only: the dense phase, the same three files

`train.checkpoint.load_model(DIR_OR_FILE)` returns (model in eval mode, checkpoint dict).

Modules: `args` (parser), `cli` (entry point), `run` (phases), `loop` (epoch, evaluation),
`schedule` (learning rates), `optim` (optimisers), `checkpoint` (layout, save, load),
`cluster` (k-means set-up of Cluster MoE), `kmeans`, `device`, `log`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run": "train.run",
    "main": "train.cli",
    "load_model": "train.checkpoint",
    "load_checkpoint": "train.checkpoint",
    "CheckpointError": "train.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'train' has no attribute {name!r}")
