"""onnxruntime on the CPU: runs every ONNX artefact, and is what the export gates run on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ...pipeline.errors import CakdError
from ..artefacts import int8_kinds_on
from .base import Runner, Runtime, Session, Settings


def session_options(options: dict) -> ort.SessionOptions:
    """onnxruntime's SessionOptions from the recorded option dict (the one source of both)."""
    made = ort.SessionOptions()
    made.graph_optimization_level = getattr(ort.GraphOptimizationLevel, options["graph_optimization_level"])
    made.execution_mode = getattr(ort.ExecutionMode, options["execution_mode"])
    if options.get("intra_op_num_threads"):
        made.intra_op_num_threads = options["intra_op_num_threads"]
        made.inter_op_num_threads = options["inter_op_num_threads"]
    return made


def ort_runner(path: str | Path, options: dict, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> Runner:
    try:
        session = ort.InferenceSession(str(path), session_options(options), providers=list(providers))
    except Exception as err:  # onnxruntime raises its own pybind error types for unreadable graphs
        raise CakdError(f"onnxruntime cannot load {path}: {str(err).splitlines()[0]}") from None
    inp = session.get_inputs()[0]
    if len(inp.shape) != 4:
        raise CakdError(f"{path} takes a rank-{len(inp.shape)} input {inp.shape}, not an image batch (N, C, H, W)")
    _, c, h, w = inp.shape

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {inp.name: x.cpu().numpy()})[0])

    def timed_call(batch: int) -> Callable[[], None]:
        x = np.random.default_rng(0).standard_normal((batch, c, h, w), dtype=np.float32)
        return lambda: session.run(None, {inp.name: x})

    return Runner(predict, timed_call)


def options(settings: Settings | None = None) -> dict:
    """All graph optimisations, sequential execution; a pinned thread count when given."""
    pinned = {"intra_op_num_threads": settings.threads, "inter_op_num_threads": 1} if settings else {}
    return {"graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL", **pinned}


def build(session: Session) -> Runner:
    return ort_runner(session.path, options(session.settings))


RUNTIME = Runtime("onnxruntime", {"fp32": ("onnx",), "fp16": ("onnx-fp16",), "int8": int8_kinds_on("onnxruntime")},
                  "torch",
                  lambda: None, options, build)
