"""``--format trt``: the engine where TensorRT and a GPU are, else one clear error and the exact trtexec command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from cakd.export.runtimes.tensorrt_gpu import build_engine, profile_shapes, trtexec_command, write_trtexec_script
from cakd.export.runtimes.tensorrt_gpu import unavailable as tensorrt_unavailable
from cakd.pipeline.data import prepare_data
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model, save_model
from cakd.pipeline.settings.params import Params
from cakd.pipeline.stages import export

# The fallback path (no TensorRT or no GPU: the trtexec script) applies only where TensorRT cannot run; every other
# test here runs on every machine and checks the branch that machine takes (the engine, or the script).
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
    """``cakd export --format trt`` as this machine runs it: the engine where TensorRT and a GPU are, else one line
    naming what is missing and the trtexec script. Returns export.json."""
    precision = params.export.trt.precision
    if tensorrt_unavailable() is None:
        report = export.run(params, checkpoint, manifest, out, "trt", ["fp32"])
        engine = out / report["tensorrt"]["engine"]
        assert engine.name == f"model.{precision}.engine" and engine.stat().st_size > 0
    else:
        with pytest.raises(CakdError) as err:
            export.run(params, checkpoint, manifest, out, "trt", ["fp32"])
        message = str(err.value)
        assert "\n" not in message and message.startswith("cannot build a TensorRT engine here: ")
        assert tensorrt_unavailable() in message and ".trtexec.sh" in message
        assert not list(out.glob("*.engine"))
    return json.loads((out / "export.json").read_text())


def test_trt_export_gates_the_fp16_onnx_first(project: tuple[Params, Path, Path], tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    out = tmp_path / "export"
    report = trt_export(params, checkpoint, manifest, out)
    # the FP16 ONNX the engine is built from was made (and parity-gated) first
    assert report["artefacts"]["onnx-fp16"]["status"] == "ok" and (out / "model.fp16.onnx").is_file()
    assert ("tensorrt" in report) == (tensorrt_unavailable() is None)


def test_trtexec_script_runs_from_any_directory(tmp_path: Path) -> None:
    """The script hands trtexec files that exist: a stand-in trtexec on PATH checks the ONNX path and records its
    arguments."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.fp16.onnx").write_bytes(b"onnx")
    script = write_trtexec_script(out / "model.fp16.onnx", out / "model.fp16.engine", [1, 8, 32], 16, 256)
    assert script == out / "model.fp16.trtexec.sh" and os.access(script, os.X_OK)
    command = script.read_text().splitlines()[-1]
    assert command == ("trtexec --onnx=model.fp16.onnx --saveEngine=model.fp16.engine --stronglyTyped "
                       "--minShapes=input:1x3x16x16 --optShapes=input:8x3x16x16 --maxShapes=input:32x3x16x16 "
                       "--memPoolSize=workspace:256M")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in --onnx=*) test -f "${a#--onnx=}" || exit 9;; '
                    'esac; done\necho "$@" > args.txt\n')
    fake.chmod(0o755)
    subprocess.run([str(script)], cwd=tmp_path, check=True, env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert (out / "args.txt").read_text().split() == command.split()[1:]


@without_tensorrt
def test_trt_export_without_tensorrt_writes_the_trtexec_script(project: tuple[Params, Path, Path],
                                                              tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    out = tmp_path / "export"
    report = trt_export(params, checkpoint, manifest, out)
    assert "tensorrt" not in report
    assert (out / "model.fp16.trtexec.sh").read_text().splitlines()[-1].startswith(
        "trtexec --onnx=model.fp16.onnx --saveEngine=model.fp16.engine ")


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

    trt = report["artefacts"]["onnx-int8-trt"]
    assert trt["status"] == "ok" and trt["gate"]["activations"] == "int8" and (out / "model.int8-trt.onnx").is_file()
    assert trt["gate"]["quantize_bias"] is False  # TensorRT has no INT32 DequantizeLinear
    if tensorrt_unavailable() is None:
        assert report["tensorrt"]["onnx"] == "model.int8-trt.onnx"
    else:
        script = (out / "model.int8-trt.trtexec.sh").read_text()
        assert "--onnx=model.int8-trt.onnx --saveEngine=model.int8.engine" in script


def test_trtexec_command_quotes_paths_for_the_shell() -> None:
    command = trtexec_command(Path("my model.onnx"), Path("my model.engine"), [1], 32, 64)
    assert "--onnx='my model.onnx' --saveEngine='my model.engine'" in command


@without_tensorrt
def test_build_engine_without_tensorrt_writes_only_the_script(tmp_path: Path) -> None:
    with pytest.raises(CakdError):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp32", [1], 64, 32)
    assert (tmp_path / "m.trtexec.sh").is_file() and not (tmp_path / "m.engine").exists()
