"""INT8: static QDQ quantisation in onnxruntime, evaluated on real digits, and its accuracy gate."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cakd.export.make.int8 import export_int8, int8_gate, quantize_int8
from cakd.export.make.onnx_export import export_fp32
from cakd.export.measure.bench import pinned_threads
from cakd.export.onnx_inspect import onnx_artefact
from cakd.export.runtimes.ort_cpu import options, ort_runner
from cakd.pipeline.data import build_datasets, prepare_data
from cakd.pipeline.errors import CakdError
from cakd.pipeline.reporting.metrics import top1_accuracy
from cakd.pipeline.settings.params import DataParams

IMG = 16


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, 10))


class WithActivationOutlier(nn.Module):
    """Same logits as ``net``, but the classifier's input also carries one huge, input-dependent value
    (multiplied by a zero weight): per-tensor INT8 activations then round every real feature to 0."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.features, self.fc = net[:-1], net[-1]
        self.fc_wide = nn.Linear(self.fc.in_features + 1, 10)
        with torch.no_grad():
            self.fc_wide.weight.copy_(torch.cat([self.fc.weight, torch.zeros(10, 1)], 1))
            self.fc_wide.bias.copy_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        outlier = 1e5 * x.flatten(1).abs().amax(1, keepdim=True)
        return self.fc_wide(torch.cat([f, outlier], 1))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Dataset]:
    cfg = DataParams(name="digits", img_size=IMG, train_per_class=60, test_per_class=20)
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path_factory.mktemp("data"))
    return build_datasets(cfg, manifest, seed=0, train_augment=False)


@pytest.fixture(scope="module")
def trained(digits: tuple[Dataset, Dataset]) -> nn.Sequential:
    train, _ = digits
    torch.manual_seed(0)
    net = tiny_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    with pinned_threads(1):  # small convolutions gain nothing from a second thread, and lose a lot on a busy CPU
        for _ in range(4):
            for x, y in loader:
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
    return net.eval()


def calibration(train: Dataset, n: int = 64) -> torch.Tensor:
    return torch.stack([train[i][0] for i in np.linspace(0, len(train) - 1, n).astype(int)])


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory, digits: tuple[Dataset, Dataset],
              trained: nn.Module) -> Path:
    path = tmp_path_factory.mktemp("fp32") / "m.onnx"
    export_fp32(trained, path, img_size=IMG, in_chans=3, opset=18, parity_images=calibration(digits[1], 32), atol=1e-4)
    return path


def test_int8_export_runs_in_onnxruntime_and_keeps_accuracy(tmp_path: Path, digits: tuple[Dataset, Dataset],
                                                            trained: nn.Module, fp32_onnx: Path) -> None:
    train, test = digits
    loader = DataLoader(test, batch_size=64)
    assert top1_accuracy(lambda x: trained(x).detach(), loader) > 90  # a real model, not a coin flip
    fp32 = fp32_onnx

    out = tmp_path / "m.int8.onnx"
    report = export_int8(fp32, out, calibration(train), loader, max_drop=2.0, min_agreement=90.0)

    assert report["status"] == "ok" and report["reason"] is None
    assert onnx_artefact(out) == "onnx-int8" and onnx_artefact(fp32) == "onnx"
    assert report["fp32_top1"] == pytest.approx(evaluate_onnx(fp32, loader))
    assert report["top1"] == pytest.approx(evaluate_onnx(out, loader))
    assert report["drop"] == pytest.approx(report["fp32_top1"] - report["top1"])
    assert report["drop"] <= 2.0 and report["calib_images"] == 64
    assert report["images"] == len(test) and 90.0 <= report["agreement"] <= 100.0
    assert ort_runner(out, options()).predict(test[0][0][None]).shape == (1, 10)


def evaluate_onnx(path: Path, loader: DataLoader) -> float:
    return top1_accuracy(ort_runner(path, options()).predict, loader)


def int32_dequantize_nodes(path: Path) -> list[str]:
    """DequantizeLinear nodes whose input is an INT32 initialiser (quantised biases)."""
    model = onnx.load(str(path))
    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    return [n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]


def _activation_zero_points(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


def test_int8_activations_are_symmetric_for_tensorrt_and_uint8_is_asymmetric(
        tmp_path: Path, digits: tuple[Dataset, Dataset], fp32_onnx: Path) -> None:
    train, _ = digits
    fp32 = fp32_onnx

    symmetric = _activation_zero_points(quantize_int8(fp32, tmp_path / "s8.onnx", calibration(train)))
    unsigned = _activation_zero_points(quantize_int8(fp32, tmp_path / "u8.onnx", calibration(train),
                                                     activations="uint8"))

    assert symmetric and all(z.dtype == np.int8 and not z.any() for z in symmetric)
    assert unsigned and all(z.dtype == np.uint8 for z in unsigned) and any(z.any() for z in unsigned)


def test_int8_gate_fires_when_quantisation_destroys_accuracy(tmp_path: Path, digits: tuple[Dataset, Dataset],
                                                             trained: nn.Sequential) -> None:
    train, test = digits
    loader = DataLoader(test, batch_size=64)
    fragile = WithActivationOutlier(trained).eval()
    fp32 = tmp_path / "m.onnx"
    export_fp32(fragile, fp32, img_size=IMG, in_chans=3, opset=18, parity_images=calibration(test, 32), atol=1e-4)

    report = export_int8(fp32, tmp_path / "m.int8.onnx", calibration(train), loader, max_drop=1.0, min_agreement=0.0)

    assert report["status"] == "rejected"
    assert re.fullmatch(rf"INT8 accuracy gate failed on {len(test)} test images \(1 image = [0-9.]+ points\): "
                        r"top-1 .* \(drop .* points, allowed 1\)", report["reason"])
    assert report["drop"] > 1.0 and report["images"] == len(test)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # the rejected INT8 file is not kept
    assert evaluate_onnx(fp32, loader) > 90  # the FP32 model itself is fine: the drop is INT8's


def test_int8_gate_on_agreement_with_fp32() -> None:
    """Two INT8 models with FP32's accuracy: one makes FP32's mistakes, one swaps which images it gets
    wrong; only the second disagrees with FP32 and is rejected on agreement alone."""
    labels = torch.tensor([0, 1, 0, 1])
    fp32 = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]])  # 3/4 right, wrong on the last image
    swapped = torch.tensor([[0.0, 1], [0, 1], [1, 0], [0, 1]])  # 3/4 right, wrong on the first
    same = fp32.clone()

    kept = int8_gate(fp32, same, labels, max_drop=1.0, min_agreement=95.0)
    rejected = int8_gate(fp32, swapped, labels, max_drop=1.0, min_agreement=95.0)

    assert kept["reason"] is None and kept["agreement"] == 100.0
    assert rejected["drop"] == 0.0 and rejected["agreement"] == 50.0
    assert rejected["reason"] == ("INT8 accuracy gate failed on 4 test images (1 image = 25.00 points): "
                                  "agrees with FP32 on 50.00% of images (required 95%)")


def test_tensorrt_int8_form_has_symmetric_activations_and_float_biases(
        tmp_path: Path, digits: tuple[Dataset, Dataset], fp32_onnx: Path) -> None:
    path = quantize_int8(fp32_onnx, tmp_path / "trt.onnx", calibration(digits[0]), activations="int8",
                         quantize_bias=False)

    assert int32_dequantize_nodes(path) == [] and all(not z.any() for z in _activation_zero_points(path))
    biased = quantize_int8(fp32_onnx, tmp_path / "ort.onnx", calibration(digits[0]), activations="int8")
    assert int32_dequantize_nodes(biased)  # onnxruntime's default form: what TensorRT must not be given


def test_calibration_needs_images(tmp_path: Path) -> None:
    with pytest.raises(CakdError, match="at least one image"):
        quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", torch.empty(0, 3, IMG, IMG))


def _weight_codes(path: Path) -> list[np.ndarray]:
    """The int8 weight tensors the QDQ file stores (inputs of DequantizeLinear, rank >= 2)."""
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] in inits and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim >= 2]


def test_weights_take_seven_bits_unless_eight_are_asked_for(tmp_path: Path, digits: tuple[Dataset, Dataset],
                                                           fp32_onnx: Path) -> None:
    """8-bit weights saturate onnxruntime's u8 x s8 int16 sums on x86 without VNNI: the default keeps 7."""
    train, _ = digits
    seven = _weight_codes(quantize_int8(fp32_onnx, tmp_path / "7.onnx", calibration(train), activations="uint8"))
    eight = _weight_codes(quantize_int8(fp32_onnx, tmp_path / "8.onnx", calibration(train), activations="uint8",
                                        reduce_range=False))
    assert seven and max(int(np.abs(w).max()) for w in seven) <= 64
    assert max(int(np.abs(w).max()) for w in eight) == 127
