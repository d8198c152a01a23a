"""Static INT8 (QDQ) quantisation with onnxruntime.quantization, gated on test accuracy.

QDQ with per-channel symmetric int8 weights is the explicit-quantisation form both onnxruntime and
TensorRT consume. Activations:
  ``int8``  symmetric signed, zero point 0 - what TensorRT requires;
  ``uint8`` asymmetric unsigned - onnxruntime's fast u8*s8 kernels on x86 CPUs (several times faster
            there than s8*s8), but TensorRT rejects its non-zero zero points.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from cakd.export.runtimes import INPUT_NAME, ort_runner
from cakd.pipeline.errors import CakdError
from cakd.pipeline.fileio import atomic_path, remove_outputs
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

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
                  activations: Activations = "int8", quantize_bias: bool = True, reduce_range: bool = True) -> Path:
    """Write the QDQ model to ``out_path`` (atomically); ``quant_pre_process`` first runs shape
    inference and folds the graph so quantisation sees the ops that will actually execute.
    ``quantize_bias=False`` keeps biases float: TensorRT's operator table has no INT32 DequantizeLinear.
    ``reduce_range`` quantises weights to 7 bits (see ``ExportParams.int8_reduce_range``)."""
    if len(calib_images) == 0:
        raise CakdError("INT8 calibration needs at least one image")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as work, atomic_path(out_path) as tmp, _quiet_root_logger():
        prepared = Path(work) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_onnx), str(prepared))
        except Exception:  # its symbolic shape inference misses some op patterns; ONNX's own suffices then
            quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            prepared, tmp, ImageCalibrationReader(calib_images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": activations == "int8",
                           "QuantizeBias": quantize_bias},
        )
    return out_path


def logits_on(path: str | Path, loader: Loader, threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of an ONNX file (onnxruntime CPU) over the test set, and the labels."""
    predict = ort_runner(path, threads).predict
    outputs, labels = zip(*((predict(x), torch.as_tensor(y)) for x, y in loader), strict=True)
    if not outputs:
        raise CakdError("the evaluation set is empty")
    return torch.cat(outputs), torch.cat(labels)


def int8_gate(fp32: torch.Tensor, int8: torch.Tensor, labels: torch.Tensor, *, max_accuracy_drop: float,
              min_agreement: float) -> dict:
    """Top-1 of both, the drop, and top-1 agreement of INT8 with FP32 (percent); ``reason`` says why the
    INT8 model is rejected, or is None. Agreement catches a model whose errors move without the count
    changing; the image count tells what one image is worth."""
    n = len(labels)
    fp32_top1 = 100.0 * int((fp32.argmax(1) == labels).sum()) / n  # exact counts: a drop of exactly the
    top1 = 100.0 * int((int8.argmax(1) == labels).sum()) / n  # allowed points must pass
    agreement = 100.0 * int((int8.argmax(1) == fp32.argmax(1)).sum()) / n
    drop = fp32_top1 - top1
    failed = []
    if drop > max_accuracy_drop:
        failed.append(f"top-1 {top1:.2f}% vs FP32 {fp32_top1:.2f}% (drop {drop:.2f} points, allowed "
                      f"{max_accuracy_drop:g})")
    if agreement < min_agreement:
        failed.append(f"agrees with FP32 on {agreement:.2f}% of images (required {min_agreement:g}%)")
    reason = None
    if failed:
        reason = f"INT8 accuracy gate failed on {n} test images (1 image = {100 / n:.2f} points): " + "; ".join(failed)
    return {"top1": top1, "fp32_top1": fp32_top1, "drop": drop, "agreement": agreement, "images": n,
            "max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement, "reason": reason}


def export_int8(fp32_onnx: str | Path, out_path: str | Path, calib_images: torch.Tensor, test_loader: Loader, *,
                max_accuracy_drop: float, min_agreement: float = 0.0, activations: Activations = "int8",
                quantize_bias: bool = True, reduce_range: bool = True, threads: int | None = None) -> dict:
    """Quantise and gate on the test set. A model that passes is written to ``out_path``; one that fails
    is reported with ``status: "rejected"`` and leaves no file (a stale one from an earlier run is
    removed first): a quantisation-fragile model is a property of the model, not an error."""
    out_path = Path(out_path)
    remove_outputs([out_path])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fp32_logits, labels = logits_on(fp32_onnx, test_loader, threads)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as work:
        candidate = quantize_int8(fp32_onnx, Path(work) / out_path.name, calib_images, activations=activations,
                                  quantize_bias=quantize_bias, reduce_range=reduce_range)
        gate = int8_gate(fp32_logits, logits_on(candidate, test_loader, threads)[0], labels,
                         max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
        size = candidate.stat().st_size
        if gate["reason"] is None:
            candidate.replace(out_path)
    ok = gate["reason"] is None
    return {"status": "ok" if ok else "rejected", **gate, "path": str(out_path) if ok else None,
            "activations": activations, "quantize_bias": quantize_bias, "reduce_range": reduce_range,
            "calib_images": len(calib_images),
            "size_bytes": size if ok else None}
