"""INT8 gated on every runtime that consumes it, at every batch size it is served at (issue 33): a planted runtime
whose answers are right at batch 1 and wrong at batch 64 keeps the file only at batch 1, the bench scores each row
at its own batch size, and a runtime wrong at every batch loses its INT8 while onnxruntime keeps its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from cakd.export.exported import read_export, runtime_refusals
from cakd.export.make.artefacts import export_model
from cakd.export.make.gate_data import gate_data
from cakd.export.make.runtime_gate import Serving, serving_of
from cakd.export.measure.bench import BenchModel, Timing, run_bench
from cakd.export.runtimes import RUNTIMES, Runner, Runtime, Session, Settings, ort_cpu
from cakd.pipeline.data import build_datasets, load_manifest, prepare_data
from cakd.pipeline.models import ModelSpec, create_model, save_model
from cakd.pipeline.settings.params import Params
from cakd.pipeline.stages.summary import int8_outcome
from tests.conftest import tiny_params

IMG = 16
PLANTED = "planted"


def planted_runtime(wrong_above: int) -> Runtime:
    """onnxruntime itself, except that from ``wrong_above + 1`` images per call every INT8 answer moves to the
    next class: a runtime that runs a file right at small batches and wrong at large ones."""

    def build(session: Session) -> Runner:
        real = ort_cpu.build(session)

        def predict(x: torch.Tensor) -> torch.Tensor:
            logits = real.predict(x)
            return logits.roll(1, dims=1) if session.precision == "int8" and len(x) > wrong_above else logits

        return Runner(predict, real.timed_call)

    return Runtime(PLANTED, {"fp32": ("onnx",), "int8": ("onnx-int8",)}, "onnxruntime", lambda: None,
                   ort_cpu.options, build)


def ridge_head(model: torch.nn.Module, train: Dataset, ridge: float = 0.1) -> None:
    """A real classifier in a second: ridge regression on the random network's pooled features (73% top-1 on
    these digits; its INT8 agrees with FP32 on 94% of the test images, plain least squares' on 24%)."""
    images = torch.stack([train[i][0] for i in range(len(train))])
    targets = torch.nn.functional.one_hot(torch.tensor([train[i][1] for i in range(len(train))]), 10).float()
    fc = model.head.classifier
    captured: list[torch.Tensor] = []
    hook = fc.register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    with torch.no_grad():
        model.eval()(images)
    hook.remove()
    features = torch.cat([captured[0], torch.ones(len(targets), 1)], 1)
    solution = torch.linalg.solve(features.T @ features + ridge * torch.eye(features.shape[1]), features.T @ targets)
    with torch.no_grad():
        fc.weight.copy_(solution[:-1].T)
        fc.bias.copy_(solution[-1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, Path]:
    """Digits (100 test images) and a ResNet-10-T with a ridge head; the INT8 gate asks 85% agreement (the model's
    INT8 agrees 94%; a runtime that moves every answer agrees on none)."""
    root = tmp_path_factory.mktemp("runtime-gate")
    params = Params.model_validate(tiny_params(bench={"batch_sizes": [1, 8], "threads": 1},
                                               export={"int8_min_agreement": 85.0, "int8_max_drop": 5.0}))
    prepare_data(params.data, params.seed, root / "data")
    manifest = root / "data" / "manifest.json"
    train, _ = build_datasets(params.data, load_manifest(manifest), 0, train_augment=False)
    torch.manual_seed(0)
    net = create_model(ModelSpec("resnet10t", 10, IMG))
    ridge_head(net, train)
    save_model(net, root / "model.pt")
    return params, manifest, root / "model.pt"


def exported(setup: tuple[Params, Path, Path], out: Path, serving: Serving) -> dict:
    params, manifest, checkpoint = setup
    return export_model(checkpoint, out, ["checkpoint", "onnx", "onnx-int8"], params.export,
                        gate_data(params, manifest), serving=serving)


def bench_rows(setup: tuple[Params, Path, Path], folder: Path, batch_sizes: tuple[int, ...]) -> dict:
    params, manifest, _ = setup
    rows = run_bench([BenchModel("student", read_export(folder), (str(folder),))],
                     Settings(1, folder, batch_sizes), runtimes=["onnxruntime", PLANTED], precisions=["fp32", "int8"],
                     timing=Timing(batch_sizes, 0, 1, 1), loader=gate_data(params, manifest).test_loader)
    return {(r.runtime, r.artefact, r.batch_size): r for r in rows}


def test_serving_is_the_deploy_runtimes_at_the_bench_batch_sizes_and_the_evaluation_batch(
        setup: tuple[Params, Path, Path]) -> None:
    serving = serving_of(setup[0])
    assert serving.runtimes == tuple(setup[0].deploy.runtimes) and serving.batch_sizes == (1, 8, 64)


def test_a_runtime_wrong_at_batch_64_keeps_the_file_only_at_batch_1_and_each_row_is_scored_at_its_batch(
        setup: tuple[Params, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNTIMES, PLANTED, planted_runtime(wrong_above=8))
    report = exported(setup, tmp_path / "export", Serving(("onnxruntime", PLANTED), (1, 64)))

    entry = report["artefacts"]["onnx-int8"]
    assert entry["status"] == "ok" and (tmp_path / "export" / entry["file"]).is_file(), entry["reason"]
    assert entry["runtimes"]["onnxruntime"]["batch_sizes"] == [1, 64]
    assert entry["runtimes"][PLANTED]["batch_sizes"] == [1]
    at_64 = entry["runtimes"][PLANTED]["checked"]["64"]
    assert at_64["reason"].startswith("INT8 accuracy gate failed") and at_64["agreement"] < 50
    said = runtime_refusals(entry)
    assert list(said) == [PLANTED] and said[PLANTED].startswith("only at batch 1 (at batch 64: INT8 accuracy gate")
    assert f"on {PLANTED} only at batch 1 (at batch 64" in int8_outcome(report["artefacts"])

    rows = bench_rows(setup, tmp_path / "export", (1, 64))
    right, wrong = rows[PLANTED, "onnx-int8", 1], rows[PLANTED, "onnx-int8", 64]
    assert right.status == "ok" and right.top1 == rows["onnxruntime", "onnx-int8", 1].top1
    assert wrong.status == "rejected" and wrong.reason.startswith(f"refused at export on {PLANTED} at batch 64: ")
    assert wrong.top1 < right.top1 - 20  # measured at 64, where it is wrong: not the batch-1 figure
    assert rows["onnxruntime", "onnx-int8", 64].status == "ok"


def test_a_runtime_wrong_at_every_batch_loses_its_int8_keeps_fp32_and_onnxruntime_keeps_its_own(
        setup: tuple[Params, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNTIMES, PLANTED, planted_runtime(wrong_above=0))
    report = exported(setup, tmp_path / "export", Serving(("onnxruntime", PLANTED), (1, 8)))
    entry = report["artefacts"]["onnx-int8"]
    assert entry["status"] == "ok" and entry["runtimes"][PLANTED]["batch_sizes"] == []
    assert runtime_refusals(entry)[PLANTED].startswith("at no batch size (at batch 1: INT8 accuracy gate failed")

    rows = bench_rows(setup, tmp_path / "export", (1, 8))
    for batch in (1, 8):
        assert rows[PLANTED, "onnx-int8", batch].status == "rejected"
        assert rows[PLANTED, "onnx", batch].status == rows["onnxruntime", "onnx-int8", batch].status == "ok"


def test_a_file_refused_by_its_only_consumer_is_rejected_and_deleted(
        setup: tuple[Params, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNTIMES, PLANTED, planted_runtime(wrong_above=0))
    report = exported(setup, tmp_path / "export", Serving((PLANTED,), (1,)))
    entry = report["artefacts"]["onnx-int8"]
    assert entry["status"] == "rejected" and entry["file"] is None
    assert entry["reason"].startswith(f"INT8 refused on every runtime that consumes it: {PLANTED} at no batch size")
    assert not (tmp_path / "export" / "model.int8.onnx").exists()
    assert read_export(tmp_path / "export").missing["onnx-int8"] == ("rejected", entry["reason"])


def test_a_runtime_that_cannot_run_here_is_recorded_unchecked(
        setup: tuple[Params, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unavailable: Callable[[], str] = lambda: "no such device here"  # noqa: E731
    planted = planted_runtime(wrong_above=0)
    monkeypatch.setitem(RUNTIMES, PLANTED, Runtime(PLANTED, planted.consumes, planted.reference, unavailable,
                                                   planted.options, planted.build))
    report = exported(setup, tmp_path / "export", Serving((PLANTED,), (1,)))
    entry = report["artefacts"]["onnx-int8"]
    assert entry["status"] == "ok" and entry["runtimes"][PLANTED] == {"unchecked": "no such device here"}
