"""Float arithmetic as onnxruntime's unfused kernels round it."""
LEGALIZE_MAP = {}
