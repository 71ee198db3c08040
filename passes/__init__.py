"""axmoe passes: rewrite quantized ONNX models to use approximate multipliers.

    from passes import approximate
    model, report = approximate("model.int8.onnx", {"multiplier": "mul8s_1L2L"})
"""

from passes.approximate import ApproximationPass, Report, approximate
from passes.plan import Plan, PlanError, load_plan, plan_from_dict

__all__ = ["ApproximationPass", "Report", "approximate", "Plan", "PlanError", "load_plan", "plan_from_dict"]
