"""Learning-rate schedules as pure functions of the optimiser step t in [0, T).

    onecycle: warm up linearly from lr/25 to lr over the first w T steps, then cosine down to
              lr/1e4 (Smith & Topin 2019; torch's OneCycleLR with cosine annealing)
    cosine:   warm up linearly from 0 to lr over w T steps, then lr (1 + cos(pi u)) / 2,
              u the fraction of the remaining steps done
    step:     lr, x0.1 from 50 % of T, x0.01 from 75 %
    constant: lr

Being functions of t alone, schedules need no state in a checkpoint: a resumed run at step t
gets the same rate as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int], float]


def _cosine(start: float, end: float, u: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * min(max(u, 0.0), 1.0))) / 2


def make_schedule(name: str, lr: float, total_steps: int, warmup: float = 0.15) -> Schedule:
    """Rate at step t for `total_steps` steps.

    Args:
        name: onecycle, cosine, step or constant.
        lr: peak rate.
        total_steps: T, steps of the whole run.
        warmup: w, fraction of T spent warming up (onecycle, cosine).
    """
    total = max(1, total_steps)
    warm = int(round(warmup * total))
    if name == "onecycle":
        initial, final = lr / 25, lr / 1e4

        def onecycle(t: int) -> float:
            if t < warm:
                return initial + (lr - initial) * t / warm
            return _cosine(lr, final, (t - warm) / max(1, total - warm))
        return onecycle
    if name == "cosine":
        def cosine(t: int) -> float:
            if t < warm:
                return lr * (t + 1) / (warm + 1)
            return _cosine(lr, 0.0, (t - warm) / max(1, total - warm))
        return cosine
    if name == "step":
        return lambda t: lr * (0.1 ** ((t >= total // 2) + (t >= (3 * total) // 4)))
    if name == "constant":
        return lambda t: lr
    raise ValueError(f"unknown schedule {name!r} (valid: onecycle, cosine, step, constant)")
