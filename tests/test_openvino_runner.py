"""cakd's OpenVINO runner as it is deployed: every batch size compiled at its static shape, and no input buffer
ever shared with OpenVINO (with 2026.4 a later ``infer`` on another request wrote into a shared one)."""

from __future__ import annotations

from pathlib import Path

import openvino
import pytest
import torch

from cakd.export.make.int8 import quantize_int8
from cakd.export.make.onnx_export import export_fp32
from cakd.export.runtimes import RUNTIMES, Session, Settings
from cakd.pipeline.models import ModelSpec, create_model

IMG = 12


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random ResNet-10-T as shipped: FP32 ONNX with a dynamic batch axis, and its uint8 QDQ INT8 file."""
    root = tmp_path_factory.mktemp("openvino")
    torch.manual_seed(0)
    images = torch.randn(16, 3, IMG, IMG)
    made = {"fp32": root / "model.onnx", "int8": root / "model.int8.onnx"}
    export_fp32(create_model(ModelSpec("resnet10t", 10, IMG)).eval(), made["fp32"], img_size=IMG, in_chans=3,
                opset=18, parity_images=images[:4], atol=1e-4)
    quantize_int8(made["fp32"], made["int8"], images, activations="uint8")
    return made


def runner(path: Path, runtime: str = "openvino"):
    return RUNTIMES[runtime].build(Session(path, "fp32", None, IMG, 3, Settings(threads=1, work_dir=path.parent)))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_later_infer_never_writes_into_a_buffer_predict_was_given(files: dict[str, Path], precision: str) -> None:
    """The issue's sequence: ``predict(A)``, then 50 batch-1 calls of the timed request; A stays as it was and
    gives the same answers again (sharing it, 768 of 1,536 values changed on this machine)."""
    run = runner(files[precision])
    images = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    kept = images.clone()
    first = run.predict(images)
    call = run.timed_call(1)
    for _ in range(50):
        call()
    assert torch.equal(images, kept)
    assert torch.equal(run.predict(images), first)


def test_each_batch_size_is_compiled_at_its_static_shape_and_answers_as_onnxruntime(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_shapes = []

    class Recording(openvino.Core):
        def compile_model(self, model, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            compiled_shapes.append(str(model.input(0).get_partial_shape()))
            return super().compile_model(model, *args, **kwargs)

    monkeypatch.setattr(openvino, "Core", Recording)
    run, reference = runner(files["fp32"]), runner(files["fp32"], "onnxruntime")
    images = torch.randn(8, 3, IMG, IMG, generator=torch.Generator().manual_seed(2))
    for batch in (1, 3, 8, 3):
        assert torch.allclose(run.predict(images[:batch]), reference.predict(images[:batch]), atol=1e-4)
    run.timed_call(8)()
    assert compiled_shapes == [f"[{b},3,{IMG},{IMG}]" for b in (1, 3, 8)]  # one compile per shape, reused
    assert RUNTIMES["openvino"].options(Settings(1, Path()))["shape"] == "static, compiled per batch size"  # recorded
