"""Deployment: ONNX / INT8 / TensorRT export with parity gates, and latency benchmarks."""
