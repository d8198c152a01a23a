"""``--format trt``: the engine where TensorRT and a GPU are; elsewhere every engine prepared for the target (its
trtexec script, timing cache and sidecar). Tests of what both branches share run on every machine and check the
branch that machine takes; only the fallback's own tests skip where TensorRT runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from cakd.export.runtimes.tensorrt_gpu import build_engine, profile_shapes, trtexec_command
from cakd.export.runtimes.tensorrt_gpu import unavailable as tensorrt_unavailable
from cakd.pipeline.data import prepare_data
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model, save_model
from cakd.pipeline.settings.params import Params
from cakd.pipeline.stages import export
from tests.conftest import run_cakd, write_params

without_tensorrt = pytest.mark.skipif(
    tensorrt_unavailable() is None, reason="TensorRT and a CUDA GPU are present: the engine is built instead")

IMG = 16


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, Path]:
    root = tmp_path_factory.mktemp("project")
    params = Params.model_validate({
        "data": {"name": "digits", "img_size": IMG, "train_per_class": 10, "test_per_class": 5},
        "teacher": {"model": "resnet18"}, "students": {"student": {"model": "resnet10t"}},
        "export": {"parity_images": 16, "calib_images": 16, "int8_max_drop": 100.0, "int8_min_agreement": 0.0,
                   "trt": {"precision": "fp16", "batch_sizes": [1, 8, 32], "workspace_mb": 256}},
        "deploy": {"runtimes": ["onnxruntime"], "precisions": ["fp32"]},
    })
    manifest = prepare_data(params.data, params.seed, root / "data")
    torch.manual_seed(0)
    checkpoint = root / "student.pt"
    save_model(create_model(ModelSpec("resnet10t", manifest["num_classes"], IMG)), checkpoint)
    return params, checkpoint, root / "data" / "manifest.json"


def test_profile_spans_the_requested_batch_sizes() -> None:
    assert profile_shapes([32, 1, 8], 16) == {"min": [1, 3, 16, 16], "opt": [8, 3, 16, 16],
                                              "max": [32, 3, 16, 16]}
    assert profile_shapes([4], 224, in_chans=1)["opt"] == [4, 1, 224, 224]


def trt_export(params: Params, checkpoint: Path, manifest: Path, out: Path) -> dict:
    """``cakd export --format trt`` as this machine runs it: the engine built where TensorRT and a GPU are, else
    prepared for the target with no engine here. Returns the report."""
    report = export.run(params, checkpoint, manifest, out, "trt", ["fp32"])
    kind = "onnx-int8-trt" if params.export.trt.precision == "int8" else "onnx-fp16"
    engine = out / f"{Path(report['artefacts'][kind]['file']).stem}.engine"
    if tensorrt_unavailable() is None:
        assert report["tensorrt"]["status"] == "built" and engine.stat().st_size > 0
    else:
        assert report["tensorrt"]["status"] == "prepared" and not engine.exists()
    return report


def stand_in_tools(folder: Path) -> dict[str, str]:
    """nvidia-smi and trtexec stand-ins on PATH: trtexec checks that the ONNX file exists (the real one fails on a
    missing file), records its arguments and writes an (empty) engine."""
    folder.mkdir()
    (folder / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA Test GPU 80GB'\n")
    (folder / "trtexec").write_text(
        '#!/bin/sh\n[ "$1" = --help ] && { echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300]"; exit 0; }\n'
        'for a in "$@"; do case "$a" in --onnx=*) test -f "${a#--onnx=}" || exit 9;; '
        '--saveEngine=*) touch "${a#--saveEngine=}";; esac; done\n'
        'echo "$@" > args.txt\n')
    for tool in ("nvidia-smi", "trtexec"):
        (folder / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:/usr/bin:/bin"}


@without_tensorrt
def test_trt_export_without_tensorrt_prepares_every_engine_for_the_target(project: tuple[Params, Path, Path],
                                                                          tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    out = tmp_path / "export"

    report = export.run(params, checkpoint, manifest, out, "trt", ["fp32"])

    assert report["tensorrt"] == {"status": "prepared", "reason": tensorrt_unavailable(),
                                  "script": "model.fp16.trtexec.sh"}
    assert report["bundle"]["tensorrt"]["scripts"] == ["model.trtexec.sh", "model.fp16.trtexec.sh"]
    saved = json.loads((out / "export.json").read_text())
    assert saved["artefacts"]["onnx-fp16"]["status"] == "ok" and saved["tensorrt"]["status"] == "prepared"
    assert not list(out.glob("*.engine"))
    script = out / "model.fp16.trtexec.sh"
    command = next(line for line in script.read_text().splitlines() if line.startswith("trtexec --onnx"))
    assert command == ("trtexec --onnx=model.fp16.onnx --saveEngine=model.fp16.engine --stronglyTyped "
                       "--minShapes=input:1x3x16x16 --optShapes=input:8x3x16x16 --maxShapes=input:32x3x16x16 "
                       '--memPoolSize=workspace:256M --timingCacheFile="$cache"')
    assert os.access(script, os.X_OK)

    # the script runs from any directory, names the cache after the GPU and TensorRT version, records both
    subprocess.run([str(script)], cwd=tmp_path, check=True, env=stand_in_tools(tmp_path / "bin"),
                   capture_output=True)
    cache = "timing-cache.NVIDIA_Test_GPU_80GB.trt10.3.0.cache"
    assert (out / "args.txt").read_text().split() == [*command.split()[1:-1], f"--timingCacheFile={cache}"]
    sidecar = json.loads((out / "model.fp16.engine.json").read_text())
    assert sidecar["gpu"] == "NVIDIA Test GPU 80GB" and sidecar["tensorrt_version"] == "10.3.0"
    assert sidecar["timing_cache"] == cache and sidecar["input_shapes"]["max"] == [32, 3, 16, 16]


def test_a_second_trt_export_reuses_the_onnx_of_the_same_checkpoint(project: tuple[Params, Path, Path],
                                                                    tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    out = tmp_path / "export"
    trt_export(params, checkpoint, manifest, out)
    onnx_mtime = (out / "model.fp16.onnx").stat().st_mtime_ns

    trt_export(params, checkpoint, manifest, out)

    assert (out / "model.fp16.onnx").stat().st_mtime_ns == onnx_mtime  # same checkpoint, same settings: reused


def test_int8_engine_is_built_from_the_symmetric_qdq_onnx(project: tuple[Params, Path, Path],
                                                          tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    tree = params.model_dump()
    tree["export"]["trt"]["precision"] = "int8"
    params = Params.model_validate(tree)
    out = tmp_path / "export"

    report = trt_export(params, checkpoint, manifest, out)

    trt = json.loads((out / "export.json").read_text())["artefacts"]["onnx-int8-trt"]
    assert trt["status"] == "ok" and trt["gate"]["activations"] == "int8" and (out / "model.int8-trt.onnx").is_file()
    assert trt["gate"]["quantize_bias"] is False  # TensorRT has no INT32 DequantizeLinear
    if report["tensorrt"]["status"] == "prepared":
        script = (out / "model.int8-trt.trtexec.sh").read_text()
        assert "--onnx=model.int8-trt.onnx --saveEngine=model.int8-trt.engine" in script


@without_tensorrt
def test_cakd_export_trt_exits_3_and_leaves_dvcs_export_folder_alone(project: tuple[Params, Path, Path],
                                                                     tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    write_params(tmp_path / "params.yaml", params.model_dump(mode="json"))
    proc = run_cakd("export", "--format", "trt", "--checkpoint", str(checkpoint), "--data", str(manifest),
                    cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if "TensorRT engine not built here" in line)
    assert "run ./model.fp16.trtexec.sh there" in line and "--runtime tensorrt --artefact onnx-fp16" in line
    assert (tmp_path / "artifacts/trt/student/model.fp16.trtexec.sh").is_file()
    assert not (tmp_path / "artifacts/export").exists()


def test_the_trtexec_command_quotes_paths_for_the_shell() -> None:
    command = trtexec_command(Path("my model.onnx"), Path("my model.engine"), [1], 32, 64)
    assert "--onnx='my model.onnx' --saveEngine='my model.engine'" in command


@without_tensorrt
def test_build_engine_without_tensorrt_writes_only_the_script(tmp_path: Path) -> None:
    with pytest.raises(CakdError):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp32", [1], 64, 32)
    assert (tmp_path / "m.trtexec.sh").is_file() and not (tmp_path / "m.engine").exists()


@without_tensorrt
def test_triton_repository_declares_what_the_files_take_and_builds_plans_on_the_target(
        project: tuple[Params, Path, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    params, checkpoint, manifest = project
    tree = params.model_dump()
    tree["export"]["triton"] = True
    out = tmp_path / "export"
    report = export.run(Params.model_validate(tree), checkpoint, manifest, out, "trt", ["fp32"])

    models = report["bundle"]["triton"]["models"]
    assert models == ["export_onnx_onnxruntime", "export_onnx-fp16_onnxruntime", "export_onnx_tensorrt",
                      "export_onnx-fp16_tensorrt"]
    repo = out / "triton"
    for name in models[:2]:
        text = (repo / name / "config.pbtxt").read_text()
        session = ort.InferenceSession(str(repo / name / "1/model.onnx"))
        inp, outp = session.get_inputs()[0], session.get_outputs()[0]
        assert f'name: "{inp.name}"' in text and f"dims: [ {', '.join(map(str, inp.shape[1:]))} ]" in text
        assert f'name: "{outp.name}"' in text and f"dims: [ {outp.shape[1]} ]" in text
        assert 'backend: "onnxruntime"' in text and f"max_batch_size: {max(params.bench.batch_sizes)}" in text
        assert (repo / name / "labels.txt").read_text().split() == report["bundle"]["classes"]
    plan = (repo / models[3] / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in plan and "max_batch_size: 32" in plan
    assert "preferred_batch_size: [ 1, 8, 32 ]" in plan and "kind: KIND_GPU" in plan

    subprocess.run([str(repo / "build_plans.sh")], cwd=tmp_path, check=True, env=stand_in_tools(tmp_path / "bin"),
                   capture_output=True)
    for name in models[2:]:
        assert (repo / name / "1/model.plan.json").is_file()
