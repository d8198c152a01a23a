"""cakd: cross-architecture knowledge distillation through a fused assistant."""

from .files.telemetry import switch_off

__version__ = "0.1.0"

switch_off()  # before onnxruntime or OpenVINO is imported anywhere in cakd (see telemetry.py)
