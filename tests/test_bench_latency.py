"""bench-latency: models across the runtime table, accuracy checked on every runtime, unique labels,
JSON/CSV/Pareto outputs, picks; and the INT8 gate's rejection seen from export to bench."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cakd.export.bench_inputs import resolve, unique_labels
from cakd.export.bench_latency import Context, ensure_artefact, latency_stats, load
from cakd.export.commands import bench_latency_command, export_command
from cakd.export.int8 import quantize_int8
from cakd.export.onnx_export import export_onnx
from cakd.export.report import pareto_front, pick_for
from cakd.export.runtimes import RUNTIMES, Settings
from cakd.pipeline.cli import known_names
from cakd.pipeline.data import build_datasets, load_manifest, prepare_data
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model, load_model, save_model
from cakd.pipeline.params import Params
from onnx import numpy_helper
from torch.utils.data import Dataset

from tests.conftest import run_cakd_here, write_params
from tests.test_export_int8 import _activation_zero_points, int32_dequantize_nodes

IMG = 16
TINY_VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2}
PARAMS = {
    "data": {"name": "digits", "img_size": IMG, "train_per_class": 20, "test_per_class": 5},
    "teacher": {"model": "vit_tiny_patch16_224", "kwargs": TINY_VIT}, "students": {"student": {"model": "resnet10t"}},
    "export": {"parity_images": 16, "calib_images": 32},
    "bench": {"batch_sizes": [2, 1], "warmup": 1, "runs": 4, "rounds": 3, "threads": 1,
              "runtimes": ["torch", "onnxruntime", "openvino", "tensorrt"]},
}


def fit_head(model: torch.nn.Module, train: Dataset) -> None:
    """A real classifier in a second: least squares on the random network's pooled features (about
    75% top-1 on digits), so accuracy checks have something to lose."""
    images = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.tensor([train[i][1] for i in range(len(train))])
    fc = model.head.classifier
    captured: list[torch.Tensor] = []
    hook = fc.register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    with torch.no_grad():
        model.eval()(images)
    hook.remove()
    features = torch.cat([captured[0], torch.ones(len(labels), 1)], 1)
    solution = torch.linalg.lstsq(features, torch.nn.functional.one_hot(labels, 10).float()).solution
    with torch.no_grad():
        fc.weight.copy_(solution[:-1].T)
        fc.bias.copy_(solution[-1])


def make_int8_fragile(model: torch.nn.Module) -> None:
    """One pooled feature becomes a huge constant the classifier ignores: per-tensor INT8 activations
    then round every real feature to zero, while FP32 logits barely move."""
    last_bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        last_bn.bias[0] = 1e4
        model.head.classifier.weight[:, 0] = 0


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("bench")
    params = Params.model_validate(PARAMS)
    manifest = prepare_data(params.data, params.seed, root / "data")
    train, _ = build_datasets(params.data, load_manifest(root / "data" / "manifest.json"), 0, train_augment=False)
    torch.manual_seed(0)
    files = {"teacher": root / "teacher" / "model.pt", "student": root / "student" / "model.pt",
             "fragile": root / "fragile" / "model.pt"}
    save_model(create_model(ModelSpec("vit_tiny_patch16_224", 10, IMG, kwargs=TINY_VIT)), files["teacher"])
    for name in ("student", "fragile"):
        torch.manual_seed(0)
        net = create_model(ModelSpec("resnet10t", 10, IMG))
        fit_head(net, train)
        if name == "fragile":
            make_int8_fragile(net)
        save_model(net, files[name])
    assert manifest["num_classes"] == 10
    return params, root / "data" / "manifest.json", files


def test_bench_writes_json_csv_pareto_and_picks(project: tuple[Params, Path, dict[str, Path]],
                                                tmp_path: Path) -> None:
    params, manifest, files = project
    params = params.model_copy(deep=True)
    params.export.max_accuracy_drop, params.export.min_int8_agreement = 100.0, 0.0  # the untrained teacher's INT8
    result = bench_latency_command(params, [str(files["teacher"]), str(files["student"])], tmp_path, manifest)

    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == result["rows"]
    measured = [r for r in saved["rows"] if r["status"] != "unavailable"]
    assert {(r["model"], r["runtime"], r["precision"], r["batch_size"]) for r in measured} == {
        (m, rt, p, b) for m in ("teacher/model", "student/model") for b in (1, 2)
        for rt, p in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
                      ("openvino", "int8"))}
    for row in measured:
        assert row["p50_round_min_ms"] <= row["p50_round_max_ms"] and row["runs"] == 12 and row["rounds"] == 3
        assert row["p99_ms"] is None  # 12 timed calls: a 99th percentile would be the slowest call
        assert 0 <= row["top1"] <= 100 and row["params_m"] > 0 and row["file_mb"] > 0
    by = {(r["model"], r["runtime"], r["precision"], r["batch_size"]): r for r in saved["rows"]}
    student_fp32 = by["student/model", "onnxruntime", "fp32", 1]
    assert student_fp32["top1"] == by["student/model", "torch", "fp32", 1]["top1"] > 50
    assert student_fp32["max_abs_diff"] < 1e-3 and student_fp32["status"] == "ok"
    assert by["student/model", "onnxruntime", "int8", 1]["activations"] == "uint8"
    trt = [r for r in saved["rows"] if r["runtime"] == "tensorrt"]
    assert trt and all(r["status"] == "unavailable" and r["reason"] == RUNTIMES["tensorrt"].unavailable()
                       for r in trt)
    system = saved["system"]
    assert system["timestamp"] and isinstance(system["cpu_flags"], list) and system["versions"]["openvino"]
    assert system["load_before"] >= 0 and saved["settings"]["sessions"]["openvino"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert [p["runtime"] for p in saved["picks"]] == ["torch", "onnxruntime", "openvino", "tensorrt"]
    assert saved["picks"][1]["model"] in ("teacher/model", "student/model") and saved["picks"][3]["model"] is None

    with (tmp_path / "bench.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(saved["rows"])
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _corrupt_classifier(onnx_path: Path) -> None:
    """Roll the classifier's rows: the file still loads and runs, but predicts the neighbouring class."""
    model = onnx.load(str(onnx_path))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim <= 2 and 10 in array.shape:  # the classifier's weight (either layout) and bias
            axis = array.shape.index(10)
            init.CopyFrom(numpy_helper.from_array(np.roll(array, 1, axis=axis), init.name))
    onnx.save(model, str(onnx_path))


def test_corrupted_artefact_is_failed_on_every_runtime_and_never_picked(
        project: tuple[Params, Path, dict[str, Path]], tmp_path: Path) -> None:
    params, manifest, files = project
    params = params.model_copy(deep=True)
    params.bench.runtimes, params.bench.precisions, params.bench.batch_sizes = (
        ["torch", "onnxruntime", "openvino"], ["fp32"], [1])
    export_command(params, files["student"], manifest, tmp_path / "export", int8=False)
    _corrupt_classifier(tmp_path / "export" / "model.onnx")

    result = bench_latency_command(params, [f"good={files['teacher']}", str(tmp_path / "export")],
                                   tmp_path / "bench", manifest)

    by = {(r["model"], r["runtime"]): r for r in result["rows"]}
    assert by["export", "torch"]["status"] == "ok"  # the folder's export.json brought its checkpoint
    assert by["export", "onnxruntime"]["status"] == "failed"
    assert by["export", "onnxruntime"]["reason"].startswith("top-1 ") and "on torch fp32" in by[
        "export", "onnxruntime"]["reason"]
    assert by["export", "openvino"]["status"] == "failed" and by["export", "openvino"]["max_abs_diff"] > 1e-3
    picks = {p["runtime"]: p for p in result["picks"]}
    assert picks["onnxruntime"]["model"] == "good" and picks["openvino"]["model"] == "good"


def test_openvino_int8_matches_onnxruntime_or_is_failed(project: tuple[Params, Path, dict[str, Path]],
                                                        tmp_path: Path) -> None:
    """The INT8 file as shipped (dynamic batch axis) on OpenVINO: within the allowed drop of onnxruntime
    on the same file, or marked failed with the reason - never a silent 26%."""
    params, manifest, files = project
    params = params.model_copy(deep=True)
    params.bench.runtimes, params.bench.precisions, params.bench.batch_sizes = (
        ["onnxruntime", "openvino"], ["int8"], [1])
    train, test = build_datasets(params.data, load_manifest(manifest), 0, train_augment=False)
    fp32, int8 = tmp_path / "student.onnx", tmp_path / "student.int8.onnx"
    export_onnx(load_model(files["student"]), fp32, img_size=IMG, opset=18, atol=1e-4,
                parity_images=torch.stack([test[i][0] for i in range(8)]))
    quantize_int8(fp32, int8, torch.stack([train[i][0] for i in range(0, len(train), 6)]), activations="uint8")

    result = bench_latency_command(params, [str(int8)], tmp_path / "bench", manifest)

    ort_row, ov_row = result["rows"]
    assert (ort_row["runtime"], ov_row["runtime"]) == ("onnxruntime", "openvino")
    within = ov_row["top1"] >= ort_row["top1"] - params.export.max_accuracy_drop
    assert ov_row["status"] == ("ok" if within else "failed")
    assert within or ov_row["reason"].endswith(f"on onnxruntime int8 (drop {ort_row['top1'] - ov_row['top1']:.2f} "
                                               f"points, allowed {params.export.max_accuracy_drop:g})")


def test_rejected_int8_export_succeeds_and_bench_lists_it_rejected(
        project: tuple[Params, Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, manifest, files = project
    write_params(tmp_path / "params.yaml", {**PARAMS, "bench": {**PARAMS["bench"], "batch_sizes": [1],
                                                                "runtimes": ["onnxruntime"]}})
    export_args = ["export", "--checkpoint", str(files["fragile"]), "--data", str(manifest), "--out", "export"]

    code, err = run_cakd_here(export_args, tmp_path, capsys, monkeypatch)

    assert code == 0, err
    report = json.loads((tmp_path / "export" / "export.json").read_text())
    assert report["int8"]["status"] == "rejected" and report["int8"]["path"] is None
    assert report["int8"]["images"] == 50 and report["int8"]["drop"] > 1.0
    assert not (tmp_path / "export" / "model.int8.onnx").exists()

    code, err = run_cakd_here(["bench-latency", "export", "--data", str(manifest), "--out", "bench"], tmp_path,
                              capsys, monkeypatch)
    assert code == 0, err
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]
    int8 = [r for r in rows if r["precision"] == "int8"]
    assert [(r["status"], r["reason"]) for r in int8] == [("rejected", report["int8"]["reason"])]

    code, err = run_cakd_here([*export_args, "--strict"], tmp_path, capsys, monkeypatch)
    assert code != 0 and err.count("\n") == 1
    assert err.startswith("cakd: error: INT8 accuracy gate failed on 50 test images") and "export.strict" in err


def test_tensorrt_is_given_symmetric_int8_without_int32_bias_nodes(
        project: tuple[Params, Path, dict[str, Path]], tmp_path: Path) -> None:
    params, manifest, files = project
    train, test = build_datasets(params.data, load_manifest(manifest), 0, train_augment=False)
    ctx = Context(Settings(1, tmp_path), params.export, calib_images=torch.stack([train[i][0] for i in range(16)]),
                  parity_images=torch.stack([test[i][0] for i in range(8)]))
    [model], _ = resolve([str(files["student"])])

    path, status, _ = ensure_artefact(load(model, ctx), RUNTIMES["tensorrt"].consumes["int8"], ctx)

    assert status == "ok" and path.parent == tmp_path
    assert int32_dequantize_nodes(path) == []
    zero_points = _activation_zero_points(path)
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def test_same_named_files_get_distinct_labels_everywhere(project: tuple[Params, Path, dict[str, Path]],
                                                         tmp_path: Path) -> None:
    params, manifest, files = project
    params = params.model_copy(deep=True)
    params.bench.runtimes, params.bench.precisions, params.bench.batch_sizes = (["onnxruntime"], ["fp32"], [1])
    paths = [tmp_path / "runs" / pair / "fbt" / "model.pt" for pair in ("mixer-mbv2", "convnext-resmlp")]
    for path, source in zip(paths, (files["student"], files["teacher"]), strict=True):
        path.parent.mkdir(parents=True)
        path.write_bytes(source.read_bytes())

    result = bench_latency_command(params, [str(paths[0]), str(paths[1]), str(paths[0])], tmp_path / "b", manifest)

    labels = ["mixer-mbv2/fbt/model", "convnext-resmlp/fbt/model"]
    assert [r["model"] for r in result["rows"]] == labels
    assert result["notes"][0] == f"{paths[0]} was given more than once: reported once"
    with (tmp_path / "b" / "bench.csv").open() as f:
        assert [r["model"] for r in csv.DictReader(f)] == labels
    labelled = bench_latency_command(params, [f"mbv2={paths[0]}", str(paths[1])], tmp_path / "c", manifest)
    assert [r["model"] for r in labelled["rows"]] == ["mbv2", "model"]
    assert json.loads((tmp_path / "c" / "bench.json").read_text())["picks"][0]["model"] in ("mbv2", "model")


def test_labels_and_mismatched_models_are_refused_in_one_line(project: tuple[Params, Path, dict[str, Path]],
                                                              tmp_path: Path) -> None:
    params, manifest, files = project
    big = tmp_path / "big.pt"
    save_model(create_model(ModelSpec("resnet10t", 10, 32)), big)
    with pytest.raises(CakdError, match=r"big takes 32 px images but the dataset gives 16 px"):
        bench_latency_command(params, [str(files["student"]), f"big={big}"], tmp_path, manifest)
    many = tmp_path / "many.pt"
    save_model(create_model(ModelSpec("resnet10t", 100, IMG)), many)
    with pytest.raises(CakdError, match="predicts 100 classes but the dataset has 10"):
        bench_latency_command(params, [str(many)], tmp_path, manifest)
    with pytest.raises(CakdError, match="the label 'x' names two models"):
        resolve([f"x={files['student']}", f"x={files['teacher']}"])
    with pytest.raises(CakdError, match="model file not found"):
        resolve([str(tmp_path / "missing.pt")])
    with pytest.raises(CakdError, match="no export.json in"):
        resolve([str(tmp_path)])
    with pytest.raises(CakdError, match="at least one model"):
        resolve([])


def test_unique_labels_are_the_shortest_distinguishing_suffix() -> None:
    paths = [Path("/r/runs/a/fbt/model.pt"), Path("/r/runs/b/fbt/model.pt"), Path("/r/teacher/best.pt")]
    assert unique_labels(paths, set()) == ["a/fbt/model", "b/fbt/model", "best"]
    assert unique_labels([Path("/r/x/best.pt")], {"best"}) == ["x/best"]


def test_latency_statistics_pareto_front_and_picks_by_hand() -> None:
    stats = latency_stats([[0.001 * i for i in range(1, 51)], [0.001 * i for i in range(51, 101)]], batch=4)
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p99_ms"] == pytest.approx(99.01)
    assert (stats["p50_round_min_ms"], stats["p50_round_max_ms"]) == (pytest.approx(25.5), pytest.approx(75.5))
    assert stats["throughput_ips"] == pytest.approx(4000 / 50.5)
    assert pareto_front([(1.0, 80.0), (2.0, 90.0), (3.0, 85.0), (5.0, 95.0)]) == [0, 1, 3]

    rows = [{"model": m, "runtime": "openvino", "precision": p, "batch_size": 1, "p50_ms": lat, "top1": acc,
             "status": status, "reason": None}
            for m, p, lat, acc, status in (("small", "int8", 2.0, 90.0, "ok"), ("mid", "fp32", 4.0, 93.0, "ok"),
                                           ("mid", "int8", 3.0, 92.5, "ok"), ("big", "int8", 1.0, 97.0, "failed"),
                                           ("big", "fp32", 9.0, 97.0, "ok"))]
    assert pick_for(rows, "openvino", 5.0, 1.0)["model"] == "mid"
    assert pick_for(rows, "openvino", 5.0, 1.0)["precision"] == "fp32"
    assert pick_for(rows, "openvino", 1.5, 1.0)["model"] is None  # the only row that fits failed
    assert pick_for(rows, "openvino", None, 1.0)["model"] == "big"  # no budget: nothing within 1 point is faster
    assert pick_for(rows, "openvino", None, 5.0)[("model")] == "mid" and pick_for(rows, "openvino", None, 5.0)[
        "precision"] == "int8"


def test_bench_runtimes_come_from_the_runtime_table() -> None:
    known = known_names()  # what the CLI validates params.yaml against
    with pytest.raises(ValueError, match="unknown runtime 'onnxruntime-int8'; available: torch, torch-cuda, "
                                         "onnxruntime, onnxruntime-cuda, openvino, tensorrt"):
        Params.model_validate({**PARAMS, "bench": {"runtimes": ["onnxruntime-int8"]}}, context=known)
    valid = Params.model_validate({**PARAMS, "bench": {"runtimes": list(RUNTIMES)}}, context=known)
    assert valid.bench.runtimes == list(RUNTIMES)
