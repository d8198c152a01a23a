"""ONNX export: dynamic batch, parity with PyTorch in onnxruntime, and a gate that leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from cakd.export.make.onnx_export import export_fp16, export_fp32
from cakd.export.runtimes.ort_cpu import options, ort_runner
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model

IMG = 16


@pytest.fixture(scope="module")
def student() -> nn.Module:
    torch.manual_seed(0)
    return create_model(ModelSpec("resnet10t", num_classes=10, img_size=IMG)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(24, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


class ExportOnlyShuffle(nn.Module):
    """Computes other logits once being exported (by either exporter): the graph really differs from eager."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            return logits.flip(1)
        return logits


def test_export_passes_parity_with_a_dynamic_batch(tmp_path: Path, student: nn.Module,
                                                   images: torch.Tensor) -> None:
    out = tmp_path / "student.onnx"
    _, report = export_fp32(student, out, img_size=IMG, in_chans=3, opset=18, parity_images=images, atol=1e-4)

    assert report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 1.0 and report["images"] == 24
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 18
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not a fixed size

    predict = ort_runner(out, options()).predict
    for batch in (1, 3):
        x = images[:batch]
        got = predict(x).numpy()
        with torch.no_grad():
            want = student(x).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_parity_gate_rejects_a_graph_that_differs(tmp_path: Path, student: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(CakdError, match=r"FP32 parity gate failed on 24 images: max \|logit diff\|") as err:
        export_fp32(ExportOnlyShuffle(student), tmp_path / "student.onnx", img_size=IMG, in_chans=3, opset=18,
                    parity_images=images, atol=1e-4)
    assert "top-1 agreement" in str(err.value) and "\n" not in str(err.value)


def test_fp16_variant_runs_in_onnxruntime_and_is_gated(tmp_path: Path, student: nn.Module,
                                                       images: torch.Tensor) -> None:
    out = tmp_path / "student.onnx"
    proto, _ = export_fp32(student, out, img_size=IMG, in_chans=3, opset=18, parity_images=images, atol=1e-4)
    half = export_fp16(student, proto, tmp_path / "student.fp16.onnx", parity_images=images, atol=5e-2)

    assert 0 < half["max_abs_diff"] <= 5e-2  # really half precision, and close
    assert (tmp_path / "student.fp16.onnx").stat().st_size < 0.6 * out.stat().st_size
    assert ort_runner(tmp_path / "student.fp16.onnx", options()).predict(images[:2]).dtype == torch.float32
    with pytest.raises(CakdError, match="FP16 parity gate failed"):
        export_fp16(student, proto, tmp_path / "again.fp16.onnx", parity_images=images, atol=1e-9)


class WithoutOnnxOp(nn.Module):
    """Eigenvalues have no ONNX operator: neither exporter can write this model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = x.mean(1)  # (N, H, W)
        return torch.linalg.eigvals(square).real


def test_an_unexportable_model_is_one_clear_line_naming_both_exporters(tmp_path: Path, images: torch.Tensor) -> None:
    with pytest.raises(CakdError, match=r"ONNX export of WithoutOnnxOp failed \(traced: .*; dynamo: ") as err:
        export_fp32(WithoutOnnxOp(), tmp_path / "m.onnx", img_size=IMG, in_chans=3, opset=18,
                    parity_images=images, atol=1e-4)
    assert "\n" not in str(err.value) and len(str(err.value)) < 600


def test_a_data_dependent_branch_traced_one_way_is_caught_by_the_parity_gate(tmp_path: Path) -> None:
    """The fast exporter traces the branch its all-zero example takes; real images take the other, and the gate
    sees it."""
    images = torch.rand(8, 3, IMG, IMG) + 0.5
    with pytest.raises(CakdError, match="FP32 parity gate failed"):
        export_fp32(DataDependentBranch(), tmp_path / "m.onnx", img_size=IMG, in_chans=3, opset=18,
                    parity_images=images, atol=1e-4)


class DataDependentBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent Python control flow: tracing records only the branch it took
            return x.mean((2, 3)) + 1.0
        return x.amax((2, 3)) - 1.0
