"""Resumable state of an approximate-aware retraining run: `DIR/retrain_state.pt`.

A dict, readable with `torch.load(path, weights_only=True)`:

    "format"      STATE_FORMAT
    "settings"    what fixes the trajectory (plan, seed, batch size, lr, total steps, ...): a
                  resume with other settings is refused
    "params"      trainable parameters by name (the emulation's state dict)
    "optimizer", "scheduler"   their state dicts
    "step"        optimiser steps done; "epoch", "position": the loader's epoch and the batches
                  of it already consumed (the loader is deterministic per epoch, so skipping
                  `position` batches replays its generator exactly)
    "rng"         torch, numpy and Python RNG states
    "best"        {"val_top1", "step", "params", "bad_evals"} of early stopping (or None)
    "wall_time_s" training time spent before this save

Saved atomically (write, then rename) every `checkpoint_every` steps and when a budget stops
the run, so a run killed at any moment resumes having lost at most `checkpoint_every` steps,
and continues bit for bit as the uninterrupted run would (on the CPU).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

STATE_FORMAT = "axmoe.retrain_state/1"
STATE_FILE = "retrain_state.pt"


class ResumeError(ValueError):
    """Nothing to resume, or a state written by another run."""


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()),
                                                      *[int(v) if isinstance(v, (int, np.integer)) else float(v)
                                                        for v in np_state[2:]]],
            "python": _plain(random.getstate())}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuples(state["python"]))


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def save_state(out: Path, state: Mapping[str, Any]) -> Path:
    """Write `state` (plus the format tag) to out/STATE_FILE atomically."""
    path = Path(out) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({"format": STATE_FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_state(out: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The state in out/STATE_FILE, checked against this run's `settings`."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"nothing to resume: no {path}")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, in one line
        raise ResumeError(f"cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path} is not a retraining state ({STATE_FORMAT})")
    differ = [k for k in sorted(set(settings) | set(state["settings"]))
              if settings.get(k) != state["settings"].get(k)]
    if differ:
        k = differ[0]
        raise ResumeError(f"cannot resume {path}: {k} was {state['settings'].get(k)!r}, now {settings.get(k)!r}")
    return state
