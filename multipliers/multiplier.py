"""`Multiplier`: one approximate 8x8 signed multiplier, defined by its LUT."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from multipliers.lut import validate_lut
from multipliers.metrics import ErrorMetrics, error_metrics

if TYPE_CHECKING:
    from multipliers.decompose import Decomposition


@dataclass(frozen=True, eq=False)
class Multiplier:
    """An 8x8 signed multiplier: `mul(a, b) == lut[a + 128, b + 128]`.

    Everything else (metrics, decomposition, hash) is derived from the LUT, so two
    multipliers with the same table behave identically in every backend.
    """

    name: str  # canonical name, e.g. "mul8s_1KV8" or "drum:4"
    lut: np.ndarray  # int32 (256, 256), read-only
    kind: str  # exact | mask | pp | log | drum | table
    aliases: tuple[str, ...] = ()  # other names that resolve to this multiplier
    description: str = ""  # closed form or one-line summary
    provenance: str = ""  # where the table comes from
    power_mW: float | None = None  # PDK45 power, when published
    area_um2: float | None = None  # PDK45 area, when published
    delay_ns: float | None = None  # PDK45 delay, when published
    published: ErrorMetrics | None = field(default=None, repr=False)  # metrics as published

    def __post_init__(self):
        object.__setattr__(self, "lut", validate_lut(self.lut, source=self.name))

    def __call__(self, a, b) -> np.ndarray:
        """Elementwise products of int8-valued arrays `a`, `b` (broadcast), as int32."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if a.size and (a.min() < -128 or a.max() > 127 or b.min() < -128 or b.max() > 127):
            raise ValueError("operands must be signed 8-bit values in [-128, 127]")
        return self.lut[a + 128, b + 128]

    @cached_property
    def metrics(self) -> ErrorMetrics:
        return error_metrics(self.lut)

    @cached_property
    def decomposition(self) -> "Decomposition":
        from multipliers.decompose import decompose

        return decompose(self.lut)

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the LUT as little-endian int32 bytes (the catalog's checksum)."""
        return hashlib.sha256(self.lut.astype("<i4").tobytes()).hexdigest()

    @property
    def is_exact(self) -> bool:
        return self.metrics.wce == 0

    def relative_power(self, reference: "Multiplier") -> float | None:
        """Power relative to `reference` (normally the exact multiplier), when both are known."""
        if self.power_mW is None or reference.power_mW is None:
            return None
        return self.power_mW / reference.power_mW

    def summary(self) -> dict:
        """Plain-data description (what `python -m multipliers show --json` prints)."""
        dec = self.decomposition
        return {
            "name": self.name,
            "kind": self.kind,
            "aliases": list(self.aliases),
            "description": self.description,
            "provenance": self.provenance,
            "power_mW": self.power_mW,
            "area_um2": self.area_um2,
            "delay_ns": self.delay_ns,
            "metrics": self.metrics.to_dict(),
            "published_metrics": self.published.to_dict() if self.published else None,
            "lut_sha256": self.sha256,
            "decomposition": dec.to_dict(),
        }
