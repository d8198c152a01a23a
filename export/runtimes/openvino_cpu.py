"""OpenVINO on the CPU, reading the same ONNX files onnxruntime runs (``pip install 'cakd[openvino]'``).

The precision hint is f32 unless asked otherwise: on CPUs with bf16/AMX, OpenVINO's default would silently
run an "FP32" model in bf16, and the bench would compare two different computations.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import bounded
from ..artefacts import int8_kinds
from .base import Runner, Runtime, Session, Settings


def unavailable() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install 'cakd[openvino]')"
    return None


def options(settings: Settings) -> dict:
    return {"device": "CPU", "INFERENCE_NUM_THREADS": settings.threads,
            "INFERENCE_PRECISION_HINT": settings.openvino_hint, "PERFORMANCE_HINT": "LATENCY"}


def build(session: Session) -> Runner:
    """Compile the ONNX file as shipped (dynamic batch axis included) on the CPU plugin."""
    import openvino as ov

    config = options(session.settings)
    device = config.pop("device")
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(session.path)), device, config)
    except Exception as err:  # OpenVINO raises RuntimeError subclasses with multi-line C++ messages
        raise CakdError(f"OpenVINO cannot load {session.path}: {openvino_reason(err)}") from None
    output = compiled.output(0)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(compiled(x.cpu().numpy())[output]).copy())

    def timed_call(batch: int) -> Callable[[], None]:
        request = compiled.create_infer_request()
        shape = (batch, session.in_chans, session.img_size, session.img_size)
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return lambda: request.infer({0: x})

    return Runner(predict, timed_call)


RUNTIME = Runtime("openvino", {"fp32": ("onnx",), "int8": int8_kinds("cpu")}, "onnxruntime",
                  unavailable, options, build)


def openvino_reason(err: Exception) -> str:
    """The lines of an OpenVINO error that say why, in one bounded line: its first lines only name the C++
    source files the exception passed through (``Exception from src/inference/src/cpp/core.cpp:84:``)."""
    lines = [line.strip() for line in str(err).splitlines()]
    why = [line for line in lines if line and not re.fullmatch(r"Exception from \S+:\d+:", line)]
    return bounded(" ".join(why) or type(err).__name__, 400)
