"""The inference runtimes an exported model can run on, behind one small interface.

Every runtime turns a float image batch into logits (``predict``, used for parity and accuracy) and
prepares a fixed input once so that the timed call measures inference only (``timed_call``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pipeline.errors import CakdError
from pipeline.metrics import top1_accuracy

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class Runner:
    """One model on one runtime. ``timed_call(batch)`` returns a zero-argument call that runs one
    batch and returns only when the device is done (so wall-clock timing around it is honest)."""

    runtime: str
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


def ort_runner(path: str | Path, threads: int | None = None, cuda: bool = False,
               runtime: str = "onnxruntime") -> Runner:
    session = ort_session(path, threads, cuda)
    inp = session.get_inputs()[0]
    _, c, h, w = inp.shape

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {inp.name: x.cpu().numpy()})[0])

    def timed_call(batch: int) -> Callable[[], None]:
        x = np.random.default_rng(0).standard_normal((batch, c, h, w), dtype=np.float32)
        return lambda: session.run(None, {inp.name: x})

    return Runner(runtime, predict, timed_call)


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

    return Runner("torch-cuda" if device.startswith("cuda") else "torch", predict, timed_call)


def is_quantized(path: str | Path) -> bool:
    """A QDQ graph (static INT8) holds QuantizeLinear nodes; judged by content, not by file name."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "QuantizeLinear" for node in graph.node)


def predict_batched(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    batch_size: int = 64) -> torch.Tensor:
    return torch.cat([predict(chunk) for chunk in images.split(batch_size)])


def evaluate_onnx(path: str | Path, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  threads: int | None = None) -> float:
    """Top-1 (percent) of an ONNX file on onnxruntime CPU."""
    return top1_accuracy(ort_runner(path, threads).predict, loader)
