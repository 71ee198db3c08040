"""axmoe passes: rewrite quantized ONNX models to use approximate multipliers.

    from passes.approximate import approximate
    model, report = approximate("model.int8.onnx", {"multiplier": "mul8s_1L2L"})

(`passes.approximate` is the module behind `python -m passes.approximate`; the function of
the same name lives in it.) Attributes load lazily, so `python -m` runs the module once.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ApproximationPass": "passes.approximate",
    "Report": "passes.approximate",
    "Plan": "passes.plan",
    "PlanError": "passes.plan",
    "load_plan": "passes.plan",
    "plan_from_dict": "passes.plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'passes' has no attribute {name!r}")
