"""onnxruntime with its CUDA execution provider (onnxruntime-gpu), checked against onnxruntime on the CPU."""

from __future__ import annotations

import onnxruntime as ort

from . import ort_cpu
from .base import Runner, Runtime, Session, Settings


def unavailable() -> str | None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return None
    return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"


def options(settings: Settings) -> dict:
    return {**ort_cpu.options(settings), "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def build(session: Session) -> Runner:
    chosen = options(session.settings)
    return ort_cpu.ort_runner(session.path, chosen, tuple(chosen["providers"]))


RUNTIME = Runtime("onnxruntime-cuda", {"fp32": ("onnx",), "fp16": ("onnx-fp16",)}, "onnxruntime", unavailable,
                  options, build)
