"""A Triton Inference Server model repository in the bundle (opt-in: ``export.triton`` or ``cakd export --triton``).

Each ONNX artefact onnxruntime runs becomes a model on Triton's onnxruntime backend (its file copied into
version 1), with dynamic batching up to the largest shipped batch size. Each TensorRT artefact becomes a
``tensorrt_plan`` model whose plan is built on the target: ``triton/build_plans.sh`` runs the bundle's trtexec
script and moves the engine into place (an engine only fits the GPU and TensorRT version it was built with).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ...pipeline.files.fileio import write_text
from ..runtimes.base import INPUT_NAME, OUTPUT_NAME
from .trt_prepare import SCRIPT_SUFFIX, trt_artefacts

REPOSITORY = "triton"


def model_name(label: str, kind: str, backend: str) -> str:
    """Triton model names: letters, digits, ``_`` and ``-`` (``student_onnx-int8_onnxruntime``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{label}_{kind}_{backend}")


def config(name: str, backend: str, doc: dict, max_batch: int, preferred: list[int]) -> str:
    """config.pbtxt: the input and output as the bundle's metadata declares them, the batch range, labels."""
    c, (h, w) = doc["input"]["channels"], doc["input"]["size"]
    kind = "KIND_GPU" if backend == "tensorrt_plan" else "KIND_CPU"
    head = 'platform: "tensorrt_plan"' if backend == "tensorrt_plan" else 'backend: "onnxruntime"'
    batches = ", ".join(str(b) for b in sorted(set(preferred)) if b <= max_batch)
    return (f'name: "{name}"\n{head}\nmax_batch_size: {max_batch}\n'
            f'input [\n  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_FP32\n    format: FORMAT_NCHW\n'
            f"    dims: [ {c}, {h}, {w} ]\n  }}\n]\n"
            f'output [\n  {{\n    name: "{OUTPUT_NAME}"\n    data_type: TYPE_FP32\n'
            f'    dims: [ {len(doc["classes"])} ]\n'
            f'    label_filename: "labels.txt"\n  }}\n]\n'
            f"dynamic_batching {{\n  preferred_batch_size: [ {batches} ]\n  max_queue_delay_microseconds: 100\n}}\n"
            f"instance_group [\n  {{\n    kind: {kind}\n    count: 1\n  }}\n]\n")


def _model(repo: Path, name: str, text: str, labels: str) -> Path:
    (repo / name / "1").mkdir(parents=True)
    write_text(repo / name / "config.pbtxt", text)
    write_text(repo / name / "labels.txt", labels)
    return repo / name / "1"


def write_repository(folder: Path, doc: dict, trt_batch_sizes: list[int] | None) -> list[str]:
    """triton/ with one model per onnxruntime artefact and, when TensorRT is a target, per TensorRT artefact;
    returns the model names."""
    repo, label = folder / REPOSITORY, doc["origin"]["student"] or "model"
    labels = "".join(f"{c}\n" for c in doc["classes"])
    names, plans = [], []
    for kind, entry in doc["artefacts"].items():
        if "onnxruntime" in entry["runtimes"]:
            name = model_name(label, kind, "onnxruntime")
            text = config(name, "onnxruntime", doc, max(doc["batch_sizes"]), doc["batch_sizes"])
            shutil.copyfile(folder / entry["file"], _model(repo, name, text, labels) / "model.onnx")
            names.append(name)
    for kind, onnx_file in (trt_artefacts(doc["artefacts"]) if trt_batch_sizes else {}).items():
        name = model_name(label, kind, "tensorrt")
        _model(repo, name, config(name, "tensorrt_plan", doc, max(trt_batch_sizes), trt_batch_sizes), labels)
        stem = Path(onnx_file).stem
        plans.append(f'"$here/../{stem}{SCRIPT_SUFFIX}"\nmv "$here/../{stem}.engine" "$here/{name}/1/model.plan"\n'
                     f'cp "$here/../{stem}.engine.json" "$here/{name}/1/model.plan.json"\n')
        names.append(name)
    if plans:
        script = repo / "build_plans.sh"
        write_text(script, "#!/bin/sh\n# Build every TensorRT plan of this repository on the target GPU.\nset -e\n"
                   'here="$(cd "$(dirname "$0")" && pwd)"\n' + "".join(plans))
        script.chmod(0o755)
    return names
