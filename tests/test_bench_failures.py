"""A runner that cannot load or run its file is a failed row with the runtime's reason, and the bench goes on
with every other runtime (as Ultralytics' benchmarks and the shortlist do)."""

from __future__ import annotations

from pathlib import Path

import torch

from cakd.export.exported import read_export
from cakd.export.make.artefacts import export_model
from cakd.export.make.gate_data import GateData
from cakd.export.measure.bench import BenchModel, Timing, run_bench
from cakd.export.runtimes import Settings
from cakd.pipeline.models import ModelSpec, create_model, save_model
from cakd.pipeline.settings.params import ExportParams


def test_a_runtime_that_cannot_load_a_file_fails_its_rows_and_the_bench_goes_on(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model(create_model(ModelSpec("resnet10t", 10, 16)), tmp_path / "model.pt")
    images = torch.rand(8, 3, 16, 16)
    export_model(tmp_path / "model.pt", tmp_path / "export", ["checkpoint", "onnx"], ExportParams(),
                 GateData(images[:4]))
    (tmp_path / "export" / "model.onnx").write_bytes(b"not an ONNX graph")  # passed its gate, broken since

    rows = run_bench([BenchModel("m", read_export(tmp_path / "export"), ("m",))], Settings(1, tmp_path / "work"),
                     runtimes=["torch", "onnxruntime", "openvino"], precisions=["fp32"],
                     timing=Timing((1,), warmup=1, runs=3, rounds=1), loader=[(images, torch.zeros(8).long())])

    by = {row.runtime: row for row in rows}
    assert set(by) == {"torch", "onnxruntime", "openvino"} and len(rows) == 3
    assert by["torch"].status == "ok" and by["torch"].p50_ms > 0 and by["torch"].top1 is not None
    assert by["onnxruntime"].status == "failed" and by["onnxruntime"].p50_ms is None
    assert by["onnxruntime"].reason.startswith("onnxruntime cannot load ")
    assert by["openvino"].status == "failed" and by["openvino"].reason and "\n" not in by["openvino"].reason
