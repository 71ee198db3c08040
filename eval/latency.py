"""Latency of a backend over batches: warm-up, then one wall-clock time per batch.

    p50, p90   percentiles of the per-batch times of full batches (ms)
    images/s   images / sum of all timed batch times

Only `run(x)` is timed: preprocessing happens before the clock starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class LatencyMeter:
    batch: int                                   # nominal batch size
    times: list[float] = field(default_factory=list)  # seconds per timed batch
    sizes: list[int] = field(default_factory=list)    # images per timed batch

    def warm_up(self, run: Callable[[np.ndarray], Any], x: np.ndarray, batches: int) -> None:
        for _ in range(batches):
            run(x)

    def timed(self, run: Callable[[np.ndarray], Any], x: np.ndarray) -> Any:
        start = time.perf_counter()
        out = run(x)
        self.times.append(time.perf_counter() - start)
        self.sizes.append(len(x))
        return out

    def summary(self) -> dict[str, float | int | None]:
        if not self.times:
            return {"batch": self.batch, "batches": 0, "p50_ms": None, "p90_ms": None,
                    "mean_ms": None, "images_per_s": None}
        full = [t for t, n in zip(self.times, self.sizes) if n == self.batch] or self.times
        ms = np.asarray(full) * 1e3
        return {"batch": self.batch, "batches": len(self.times),
                "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                "mean_ms": float(ms.mean()), "images_per_s": float(sum(self.sizes) / sum(self.times))}
