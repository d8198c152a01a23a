"""OpenVINO on the CPU, reading the same ONNX files onnxruntime runs (``pip install 'cakd[openvino]'``).

The precision hint is f32 unless asked otherwise: on CPUs with bf16/AMX, OpenVINO's default would silently
run an "FP32" model in bf16, and the bench would compare two different computations.

Each batch size gets its own compile at a static shape, as a deployment compiles it: the shipped file's
dynamic batch axis ran 1.05-1.9x slower than the same file reshaped to batch 1 (issue 33), so the bench times,
and the accuracy checks score, what is deployed. Inputs are never shared with OpenVINO: with 2026.4, after
``compiled(A)`` returns, ``infer`` on another request of the same compiled model writes into ``A``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import bounded
from ..artefacts import int8_kinds_on
from .base import Runner, Runtime, Session, Settings

SHAPE = "static, compiled per batch size"


def unavailable() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install 'cakd[openvino]')"
    return None


def options(settings: Settings) -> dict:
    return {"device": "CPU", "INFERENCE_NUM_THREADS": settings.threads,
            "INFERENCE_PRECISION_HINT": settings.openvino_hint, "PERFORMANCE_HINT": "LATENCY", "shape": SHAPE}


def _failed(session: Session, err: Exception) -> CakdError:
    """OpenVINO raises RuntimeError subclasses with multi-line C++ messages: keep the lines that say why."""
    return CakdError(f"OpenVINO cannot load {session.path}: {openvino_reason(err)}")


def build(session: Session) -> Runner:
    """Read the ONNX file once; compile it at the static shape of each batch size it is first given."""
    import openvino as ov

    config = options(session.settings)
    device, _ = config.pop("device"), config.pop("shape")
    core = ov.Core()
    try:
        model = core.read_model(str(session.path))
    except Exception as err:
        raise _failed(session, err) from None
    compiled: dict[int, Any] = {}

    def at(batch: int) -> Any:
        if batch not in compiled:
            shaped = model.clone()
            try:
                shaped.reshape({0: [batch, session.in_chans, session.img_size, session.img_size]})
                compiled[batch] = core.compile_model(shaped, device, config)
            except Exception as err:
                raise _failed(session, err) from None
        return compiled[batch]

    def predict(x: torch.Tensor) -> torch.Tensor:
        model_at = at(len(x))
        out = model_at(x.cpu().numpy(), share_inputs=False)[model_at.output(0)]
        return torch.from_numpy(np.array(out))

    def timed_call(batch: int) -> Callable[[], None]:
        request = at(batch).create_infer_request()
        shape = (batch, session.in_chans, session.img_size, session.img_size)
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return lambda: request.infer({0: x}, share_inputs=False)

    return Runner(predict, timed_call)


RUNTIME = Runtime("openvino", {"fp32": ("onnx",), "int8": int8_kinds_on("openvino")}, "onnxruntime",
                  unavailable, options, build)


def openvino_reason(err: Exception) -> str:
    """The lines of an OpenVINO error that say why, in one bounded line: its first lines only name the C++
    source files the exception passed through (``Exception from src/inference/src/cpp/core.cpp:84:``)."""
    lines = [line.strip() for line in str(err).splitlines()]
    why = [line for line in lines if line and not re.fullmatch(r"Exception from \S+:\d+:", line)]
    return bounded(" ".join(why) or type(err).__name__, 400)
