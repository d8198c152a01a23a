"""bench-latency: two tiny models across runtimes, written as JSON, CSV and a Pareto plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from export.bench_latency import latency_stats, plan
from export.commands import bench_latency_command, export_command
from export.onnx_export import export_onnx
from export.report import budget_pick, pareto_front
from export.tensorrt import tensorrt_unavailable
from pipeline.data import prepare_data
from pipeline.errors import CakdError
from pipeline.models import ModelSpec, create_model, save_model
from pipeline.params import ExportParams, Params

IMG = 16
TINY_VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, list[Path]]:
    root = tmp_path_factory.mktemp("bench")
    params = Params.model_validate({
        "data": {"name": "digits", "img_size": IMG, "train_per_class": 10, "test_per_class": 5},
        "teacher": {"model": "vit_tiny_patch16_224", "kwargs": TINY_VIT},
        "students": {"student": {"model": "resnet10t"}},
        "export": {"parity_images": 16, "calib_images": 16},
        "bench": {"batch_sizes": [2, 1], "warmup": 1, "runs": 4, "threads": 2, "budget_ms": 10000.0,
                  "runtimes": ["torch", "onnxruntime", "onnxruntime-int8", "tensorrt"]},
    })
    manifest = prepare_data(params.data, params.seed, root / "data")
    torch.manual_seed(0)
    models = [root / "teacher" / "model.pt", root / "student" / "model.pt"]
    save_model(create_model(ModelSpec("vit_tiny_patch16_224", 10, IMG, kwargs=TINY_VIT)), models[0])
    save_model(create_model(ModelSpec("resnet10t", 10, IMG)), models[1])
    assert manifest["num_classes"] == 10
    return params, root / "data" / "manifest.json", models


def test_bench_two_models_writes_json_csv_and_pareto_png(project: tuple[Params, Path, list[Path]],
                                                         tmp_path: Path) -> None:
    params, manifest, models = project
    result = bench_latency_command(params, models, tmp_path, manifest)

    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == result["rows"]
    keys = {(r["model"], r["runtime"], r["batch_size"]) for r in saved["rows"]}
    assert keys == {(m, rt, b) for m in ("teacher/model", "student/model")
                    for rt in ("torch", "onnxruntime", "onnxruntime-int8") for b in (1, 2)}
    for row in saved["rows"]:
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput_ips"] == pytest.approx(row["batch_size"] * 1e3 / row["p50_ms"])
        assert 0 <= row["top1"] <= 100 and row["params_m"] > 0 and row["gflops"] > 0 and row["file_mb"] > 0
    by = {(r["model"], r["runtime"], r["batch_size"]): r for r in saved["rows"]}
    # onnxruntime FP32 computes the same logits as PyTorch, so the same accuracy
    for m in ("teacher/model", "student/model"):
        assert by[(m, "onnxruntime", 1)]["top1"] == by[(m, "torch", 1)]["top1"]
        assert by[(m, "onnxruntime-int8", 1)]["file_mb"] < by[(m, "onnxruntime", 1)]["file_mb"]
    if tensorrt_unavailable():
        assert saved["unavailable"] == [{"runtime": "tensorrt", "reason": tensorrt_unavailable()}]
    system = saved["system"]
    assert system["threads"] == 2 and system["cpu"] and system["versions"]["onnxruntime"]
    assert saved["settings"]["batch_sizes"] == [1, 2]
    assert saved["budget"]["pick"]["model"] in ("teacher/model", "student/model")
    assert saved["budget"]["batch_size"] == 1

    with (tmp_path / "bench.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 12 and {r["runtime"] for r in table} == {"torch", "onnxruntime", "onnxruntime-int8"}
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["pareto_png"] == str(tmp_path / "pareto.png")


def test_bench_without_data_has_no_accuracy_and_lists_int8_as_unavailable(
        project: tuple[Params, Path, list[Path]], tmp_path: Path) -> None:
    params, _, models = project
    params = params.model_copy(deep=True)
    params.bench.runtimes = ["onnxruntime", "onnxruntime-int8"]
    params.bench.batch_sizes = [1]
    result = bench_latency_command(params, models[1:], tmp_path)

    assert [(r["model"], r["runtime"], r["top1"]) for r in result["rows"]] == [("model", "onnxruntime", None)]
    assert result["unavailable"] == [{"runtime": "onnxruntime-int8", "model": "model",
                                      "reason": "no INT8 ONNX given and no calibration images to make one"}]
    assert result["budget"]["pick"] is None and "accuracy unknown" in result["budget"]["reason"]
    assert not (tmp_path / "pareto.png").exists() and (tmp_path / "bench.csv").is_file()


def test_an_onnx_file_is_its_own_row_linked_to_its_checkpoint(project: tuple[Params, Path, list[Path]],
                                                               tmp_path: Path) -> None:
    params, _, models = project
    from pipeline.models import load_model

    student = tmp_path / "student.pt"
    student.write_bytes(models[1].read_bytes())
    onnx_path = tmp_path / "student.onnx"
    export_onnx(load_model(student), onnx_path, img_size=IMG, opset=18, parity_images=torch.randn(2, 3, IMG, IMG),
                atol=1e-4)

    found = plan([student, onnx_path], ["torch", "onnxruntime"], tmp_path / "work", threads=1, batch_sizes=[1],
                 export=ExportParams())

    rows = {(c.model, c.runtime): c for c in found.candidates}
    assert set(rows) == {("student", "torch"), ("student", "onnxruntime")}
    assert rows["student", "onnxruntime"].path == onnx_path  # the given ONNX, not a fresh export
    assert rows["student", "onnxruntime"].params == rows["student", "torch"].params
    assert not (tmp_path / "work").exists()


def test_an_export_folder_joins_the_checkpoint_it_was_made_from(project: tuple[Params, Path, list[Path]],
                                                                tmp_path: Path) -> None:
    params, manifest, (teacher, student) = project
    params = params.model_copy(deep=True)
    params.export.max_accuracy_drop = 100.0  # untrained weights: this test is about files, not accuracy
    export_command(params, student, manifest, tmp_path / "export", "onnx", int8=True)

    found = plan([teacher, student, tmp_path / "export"], ["torch", "onnxruntime", "onnxruntime-int8"],
                 tmp_path / "work", threads=1, batch_sizes=[1], export=params.export)

    paths = {(c.model, c.runtime): c.path for c in found.candidates}
    assert paths == {("teacher/model", "torch"): teacher, ("student/model", "torch"): student,
                     ("teacher/model", "onnxruntime"): tmp_path / "work" / "teacher_model.onnx",
                     ("student/model", "onnxruntime"): tmp_path / "export" / "model.onnx",
                     ("student/model", "onnxruntime-int8"): tmp_path / "export" / "model.int8.onnx"}
    assert found.unavailable == [{"runtime": "onnxruntime-int8", "model": "teacher/model",
                                  "reason": "no INT8 ONNX given and no calibration images to make one"}]


def test_bad_model_files_are_one_clear_line(project: tuple[Params, Path, list[Path]], tmp_path: Path) -> None:
    params, _, _ = project
    with pytest.raises(CakdError, match="model file not found"):
        bench_latency_command(params, [tmp_path / "missing.pt"], tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(CakdError, match="give .pt checkpoints, .onnx files or folders of them"):
        bench_latency_command(params, [tmp_path / "notes.txt"], tmp_path)
    with pytest.raises(CakdError, match="no .onnx files in"):
        bench_latency_command(params, [tmp_path], tmp_path)
    with pytest.raises(CakdError, match="at least one model"):
        bench_latency_command(params, [], tmp_path)


def test_latency_statistics_and_pareto_front_by_hand() -> None:
    stats = latency_stats([0.001 * i for i in range(1, 101)], batch=4)
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p99_ms"] == pytest.approx(99.01)
    assert stats["throughput_ips"] == pytest.approx(4000 / 50.5)
    # (latency, accuracy): the third point is slower and less accurate than the second
    assert pareto_front([(1.0, 80.0), (2.0, 90.0), (3.0, 85.0), (5.0, 95.0)]) == [0, 1, 3]


def test_budget_names_the_most_accurate_model_that_fits() -> None:
    rows = [{"model": m, "runtime": "onnxruntime", "precision": "fp32", "batch_size": 1, "p90_ms": lat,
             "top1": acc, "source": f"{m}.pt"} for m, lat, acc in (("small", 2.0, 90.0), ("mid", 4.0, 93.0),
                                                                   ("big", 9.0, 97.0))]
    assert budget_pick(rows, 5.0)["pick"]["model"] == "mid"
    assert budget_pick(rows, 1.0)["pick"] is None
