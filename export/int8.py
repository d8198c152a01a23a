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
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from export.runtimes import INPUT_NAME, evaluate_onnx
from pipeline.errors import CakdError
from pipeline.fileio import atomic_path, remove_outputs

Activations = Literal["int8", "uint8"]


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
                  activations: Activations = "int8") -> Path:
    """Write the QDQ model to ``out_path`` (atomically); ``quant_pre_process`` first runs shape
    inference and folds the graph so quantisation sees the ops that will actually execute."""
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
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": activations == "int8"},
        )
    return out_path


def export_int8(fp32_onnx: str | Path, out_path: str | Path, calib_images: torch.Tensor,
                test_loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *, max_accuracy_drop: float,
                activations: Activations = "int8", threads: int | None = None) -> dict:
    """Quantise, evaluate INT8 and FP32 ONNX on the test set, and keep the INT8 file only if it loses
    at most ``max_accuracy_drop`` top-1 points (a stale file from an earlier run is removed first)."""
    out_path = Path(out_path)
    remove_outputs([out_path])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fp32_top1 = evaluate_onnx(fp32_onnx, test_loader, threads)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as work:
        candidate = quantize_int8(fp32_onnx, Path(work) / out_path.name, calib_images, activations=activations)
        int8_top1 = evaluate_onnx(candidate, test_loader, threads)
        drop = fp32_top1 - int8_top1
        if drop > max_accuracy_drop:
            raise CakdError(f"INT8 accuracy gate failed: top-1 {int8_top1:.2f}% vs FP32 {fp32_top1:.2f}% "
                            f"(drop {drop:.2f} points, allowed {max_accuracy_drop:g}); no INT8 ONNX written")
        size = candidate.stat().st_size
        candidate.replace(out_path)
    return {"path": str(out_path), "activations": activations, "calib_images": len(calib_images),
            "fp32_top1": fp32_top1, "int8_top1": int8_top1, "accuracy_drop": drop,
            "max_accuracy_drop": max_accuracy_drop, "size_bytes": size}
