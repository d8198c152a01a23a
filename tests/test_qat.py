"""Quantisation-aware training with the real NVIDIA ModelOpt, as a step of ``cakd export``: when it runs (auto,
always, off; without the library), the files it ships (TensorRT's QDQ form, scored by onnxruntime as the
fake-quantised PyTorch model; the CPU form, which OpenVINO runs as onnxruntime does; both gated like post-training
INT8 and benchmarked like any artefact), a diverged fine-tune, and a killed export that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from cakd.export.artefacts import FILES
from cakd.export.make.artefacts import _uncovered_rejections
from cakd.export.measure.bench import pinned_threads
from cakd.export.measure.bench_accuracy import Accuracy, accuracy
from cakd.export.runtimes import RUNTIMES, Session, Settings
from cakd.pipeline.data import build_datasets, load_manifest
from cakd.pipeline.models import ModelSpec, create_model, save_model
from cakd.pipeline.settings.params import Params
from cakd.pipeline.stages import export as export_stage
from cakd.pipeline.stages.summary import int8_outcome
from tests.conftest import run_cakd, tiny_params, write_params
from tests.test_bench_latency import make_int8_fragile

IMG = 16
QAT, QAT_CPU = "onnx-int8-qat", "onnx-int8-qat-cpu"
RUNTIMES_HERE = ["torch", "onnxruntime", "openvino", "tensorrt"]  # TensorRT's form is exported (and run on the CPU)


def constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every constant tensor of the graph by name: initialisers and Constant nodes (the TorchScript exporter
    writes scales and zero points as Constant nodes)."""
    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def qdq_form(path: Path) -> dict[str, list]:
    """The zero points of the activations' and the weights' QuantizeLinear nodes, and the DequantizeLinear
    nodes that take an integer constant other than int8 (quantised INT32 biases)."""
    graph = onnx.load(str(path)).graph
    known = constants(graph)
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    return {"activations": [known[n.input[2]] for n in quantize if n.input[0] not in known],
            "weights": [known[n.input[2]] for n in quantize if n.input[0] in known],
            "int32_dq": [n.name for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in known
                         and known[n.input[0]].dtype != np.int8]}


def train_briefly(net: torch.nn.Module, train: torch.utils.data.Dataset, epochs: int = 3) -> None:
    """A few real epochs: a network trained by gradient descent, not a fitted head on random features (which
    symmetric INT8 activations, ModelOpt's and TensorRT's form, cannot represent well)."""
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for epoch in range(epochs):
        loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True,
                                             generator=torch.Generator().manual_seed(epoch))
        net.train()
        for images, labels in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            opt.step()
    net.eval()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared digits project with two ResNet-10-T checkpoints trained for a few epochs: ``healthy.pt`` and
    ``fragile.pt`` (the same with one huge constant feature: post-training INT8 of it fails the gate)."""
    root = tmp_path_factory.mktemp("qat")
    data = {"name": "digits", "img_size": IMG, "train_per_class": 20, "test_per_class": 10}
    write_params(root / "params.yaml", tiny_params(
        data=data, students={"student": {"model": "resnet10t"}}, qat={"epochs": 1},
        deploy={"runtimes": RUNTIMES_HERE, "precisions": ["fp32", "int8"]}))
    run_cakd("prepare", cwd=root, check=True)
    params = Params.model_validate(tiny_params(data=data))
    train, _ = build_datasets(params.data, load_manifest(root / "artifacts/data/manifest.json"), 0)
    torch.manual_seed(0)
    net = create_model(ModelSpec("resnet10t", 10, IMG))
    with pinned_threads(2):
        train_briefly(net, train)
    save_model(net, root / "healthy.pt")
    make_int8_fragile(net)
    save_model(net, root / "fragile.pt")
    return root


def export(project: Path, checkpoint: str, out: str, *overrides: str, teacher: str | None = None) -> dict:
    """``cakd export`` of one checkpoint in this process (ModelOpt is imported once for the module)."""
    from cakd.pipeline.cli import _params

    params = _params(project / "params.yaml", list(overrides))
    cwd = Path.cwd()
    os.chdir(project)
    try:
        return export_stage.run(params, Path(checkpoint), Path("artifacts/data/manifest.json"), Path(out), "onnx",
                                list(params.deploy.precisions), Path(teacher) if teacher else None,
                                Path(out) / ".." / f"{Path(out).name}.qat")
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def always(project: Path) -> dict:
    """The healthy model exported with ``qat.mode: always`` (supervised by the FP32 model itself)."""
    return export(project, "healthy.pt", "always", "qat.mode=always")


def test_always_ships_tensorrt_form_qdq_behind_the_int8_gate(project: Path, always: dict) -> None:
    entry = always["artefacts"][QAT]
    assert entry["status"] == "ok" and entry["file"] == "model.int8-qat.onnx", entry["reason"]
    assert entry["gate"]["images"] == 100 and entry["gate"]["activations"] == "int8"
    assert entry["gate"]["agreement"] >= entry["gate"]["min_agreement"]
    qat = entry["qat"]
    assert (qat["library"], qat["config"], qat["epochs"], qat["epochs_run"]) == ("nvidia-modelopt", "INT8_DEFAULT_CFG",
                                                                                1, 1)
    assert qat["supervisor"] == "the FP32 model itself" and qat["seconds"] > 0
    path = project / "always" / entry["file"]
    graph = onnx.load(str(path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    form = qdq_form(path)  # every activation's and weight's zero point: symmetric int8, zero point 0
    assert form["activations"] and form["weights"]
    assert all(z.dtype == np.int8 and not z.any() for z in form["activations"] + form["weights"])
    assert form["int32_dq"] == []  # biases stay float: TensorRT has no INT32 DequantizeLinear
    assert not {node.domain for node in graph.node} - {"", "ai.onnx"}  # standard ops only
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim][:1] == ["batch"]


def test_the_cpu_form_is_the_same_fine_tune_quantised_as_post_training_int8_is(project: Path, always: dict) -> None:
    cpu, trt = always["artefacts"][QAT_CPU], always["artefacts"][QAT]
    assert cpu["status"] == "ok" and cpu["file"] == "model.int8-qat-cpu.onnx", cpu["reason"]
    assert cpu["qat"] == trt["qat"]  # one fine-tune, two forms
    assert cpu["gate"]["images"] == 100 and cpu["gate"]["activations"] == "uint8" and cpu["gate"]["reduce_range"]
    form = qdq_form(project / "always" / cpu["file"])  # onnxruntime's fast x86 form: asymmetric uint8 activations
    assert form["activations"] and all(z.dtype == np.uint8 for z in form["activations"])
    assert all(z.dtype == np.int8 and not z.any() for z in form["weights"])
    assert not (project / "always" / ".qat-fp32.onnx").exists()  # the fine-tuned FP32 file is not shipped
    ptq = onnx.load(str(project / "always/model.int8.onnx")).graph
    tuned = onnx.load(str(project / "always" / cpu["file"])).graph
    weights = {t.name: numpy_helper.to_array(t) for t in ptq.initializer if t.data_type == onnx.TensorProto.INT8}
    changed = [name for name, t in ((t.name, numpy_helper.to_array(t)) for t in tuned.initializer)
               if name in weights and not np.array_equal(weights[name], t)]
    assert changed, "the CPU form quantises the fine-tuned weights, not the checkpoint's"


def test_onnxruntime_scores_the_qat_file_as_the_fake_quantised_model_does_and_openvino_runs_its_forms_as_it_does(
        project: Path, always: dict) -> None:
    """The TensorRT-form file is the fake-quantised model (onnxruntime, the gate's runtime, scores it the same);
    OpenVINO is asked only about the INT8 files it consumes. The TensorRT form keeps full 8-bit weights, which
    OpenVINO's int8 kernels on an x86 CPU without VNNI sum into a saturating int16 (measured here, OpenVINO
    2026.4.1 on AVX2: logits up to 1.3 off, 16 of 100 answers changed); the CPU forms have 7-bit weights.
    Logits, not top-1: the model is near-random, so rounding alone moves a few answers of its flat logits."""
    params = Params.model_validate(tiny_params(data={"name": "digits", "img_size": IMG, "train_per_class": 20,
                                                     "test_per_class": 10}))
    _, test = build_datasets(params.data, load_manifest(project / "artifacts/data/manifest.json"), 0,
                             train_augment=False)
    loader = torch.utils.data.DataLoader(test, batch_size=32)
    settings = Settings(threads=1, work_dir=project)

    def scored(runtime: str, file: str) -> Accuracy:
        return accuracy(RUNTIMES[runtime].build(Session(project / "always" / file, "int8", None, IMG, 3,
                                                        settings)).predict, loader)

    fake_quant = always["artefacts"][QAT]["qat"]["fake_quant_top1"]  # PyTorch, ModelOpt's quantisers, same images
    assert abs(scored("onnxruntime", "model.int8-qat.onnx").top1 - fake_quant) <= 1.0
    assert QAT not in RUNTIMES["openvino"].consumes["int8"]
    for kind in RUNTIMES["openvino"].consumes["int8"]:
        file = always["artefacts"][kind]["file"]
        assert file is not None, always["artefacts"][kind]["reason"]
        reference, run = scored("onnxruntime", file), scored("openvino", file)
        assert float((run.logits - reference.logits).abs().max()) <= 0.05 * float(reference.logits.abs().max()), kind


@pytest.mark.slow
def test_the_bench_times_and_scores_the_qat_file_on_every_cpu_runtime(project: Path, always: dict) -> None:
    # The near-random model's logits are flat: OpenVINO runs the CPU form within 0.04 of onnxruntime's logits (the
    # test above), which moves 2 of its 100 answers (30% vs 28% at every batch size, OpenVINO 2026.4.1, AVX2).
    # A runtime that really mis-runs a file moves more: 6 points for TensorRT's form on OpenVINO.
    bench = run_cakd("bench-latency", "always=always", "--data", "artifacts/data/manifest.json", "--out", "bench",
                     "-S", "bench.runtime_max_drop=3", cwd=project, check=True)
    rows = json.loads((project / "bench/bench.json").read_text())["rows"]
    qat_rows = {(r["runtime"], r["batch_size"]): r for r in rows if r["artefact"] == QAT_CPU}
    assert {runtime for runtime, _ in qat_rows} == {"onnxruntime", "openvino"}
    for row in qat_rows.values():
        assert row["status"] == "ok" and row["p50_ms"] > 0 and row["top1"] is not None, row
        assert row["activations"] == "uint8"
    ptq = [r for r in rows if r["artefact"] == "onnx-int8" and r["runtime"] == "onnxruntime"]
    assert ptq, "post-training and quantisation-aware INT8 side by side"
    assert QAT_CPU in bench.stdout + bench.stderr


def test_auto_skips_qat_when_post_training_int8_passes_without_importing_modelopt(project: Path) -> None:
    code = ("import sys; from cakd.pipeline.cli import main; sys.argv = ['cakd', 'export', '--checkpoint', "
            "'healthy.pt', '--out', 'auto', '-S', 'export.int8_max_drop=100', '-S', 'export.int8_min_agreement=0']\n"
            "try:\n    main()\nfinally:\n    print('modelopt imported:', 'modelopt' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "modelopt imported: False" in proc.stdout
    entry = json.loads((project / "auto/export.json").read_text())["artefacts"][QAT]
    assert (entry["status"], entry["reason"]) == ("skipped", "post-training INT8 passed (qat.mode: auto)")
    off = export(project, "healthy.pt", "off", "qat.mode=off")
    assert off["artefacts"][QAT]["reason"] == "qat.mode: off"


def test_auto_runs_qat_when_post_training_int8_is_rejected_and_the_gate_judges_it(project: Path) -> None:
    report = export(project, "fragile.pt", "fragile", "qat.supervisor=teacher", teacher="healthy.pt")
    ptq, qat = report["artefacts"]["onnx-int8"], report["artefacts"][QAT]
    assert ptq["status"] == "rejected"
    assert qat["qat"]["epochs_run"] == 1 and qat["gate"]["images"] == 100  # it ran, and went through the gate
    assert qat["qat"]["supervisor"] == "healthy.pt"  # qat.supervisor: teacher learns from --teacher
    # Seeded throughout (the fixture's training, params.seed for the fine-tune): one epoch cannot teach the weights
    # around the huge constant feature: its INT8 falls to chance (10% vs FP32's 28%, far below the gate)
    for kind in (QAT, QAT_CPU):
        assert qat["status"] == report["artefacts"][kind]["status"] == "rejected"
        assert report["artefacts"][kind]["reason"].startswith("INT8 accuracy gate failed on 100 test images")
        assert report["artefacts"][kind]["file"] is None and not (project / "fragile" / FILES[kind]).exists()
    outcome = int8_outcome(report["artefacts"])
    assert outcome.startswith("no INT8 ships; "), outcome
    assert "onnx-int8 rejected: no INT8 form passes on onnxruntime: all failed" in outcome
    assert f"{QAT_CPU} (quantisation-aware" in outcome


def test_a_diverged_fine_tune_is_rejected_with_its_reason_never_shipped(project: Path) -> None:
    report = export(project, "healthy.pt", "diverged", "qat.mode=always", "qat.lr=1e12")
    for kind in (QAT, QAT_CPU):
        entry = report["artefacts"][kind]
        assert entry["status"] == "rejected" and entry["file"] is None
        assert entry["reason"].startswith("quantisation-aware training diverged: qat: loss became NaN/inf"), \
            entry["reason"]  # seeded: lr 1e12 overflows within the first steps, before any gate
    assert report["artefacts"]["onnx"]["status"] == "ok"  # the rest of the export stands


def blocked_modelopt(project: Path, *args: str) -> subprocess.CompletedProcess:
    """``cakd`` in a process where ``import modelopt`` fails, as on a machine without ``cakd[qat]``."""
    code = ("import sys; sys.modules['modelopt'] = None; from cakd.pipeline.cli import run; "
            f"sys.argv = ['cakd', *{list(args)!r}]; run()")
    return subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=600)


def test_always_without_modelopt_fails_in_one_line_naming_the_extra(project: Path) -> None:
    proc = blocked_modelopt(project, "export", "--checkpoint", "healthy.pt", "--out", "nolib", "-S", "qat.mode=always")
    assert proc.returncode == 2
    assert proc.stderr == ("cakd: error: qat.mode: always needs quantisation-aware training, but nvidia-modelopt is "
                           "not installed (pip install 'cakd[qat]')\n")
    assert not (project / "nolib").exists()


def test_auto_without_modelopt_says_why_qat_was_skipped(project: Path) -> None:
    proc = blocked_modelopt(project, "export", "--checkpoint", "fragile.pt", "--out", "nolib-auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    entry = json.loads((project / "nolib-auto/export.json").read_text())["artefacts"][QAT]
    assert (entry["status"], entry["reason"]) == ("skipped", "nvidia-modelopt is not installed (pip install "
                                                             "'cakd[qat]')")


def test_strict_fails_only_when_a_runtime_is_left_without_a_passing_int8() -> None:
    ok, rejected = {"status": "ok", "reason": None}, {"status": "rejected", "reason": "gate"}
    assert _uncovered_rejections({"onnx-int8": rejected, QAT_CPU: ok}) == []  # its CPU form serves the CPU runtimes
    assert _uncovered_rejections({"onnx-int8": rejected, QAT: ok}) == ["onnx-int8: gate"]  # TensorRT's form does not
    assert _uncovered_rejections({"onnx-int8-trt": rejected, QAT: ok}) == []
    assert _uncovered_rejections({"onnx-int8": rejected, QAT_CPU: rejected}) == ["onnx-int8: gate",
                                                                               f"{QAT_CPU}: gate"]
    assert _uncovered_rejections({"onnx-int8": rejected, "onnx-int8-trt": ok}) == ["onnx-int8: gate"]


@pytest.mark.slow
def test_a_killed_qat_resumes_from_its_last_epoch(project: Path) -> None:
    args = ["export", "--checkpoint", "healthy.pt", "--out", "killed", "--qat-dir", "killed-qat",
            "-S", "qat.mode=always", "-S", "qat.epochs=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cakd.pipeline.cli", *args], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = project / "killed-qat/checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # after the first epoch's checkpoint, during the second
    proc.wait()
    assert checkpoint.exists() and not (project / "killed").exists()  # the export folder was never swapped in

    resumed = run_cakd(*args, cwd=project, check=True, timeout=900)
    assert "resuming qat from epoch 1/3" in resumed.stdout + resumed.stderr
    entry = json.loads((project / "killed/export.json").read_text())["artefacts"][QAT]
    assert (entry["qat"]["resumed_from_epoch"], entry["qat"]["epochs_run"]) == (1, 2)
    assert entry["status"] in ("ok", "rejected") and entry["gate"]["images"] == 100

