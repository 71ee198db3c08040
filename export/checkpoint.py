"""Read a training checkpoint for export: the model, its config and its preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_NAMES = ("checkpoint.pt", "model.pt", "final.pt", "best.pt", "last.pt")


class CheckpointError(ValueError):
    pass


def find_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        found = sorted(path.glob("*.pt"))
        if found:
            return found[-1]
        raise CheckpointError(f"{path}: no checkpoint (.pt) in this directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path


def load_for_export(path: str | Path, arch: str | None = None,
                    topology: str | None = None) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model in eval mode, model config, data config) from a checkpoint file or directory.

    The checkpoint is read with `torch.load(weights_only=True)`; it holds the model config
    ("config": arch, topology, num_classes, options), the weights ("state_dict" or "model")
    and the preprocessing ("data": dataset, image_size, mean, std).
    """
    import models

    file = find_checkpoint(path)
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{file}: not a readable weights-only checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(blob, dict) or "config" not in blob:
        raise CheckpointError(f"{file}: not an axmoe checkpoint (no model config)")
    config = dict(blob["config"])
    state = blob.get("state_dict") or blob.get("model")
    if state is None:
        raise CheckpointError(f"{file}: checkpoint has no weights")
    for key, value in (("arch", arch), ("topology", topology)):
        if value and value != config.get(key):
            raise CheckpointError(f"{file}: checkpoint holds a {config.get('arch')}/{config.get('topology')} "
                                  f"model; --{key} {value} does not match its weights")
    try:
        model = models.create(config["arch"], config.get("topology", "dense"),
                              num_classes=config.get("num_classes", 10), **dict(config.get("options", {})))
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{file}: {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{file}: weights do not fit {config['arch']}/{config.get('topology')} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. "
                              f"{(missing or unexpected)[0]})")
    data = dict(blob.get("data") or {})
    return model.eval(), config, data


def load_quantization_state(path: str | Path) -> dict | None:
    """Scales and zero points a retrained checkpoint was trained with (None for a plain one)."""
    blob = torch.load(find_checkpoint(path), map_location="cpu", weights_only=True)
    state = blob.get("quantization") if isinstance(blob, dict) else None
    if not state:
        return None
    return {name: value.numpy() for name, value in state.items()}
