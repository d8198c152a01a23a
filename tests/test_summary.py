"""`cakd summary` on reports written as the stages write them (export.json and bench.json per the contract):
a row per student with its INT8 outcome, the teacher's source, and one deploy line per runtime pick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cakd_here, tiny_params, write_params

GATE = {"top1": 91.0, "fp32_top1": 91.5, "drop": 0.5, "agreement": 98.0, "images": 200, "activations": "uint8"}
INT8_OK = {"file": "model.int8.onnx", "status": "ok", "reason": None, "size_bytes": 1, "gate": GATE}
INT8_REJECTED = {"file": None, "status": "rejected", "size_bytes": None,
                 "reason": "top-1 80.00% vs FP32 83.00% (drop 3.00 points, allowed 1) on 200 images",
                 "gate": {**GATE, "top1": 80.0, "fp32_top1": 83.0, "drop": 3.0, "agreement": 90.0}}
ONNX = {"file": "model.onnx", "status": "ok", "reason": None, "size_bytes": 1,
        "parity": {"max_abs_diff": 3e-6, "top1_agreement": 1.0}}


def row(model: str, runtime: str, precision: str, p50: float, status: str = "ok", top1: float = 90.0) -> dict:
    artefact = "onnx-int8" if precision == "int8" else "onnx"
    return {"model": model, "precision": precision, "runtime": runtime, "artefact": artefact, "batch_size": 1,
            "p50_ms": p50, "top1": top1, "max_abs_diff": 1e-6, "status": status,
            "reason": None if status == "ok" else "why"}


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    write_params(tmp_path / "params.yaml", tiny_params(
        students={"vit": {"model": "deit_tiny_patch16_224"}, "cnn": {"model": "mobilenetv2_050"}}))
    write(tmp_path / "reports/teacher.json", {
        "model": "resnet18", "accuracy": 99.1,
        "teacher_source": {"file": "weights/resnet18.pt", "sha256": "ab" * 32, "timm_name": "resnet18",
                           "fine_tuned": True}})
    for name, (base, top1, int8) in {"vit": (50.0, 81.0, INT8_REJECTED), "cnn": (85.0, 91.5, INT8_OK),
                                     "teacher": (None, 99.1, INT8_OK)}.items():
        folder = tmp_path / f"artifacts/export/{name}"
        write(folder / "export.json", {"model": {"img_size": 12, "num_classes": 10},
                                       "artefacts": {"onnx": ONNX, "onnx-int8": int8}})
        for entry in (ONNX, int8):
            if entry["file"]:
                (folder / entry["file"]).write_bytes(b"onnx")
        if base is not None:
            write(tmp_path / f"reports/students/{name}/eval.json",
                  {"teacher": {"top1": 99.1}, "baseline": {"top1": base}, "student": {"top1": top1},
                   "gain_over_baseline": top1 - base})
    write(tmp_path / "artifacts/bench/bench.json", {
        "rows": [row("teacher", "onnxruntime", "int8", 0.61, top1=99.3), row("vit", "onnxruntime", "fp32", 0.57),
                 row("vit", "onnxruntime", "int8", 0.60, status="rejected"), row("cnn", "openvino", "fp32", 0.3),
                 row("cnn", "openvino", "int8", 0.2, status="failed", top1=26.0)],
        "picks": [{"runtime": "onnxruntime", "model": "teacher", "precision": "int8", "top1": 99.33, "p50_ms": 0.61,
                   "batch_size": 1, "budget_ms": None, "rule": "fastest within 1 top-1 points of the most accurate"},
                  {"runtime": "openvino", "model": "cnn", "precision": "fp32", "top1": 91.5, "p50_ms": 0.3,
                   "batch_size": 1, "budget_ms": None, "rule": "fastest within 1 top-1 points of the most accurate"},
                  {"runtime": "tensorrt", "model": None, "batch_size": 1, "reason": "no usable result: no GPU"}]})
    return tmp_path


def test_summary_rows_int8_outcomes_teacher_source_and_deploy_lines(reports: Path, capsys, monkeypatch) -> None:
    code, err = run_cakd_here(["summary"], reports, capsys, monkeypatch)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert lines[-3:] == [
        "deploy teacher int8 on onnxruntime: 99.33% at 0.61 ms (batch 1; fastest within 1 top-1 points of the most "
        "accurate)",
        "deploy cnn fp32 on openvino: 91.50% at 0.30 ms (batch 1; fastest within 1 top-1 points of the most accurate)",
        "tensorrt: nothing to deploy (no usable result: no GPU)"]
    assert ("vit: INT8: onnx-int8 rejected: top-1 80.00% vs FP32 83.00% (drop 3.00 points, allowed 1) on 200 images"
            in err)
    assert ("cnn: INT8: onnx-int8 top-1 91.00% (drop 0.50 points, 98.0% agreement with FP32 on 200 images); "
            "but the bench's runtime check failed on openvino onnx-int8: why") in err  # gate passed, a runtime not
    assert "fine-tuned from weights/resnet18.pt, sha256 abababababab" in err

    summary = json.loads((reports / "reports/summary.json").read_text())
    assert list(summary["students"]) == ["vit", "cnn"]  # params.yaml's order
    vit, cnn = summary["students"]["vit"], summary["students"]["cnn"]
    assert (vit["model"], vit["gain"], vit["int8_shipped"]) == ("deit_tiny_patch16_224", 31.0, None)
    assert vit["latency_ms"] == {"onnxruntime/fp32": 0.57}  # the rejected INT8 has no latency to offer
    assert cnn["latency_ms"] == {"openvino/fp32": 0.3} and cnn["int8_shipped"] == "onnx-int8"
    assert cnn["runtime_failures"] == ["openvino onnx-int8: why"] and vit["runtime_failures"] == []
    assert summary["deploy"]["onnxruntime"]["model"] == "teacher"


def test_a_missing_report_is_one_line(reports: Path, capsys, monkeypatch) -> None:
    (reports / "reports/students/cnn/eval.json").unlink()
    code, err = run_cakd_here(["summary"], reports, capsys, monkeypatch)
    assert code == 2
    assert err.strip() == "cakd: error: evaluation of student cnn not found: reports/students/cnn/eval.json"
    assert not (reports / "reports/summary.json").exists()
