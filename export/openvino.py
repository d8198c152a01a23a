"""OpenVINO (CPU) on the exported ONNX files: FP32 and INT8 read from the same files onnxruntime runs.

The precision hint is f32 unless asked otherwise: on CPUs with bf16/AMX, OpenVINO's default would
silently run an "FP32" model in bf16, and the bench would compare two different computations.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from cakd.export.runtimes import Runner, Session, Settings


def openvino_unavailable() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install 'cakd[openvino]')"
    return None


def openvino_options(settings: Settings) -> dict:
    return {"device": "CPU", "INFERENCE_NUM_THREADS": settings.threads,
            "INFERENCE_PRECISION_HINT": settings.openvino_hint, "PERFORMANCE_HINT": "LATENCY"}


def openvino_runner(session: Session) -> Runner:
    """Compile the ONNX file as shipped (dynamic batch axis included) on the CPU plugin."""
    import openvino as ov

    core = ov.Core()
    options = openvino_options(session.settings)
    device = options.pop("device")
    compiled = core.compile_model(core.read_model(str(session.path)), device, options)
    output = compiled.output(0)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(compiled(x.cpu().numpy())[output]).copy())

    def timed_call(batch: int) -> Callable[[], None]:
        request = compiled.create_infer_request()
        x = np.random.default_rng(0).standard_normal((batch, session.in_chans, session.img_size, session.img_size),
                                                     dtype=np.float32)
        return lambda: request.infer({0: x})

    return Runner(predict, timed_call)
