"""Error metrics of a multiplier, computed from its LUT with EvoApproxLib's conventions.

With e(a, b) = mul(a, b) - a*b over all 65,536 operand pairs:

    MAE = mean |e|          WCE = max |e|          MSE = mean e^2
    EP  = 100 * P(e != 0)   MRE = 100 * mean(|e| / |a*b|) over pairs with a*b != 0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from multipliers.lut import operand_grid


@dataclass(frozen=True)
class ErrorMetrics:
    mae: float  # mean absolute error
    wce: float  # worst-case (largest) absolute error
    ep_pct: float  # error probability, % of operand pairs with any error
    mre_pct: float  # mean relative error, % (over non-zero exact products)
    mse: float  # mean squared error

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def error_metrics(lut: np.ndarray) -> ErrorMetrics:
    a, b = operand_grid()
    exact = a * b
    err = lut.astype(np.int64) - exact
    abs_err = np.abs(err)
    nonzero = exact != 0
    return ErrorMetrics(
        mae=float(abs_err.mean()),
        wce=float(abs_err.max()),
        ep_pct=float(100.0 * np.count_nonzero(err) / err.size),
        mre_pct=float(100.0 * np.mean(abs_err[nonzero] / np.abs(exact[nonzero]))),
        mse=float(np.mean(err.astype(np.float64) ** 2)),
    )
