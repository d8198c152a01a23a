"""The inference runtimes an exported model can run on: one table, ``RUNTIMES``.

Each row says which artefact the runtime consumes for each precision, whether it can run here (and
why not), what session options it uses, and how to build a ``Runner``. A runner turns a float image
batch into logits (``predict``, for parity and accuracy) and prepares a fixed input once so that the
timed call measures inference only (``timed_call``). Adding a runtime = one row here + one module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from cakd.pipeline.errors import CakdError
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

Precision = Literal["fp32", "fp16", "int8"]
# Artefacts a runtime can consume: the checkpoint, the FP32 / FP16 ONNX, the INT8 QDQ ONNX as exported
# (export.int8_activations), and TensorRT's INT8 form (symmetric activations, float biases).
Artefact = Literal["checkpoint", "onnx", "onnx-fp16", "onnx-int8", "onnx-int8-trt"]


@dataclass
class Runner:
    """One model on one runtime. ``timed_call(batch)`` returns a zero-argument call that runs one
    batch and returns only when the device is done (so wall-clock timing around it is honest)."""

    predict: Callable[[torch.Tensor], torch.Tensor]
    timed_call: Callable[[int], Callable[[], None]]


def ort_session(path: str | Path, threads: int | None = None, cuda: bool = False) -> ort.InferenceSession:
    """An onnxruntime session with all graph optimisations and, when given, a pinned thread count."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own pybind error types for unreadable graphs
        raise CakdError(f"onnxruntime cannot load {path}: {str(err).splitlines()[0]}") from None


def ort_runner(path: str | Path, threads: int | None = None, cuda: bool = False) -> Runner:
    session = ort_session(path, threads, cuda)
    inp = session.get_inputs()[0]
    _, c, h, w = inp.shape

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {inp.name: x.cpu().numpy()})[0])

    def timed_call(batch: int) -> Callable[[], None]:
        x = np.random.default_rng(0).standard_normal((batch, c, h, w), dtype=np.float32)
        return lambda: session.run(None, {inp.name: x})

    return Runner(predict, timed_call)


def torch_runner(model: nn.Module, img_size: int, in_chans: int = 3, device: str = "cpu") -> Runner:
    """PyTorch eager in inference mode; on CUDA every call ends with a synchronise."""
    model = model.eval().to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    @torch.inference_mode()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).float().cpu()

    def timed_call(batch: int) -> Callable[[], None]:
        x = torch.randn(batch, in_chans, img_size, img_size, generator=torch.Generator().manual_seed(0))
        x = x.to(device)

        @torch.inference_mode()
        def call() -> None:
            model(x)
            sync()

        return call

    return Runner(predict, timed_call)


def is_quantized(path: str | Path) -> bool:
    """A QDQ graph (static INT8) holds QuantizeLinear nodes; judged by content, not by file name."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "QuantizeLinear" for node in graph.node)


def predict_batched(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    batch_size: int = 64) -> torch.Tensor:
    return torch.cat([predict(chunk) for chunk in images.split(batch_size)])


@dataclass(frozen=True)
class Settings:
    """How every session of one bench is set up (the same for all models, recorded with the results)."""

    threads: int
    work_dir: Path  # engines and other files a runtime makes
    batch_sizes: tuple[int, ...] = (1,)
    workspace_mb: int = 1024
    openvino_hint: str = "f32"  # OpenVINO's INFERENCE_PRECISION_HINT: f32 unless bf16/f16 is asked for


@dataclass(frozen=True)
class Session:
    """What a runtime needs to build a runner: the artefact file, the PyTorch model (torch runtimes
    only) and the input shape."""

    path: Path
    precision: Precision
    model: nn.Module | None
    img_size: int
    in_chans: int
    settings: Settings


@dataclass(frozen=True)
class Runtime:
    name: str
    consumes: dict[str, Artefact]  # precision -> the artefact it runs
    unavailable: Callable[[], str | None]  # why it cannot run here, or None
    options: Callable[[Settings], dict]  # session options, recorded with the results
    build: Callable[[Session], Runner]


def _ort_options(settings: Settings) -> dict:
    return {"graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": settings.threads,
            "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL"}


def _no_cuda_torch() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device is visible to PyTorch"


def _no_cuda_ort() -> str | None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return None
    return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"


def _openvino(attr: str) -> Callable:
    """A function of export/openvino.py, imported only when used (OpenVINO is an optional extra)."""
    def call(*args: object) -> object:
        from cakd.export import openvino
        return getattr(openvino, attr)(*args)
    return call


def _tensorrt(attr: str) -> Callable:
    def call(*args: object) -> object:
        from cakd.export import tensorrt
        return getattr(tensorrt, attr)(*args)
    return call


RUNTIMES: dict[str, Runtime] = {rt.name: rt for rt in (
    Runtime("torch", {"fp32": "checkpoint"}, lambda: None,
            lambda c: {"torch_threads": c.threads, "mode": "eager, inference_mode"},
            lambda s: torch_runner(s.model, s.img_size, s.in_chans)),
    Runtime("torch-cuda", {"fp32": "checkpoint"}, _no_cuda_torch, lambda c: {"mode": "eager, inference_mode"},
            lambda s: torch_runner(s.model, s.img_size, s.in_chans, "cuda")),
    Runtime("onnxruntime", {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}, lambda: None,
            _ort_options, lambda s: ort_runner(s.path, s.settings.threads)),
    Runtime("onnxruntime-cuda", {"fp32": "onnx", "fp16": "onnx-fp16"}, _no_cuda_ort, _ort_options,
            lambda s: ort_runner(s.path, s.settings.threads, cuda=True)),
    Runtime("openvino", {"fp32": "onnx", "int8": "onnx-int8"}, _openvino("openvino_unavailable"),
            _openvino("openvino_options"), _openvino("openvino_runner")),
    Runtime("tensorrt", {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8-trt"},
            _tensorrt("tensorrt_unavailable"),
            lambda c: {"network": "strongly typed", "profile_batch_sizes": list(c.batch_sizes),
                       "workspace_mb": c.workspace_mb},
            _tensorrt("tensorrt_session_runner")),
)}
