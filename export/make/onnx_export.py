"""PyTorch -> ONNX with a dynamic batch axis, simplified, and gated on parity with PyTorch.

The gate runs the written file in onnxruntime on real images: a graph that computes something else than
the eager model (a tracing-only branch, an unsupported op lowered wrongly) must never ship.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import onnxslim
import torch
from onnxconverter_common import float16
from torch import nn

from ...pipeline.errors import CakdError
from ...pipeline.reporting import profiling
from ..runtimes.base import INPUT_NAME, OUTPUT_NAME, predict_batched
from ..runtimes.ort_cpu import options as ort_options
from ..runtimes.ort_cpu import ort_runner


def to_onnx(model: nn.Module, *, img_size: int, in_chans: int = 3, opset: int) -> onnx.ModelProto:
    """torch's TorchScript-based exporter (a second for a small model, where the ``torch.export``-based one
    takes 10-30 s), or, for a model it cannot trace, the ``torch.export``-based one; then onnxslim. Either
    way the parity gate decides whether the graph computes what the model does.

    The example batch is 2, not 1, so the exporter cannot specialise the batch axis to a constant.
    """
    model = model.eval().cpu()
    example = torch.zeros(2, in_chans, img_size, img_size)
    failures = []
    for exporter in (_traced, _dynamo):
        try:
            proto = onnxslim.slim(exporter(model, example, opset))
            onnx.checker.check_model(proto, full_check=True)
            return proto
        except Exception as err:  # exporter / checker failures come in many types; the user needs one line
            failures.append(f"{exporter.__name__.strip('_')}: {type(err).__name__}: {str(err).strip()[:150]}")
    first_lines = "; ".join(f.splitlines()[0] for f in failures)
    raise CakdError(f"ONNX export of {type(model).__name__} failed ({first_lines})")


def _traced(model: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # TracerWarnings on timm's shape asserts; the parity gate is the judge
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def _dynamo(model: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=opset, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
                                verbose=False)
    return program.model_proto


def parity(model: nn.Module, onnx_path: Path, images: torch.Tensor) -> dict:
    """Max |logit difference| and top-1 agreement of the ONNX file (onnxruntime CPU) vs PyTorch."""
    with torch.inference_mode():
        reference = predict_batched(model.eval().cpu(), images)
    logits = predict_batched(ort_runner(onnx_path, ort_options()).predict, images).float()
    return {
        "max_abs_diff": float((logits - reference).abs().max()),
        "max_abs_logit": float(reference.abs().max()),
        "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
        "images": len(images),
    }


def gate(report: dict, atol: float, what: str, require_top1: bool) -> None:
    """``atol`` is per unit of logit scale: float rounding grows with the logits' magnitude (a confident
    model's logits of ~15 differ by ~1e-4 between runtimes with nothing wrong), a broken graph does not."""
    diff, agreement = report["max_abs_diff"], report["top1_agreement"]
    report["allowed_abs_diff"] = allowed = atol * max(1.0, report["max_abs_logit"])
    if diff > allowed or (require_top1 and agreement < 1.0):
        raise CakdError(f"{what} parity gate failed on {report['images']} images: max |logit diff| "
                        f"{diff:.3g} (allowed {allowed:.3g} = atol {atol:g} x max(1, max |logit| "
                        f"{report['max_abs_logit']:.3g})), top-1 agreement {100 * agreement:.2f}%"
                        f"{' (required 100%)' if require_top1 else ''}; nothing exported")


def export_fp32(model: nn.Module, path: Path, *, img_size: int, in_chans: int, opset: int,
                parity_images: torch.Tensor, atol: float) -> tuple[onnx.ModelProto, dict]:
    """Write the FP32 ONNX and gate it: max |diff| <= ``atol`` x max(1, max |logit|), 100% top-1 agreement."""
    if len(parity_images) == 0:
        raise CakdError("the parity gate needs at least one image")
    with profiling.phase("onnx-export"):
        proto = to_onnx(model, img_size=img_size, in_chans=in_chans, opset=opset)
        onnx.save(proto, path)
    with profiling.phase("parity"):
        report = {"opset": opset, "atol": atol, **parity(model, path, parity_images)}
    gate(report, atol, "FP32", require_top1=True)
    return proto, report


def export_fp16(model: nn.Module, proto: onnx.ModelProto, path: Path, *, parity_images: torch.Tensor,
                atol: float) -> dict:
    """float16 weights and compute, float32 inputs/outputs (callers need not change); max |diff| <= ``atol``.
    Its top-1 agreement is reported, not required: near-ties may legitimately flip at half precision."""
    with warnings.catch_warnings(), profiling.phase("onnx-export"):  # it warns for every weight it rounds
        warnings.simplefilter("ignore")
        onnx.save(float16.convert_float_to_float16(proto, keep_io_types=True), path)
    with profiling.phase("parity"):
        report = {"atol": atol, **parity(model, path, parity_images)}
    gate(report, atol, "FP16", require_top1=False)
    return report
