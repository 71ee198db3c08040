"""axmoe export: trained checkpoints -> fp32 ONNX -> 8-bit QDQ ONNX (`python -m export.to_onnx`).

Modules: `fp32` (BatchNorm folding, torch.onnx export), `quantize` (onnxruntime static
quantization, scheme checks), `exporter` (the pipeline), `checkpoint` (reading checkpoints),
`emulation` (the quantized graph in PyTorch), `requantize` (fixed-scale weights), `to_onnx` (CLI).
"""
