"""Deployment: ONNX / INT8 / TensorRT export with parity gates, and latency benchmarks."""

from .. import pipeline  # noqa: F401  (switches the runtimes' telemetry off before any of them is imported)
