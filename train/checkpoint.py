"""Checkpoints: plain data plus tensors, readable with `torch.load(path, weights_only=True)`.

`DIR/checkpoint.pt` is a dict:

    "format"      "axmoe.checkpoint/1"
    "config"      {"arch", "topology", "num_classes", "options"}: `models.create(**config)`
    "data"        {"dataset", "image_size", "in_chans", "num_classes", "mean", "std",
                   "classes"}: `models.datasets.preprocess(images, data)` prepares inputs
    "state_dict"  model weights and buffers (cluster centroids included)
    "optimizer"   optimiser state, for resuming
    "epoch"       completed epochs; "step": optimiser steps so far
    "epochs"      epochs the run was asked for; "complete": whether it got there
    "phase"       "train" (dense, hard, soft), "dense" or "experts" (the cluster recipe)
    "args"        the command-line arguments, as plain data
    "metrics"     the last evaluation: {"test_acc", "test_loss", ...}
    "wall_time_s", "cpu_time_s"   time spent training so far (CPU time over all threads)

A file holds only dicts, lists, str, int, float, bool, None and tensors, so no code runs on
load. `load_model(path)` rebuilds the model from a file or a run folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

import models
from models.config import ModelConfigError

FORMAT = "axmoe.checkpoint/1"
FILENAME = "checkpoint.pt"
REQUIRED = ("format", "config", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint path that is missing, unreadable or not an axmoe checkpoint."""


def resolve(path: Path | str) -> Path:
    """A checkpoint file, or `DIR/checkpoint.pt` for a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def save_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Write atomically (temporary file, then rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **checkpoint}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file or run folder with `weights_only=True` and check its layout.

    Raises:
        CheckpointError: missing file, not loadable, or not an axmoe checkpoint.
    """
    file = resolve(path)
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: not a loadable checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not an axmoe checkpoint (no format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{file}: checkpoint lacks {', '.join(missing)}")
    return checkpoint


def build_model(checkpoint: Mapping[str, Any]) -> nn.Module:
    """The model a checkpoint describes, with its weights loaded, in eval mode."""
    try:
        model = models.create(**checkpoint["config"])
    except (ModelConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint config does not build a model: {exc}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit its config: "
                              f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def load_model(path: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a checkpoint file or run folder."""
    checkpoint = load_checkpoint(path)
    return build_model(checkpoint), checkpoint
