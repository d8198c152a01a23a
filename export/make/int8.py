"""Static INT8 (QDQ) quantisation with onnxruntime.quantization, gated on test accuracy.

QDQ with per-channel symmetric int8 weights is the explicit-quantisation form both onnxruntime and
TensorRT consume. Activations:
  ``int8``  symmetric signed, zero point 0 - what TensorRT requires;
  ``uint8`` asymmetric unsigned - onnxruntime's fast u8*s8 kernels on x86 CPUs (several times faster
            there than s8*s8), but TensorRT rejects its non-zero zero points.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import temp_beside
from ...pipeline.reporting import profiling
from ...pipeline.reporting.metrics import drop_gate, top1_hits
from ..runtimes.base import INPUT_NAME
from ..runtimes.ort_cpu import options as ort_options
from ..runtimes.ort_cpu import ort_runner

Activations = Literal["int8", "uint8"]
Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds calibration images to onnxruntime's calibrator in fixed-size batches."""

    def __init__(self, images: torch.Tensor, batch_size: int = 32, input_name: str = INPUT_NAME) -> None:
        self.batches = [chunk.numpy() for chunk in images.float().split(batch_size)]
        self.input_name = input_name
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position == len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs one warning per LayerNorm weight it cannot quantise per channel."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32_onnx: str | Path, out_path: str | Path, calib_images: torch.Tensor, *,
                  activations: Activations = "int8", quantize_bias: bool = True, reduce_range: bool = True,
                  op_types: list[str] | None = None, nodes_to_exclude: list[str] | None = None) -> Path:
    """Write the QDQ model to ``out_path``; ``quant_pre_process`` first runs shape inference and folds the
    graph so quantisation sees the ops that will actually execute. Its intermediate file, and onnxruntime's own
    temporary models, go next to ``out_path`` (inside the export's temporary folder, never the system's).
    ``quantize_bias=False`` keeps biases float: TensorRT's operator table has no INT32 DequantizeLinear.
    ``reduce_range`` quantises weights to 7 bits (see ``ExportParams.int8_reduce_range``). ``op_types`` limits
    quantisation to those op types and ``nodes_to_exclude`` keeps those nodes float (the INT8 forms of
    ``int8_forms``); None: onnxruntime's defaults (every op type it can quantise, no node excluded)."""
    if len(calib_images) == 0:
        raise CakdError("INT8 calibration needs at least one image")
    out_path = Path(out_path)
    prepared = out_path.with_name(f".{out_path.stem}.prepared.onnx")
    try:  # onnxruntime's own temporary models (pre.quant.*, ort.quant.*) go next to the output too
        with _quiet_root_logger(), temp_beside(out_path, python_temp=True):
            prepare(fp32_onnx, prepared)
            quantize_static(
                prepared, out_path, ImageCalibrationReader(calib_images),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=op_types,
                nodes_to_exclude=nodes_to_exclude,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": activations == "int8",
                               "QuantizeBias": quantize_bias},
            )
    finally:
        prepared.unlink(missing_ok=True)
    return out_path


def prepare(fp32_onnx: str | Path, prepared: Path) -> Path:
    """``quant_pre_process``: the graph onnxruntime's quantiser sees (its node and weight names are the ones a
    QDQ file and ``qdq_loss_debug`` speak of)."""
    try:
        quant_pre_process(str(fp32_onnx), str(prepared))
    except Exception:  # its symbolic shape inference misses some op patterns; ONNX's own suffices then
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
    return prepared


def logits_on(path: str | Path, loader: Loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of an ONNX file (onnxruntime CPU) over the test set, and the labels."""
    predict = ort_runner(path, ort_options()).predict
    outputs, labels = zip(*((predict(x), torch.as_tensor(y)) for x, y in loader), strict=True)
    if not outputs:
        raise CakdError("the evaluation set is empty")
    return torch.cat(outputs), torch.cat(labels)


def int8_gate(fp32: torch.Tensor, int8: torch.Tensor, labels: torch.Tensor, *, max_drop: float,
              min_agreement: float) -> dict:
    """Top-1 of both, the drop, and top-1 agreement of INT8 with FP32 (percent); ``reason`` says why the
    INT8 model is rejected, or is None. Agreement catches a model whose errors move without the count
    changing; the image count tells what one image is worth."""
    n = len(labels)
    fp32_top1, top1 = 100.0 * top1_hits(fp32, labels) / n, 100.0 * top1_hits(int8, labels) / n
    agreement = 100.0 * top1_hits(int8, fp32.argmax(1)) / n
    drop = fp32_top1 - top1
    failed = [why for why in [drop_gate(top1, fp32_top1, max_drop, f"FP32 {fp32_top1:.2f}%")] if why]
    if agreement < min_agreement:
        failed.append(f"agrees with FP32 on {agreement:.2f}% of images (required {min_agreement:g}%)")
    reason = None
    if failed:
        reason = f"INT8 accuracy gate failed on {n} test images (1 image = {100 / n:.2f} points): " + "; ".join(failed)
    return {"top1": top1, "fp32_top1": fp32_top1, "drop": drop, "agreement": agreement, "images": n,
            "max_drop": max_drop, "min_agreement": min_agreement, "reason": reason}


def gate_int8_file(path: Path, fp32_logits: torch.Tensor, labels: torch.Tensor, test_loader: Loader, *,
                   max_drop: float, min_agreement: float) -> dict:
    """The INT8 gate on an INT8 ONNX file that exists: the file stays if it passes and is deleted if it
    fails (a quantisation-fragile model is a property of the model, not an error: ``status`` says which)."""
    gate = int8_gate(fp32_logits, logits_on(path, test_loader)[0], labels, max_drop=max_drop,
                     min_agreement=min_agreement)
    ok = gate["reason"] is None
    if not ok:
        path.unlink()
    return {"status": "ok" if ok else "rejected", **gate}


def export_int8(fp32_onnx: Path, out_path: Path, calib_images: torch.Tensor, test_loader: Loader,
                fp32_logits: tuple[torch.Tensor, torch.Tensor] | None = None, *, max_drop: float,
                min_agreement: float, activations: Activations = "int8", quantize_bias: bool = True,
                reduce_range: bool = True) -> dict:
    """Quantise ``fp32_onnx`` into ``out_path`` and gate it on the test set against the FP32 file's logits
    (``fp32_logits`` when already computed: (logits, labels))."""
    with profiling.phase("int8-gate"):
        fp32, labels = fp32_logits if fp32_logits is not None else logits_on(fp32_onnx, test_loader)
    with profiling.phase("int8-calibration"):
        quantize_int8(fp32_onnx, out_path, calib_images, activations=activations, quantize_bias=quantize_bias,
                      reduce_range=reduce_range)
    with profiling.phase("int8-gate"):
        report = gate_int8_file(out_path, fp32, labels, test_loader, max_drop=max_drop, min_agreement=min_agreement)
    return {**report, "activations": activations, "quantize_bias": quantize_bias, "reduce_range": reduce_range,
            "calib_images": len(calib_images)}
