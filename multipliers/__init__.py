"""axmoe multipliers: the one definition of an 8x8 signed approximate multiplier.

    from multipliers import get
    m = get("mul8s_1KV8")          # catalog name, alias, family spec or .npy path
    m.lut                          # int32 (256, 256), lut[a + 128, b + 128] == mul(a, b)
    m.metrics, m.power_mW          # EvoApproxLib-convention error metrics, PDK45 power
    m.decomposition                # exact split into masked-operand products, if any
"""

from multipliers.registry import (PRESETS, UnknownMultiplierError, catalog, exact, get, names,
                                 resolve_many)
from multipliers.decompose import Decomposition, Term, decompose
from multipliers.lut import LUTError, exact_lut, load_lut, save_lut, validate_lut
from multipliers.metrics import ErrorMetrics, error_metrics
from multipliers.multiplier import Multiplier

__all__ = [
    "PRESETS", "UnknownMultiplierError", "catalog", "exact", "get", "names", "resolve_many",
    "Decomposition", "Term", "decompose", "LUTError", "exact_lut", "load_lut", "save_lut",
    "validate_lut", "ErrorMetrics", "error_metrics", "Multiplier",
]
