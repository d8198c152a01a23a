"""``--format trt`` where TensorRT or a GPU is missing: one clear error and the exact trtexec command."""

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

without_tensorrt = pytest.mark.skipif(
    tensorrt_unavailable() is None, reason="TensorRT and a CUDA GPU are present: the fallback path does not apply")

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


@without_tensorrt
def test_trt_export_without_tensorrt_fails_clearly_and_writes_trtexec(project: tuple[Params, Path, Path],
                                                                       tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    out = tmp_path / "export"

    with pytest.raises(CakdError) as err:
        export.run(params, checkpoint, manifest, out, "trt", ["fp32"])

    script = out / "model.fp16.trtexec.sh"
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot build a TensorRT engine here: ")
    assert tensorrt_unavailable() in message and str(script) in message
    # the FP16 ONNX the engine is built from was made (and parity-gated) first
    report = json.loads((out / "export.json").read_text())
    assert report["artefacts"]["onnx-fp16"]["status"] == "ok" and (out / "model.fp16.onnx").is_file()
    assert "tensorrt" not in report and not list(out.glob("*.engine"))
    command = script.read_text().splitlines()[-1]
    assert command == ("trtexec --onnx=model.fp16.onnx --saveEngine=model.fp16.engine --stronglyTyped "
                       "--minShapes=input:1x3x16x16 --optShapes=input:8x3x16x16 --maxShapes=input:32x3x16x16 "
                       "--memPoolSize=workspace:256M")
    assert os.access(script, os.X_OK)

    # the script runs from any directory and hands trtexec files that exist: a stand-in trtexec on PATH
    # checks the ONNX path and records its arguments
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in --onnx=*) test -f "${a#--onnx=}" || exit 9;; '
                    'esac; done\necho "$@" > args.txt\n')
    fake.chmod(0o755)
    subprocess.run([str(script)], cwd=tmp_path, check=True, env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert (out / "args.txt").read_text().split() == command.split()[1:]


@without_tensorrt
def test_a_second_trt_export_reuses_the_onnx_of_the_same_checkpoint(project: tuple[Params, Path, Path],
                                                                    tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    out = tmp_path / "export"
    with pytest.raises(CakdError, match="trtexec command is in"):
        export.run(params, checkpoint, manifest, out, "trt", ["fp32"])
    onnx_mtime = (out / "model.fp16.onnx").stat().st_mtime_ns

    with pytest.raises(CakdError, match="trtexec command is in"):
        export.run(params, checkpoint, manifest, out, "trt", ["fp32"])

    assert (out / "model.fp16.onnx").stat().st_mtime_ns == onnx_mtime  # same checkpoint, same settings: reused


@without_tensorrt
def test_int8_engine_is_built_from_the_symmetric_qdq_onnx(project: tuple[Params, Path, Path],
                                                          tmp_path: Path) -> None:
    params, checkpoint, manifest = project
    tree = params.model_dump()
    tree["export"]["trt"]["precision"] = "int8"
    params = Params.model_validate(tree)
    out = tmp_path / "export"

    with pytest.raises(CakdError, match="model.int8-trt.trtexec.sh"):
        export.run(params, checkpoint, manifest, out, "trt", ["fp32"])

    trt = json.loads((out / "export.json").read_text())["artefacts"]["onnx-int8-trt"]
    assert trt["status"] == "ok" and trt["gate"]["activations"] == "int8" and (out / "model.int8-trt.onnx").is_file()
    assert trt["gate"]["quantize_bias"] is False  # TensorRT has no INT32 DequantizeLinear
    script = (out / "model.int8-trt.trtexec.sh").read_text()
    assert "--onnx=model.int8-trt.onnx --saveEngine=model.int8.engine" in script


@without_tensorrt
def test_build_engine_quotes_paths_for_the_shell(tmp_path: Path) -> None:
    command = trtexec_command(Path("my model.onnx"), Path("my model.engine"), [1], 32, 64)
    assert "--onnx='my model.onnx' --saveEngine='my model.engine'" in command
    with pytest.raises(CakdError):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp32", [1], 64, 32)
    assert (tmp_path / "m.trtexec.sh").is_file() and not (tmp_path / "m.engine").exists()
