"""Runtimes for approximate int8 graphs: onnxruntime custom ops (`runtime.ort`) and TVM."""
