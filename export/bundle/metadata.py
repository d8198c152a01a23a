"""The bundle's metadata: what a user needs to feed the model right, in every ONNX file and in ``export.json``.

One versioned JSON document under ``cakd.bundle`` (what ``run.py`` reads), plus flat keys people grep for
(``classes``, ``mean``, ``std``, ``img_size``...), in the style of Ultralytics' ONNX metadata and timm's
``pretrained_cfg``. The preprocessing is read from cakd's own eval transform, not restated by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import onnx

from ...pipeline import __version__
from ...pipeline.data.transforms import eval_geometry
from ...pipeline.errors import CakdError
from ..runtimes import RUNTIMES
from ..runtimes.base import INPUT_NAME
from .run import BUNDLE_KEY, BUNDLE_VERSION, PIL_FILTERS

BUNDLE_RUNTIMES = ("onnxruntime", "openvino", "tensorrt")  # what run.py runs
PRECISION = {"onnx": "fp32", "onnx-fp16": "fp16"}  # every other ONNX artefact is INT8
FORM = {"onnx": "FP32", "onnx-fp16": "FP16 weights and compute, FP32 input/output",
        "onnx-int8": "INT8 post-training static quantisation (QDQ), onnxruntime's form chosen by measurement",
        "onnx-int8-openvino": "INT8 post-training static quantisation (QDQ), OpenVINO's form chosen by measurement",
        "onnx-int8-trt": "INT8 post-training static quantisation (QDQ), TensorRT form",
        "onnx-int8-qat": "INT8 quantisation-aware training (QDQ), TensorRT form",
        "onnx-int8-qat-cpu": "INT8 quantisation-aware training weights, post-training QDQ, CPU form"}


@dataclass(frozen=True)
class Origin:
    """Where the exported model comes from (params and manifest, as ``cakd export`` reads them)."""

    classes: list[str]
    mean: list[float]
    std: list[float]
    img_size: int
    data: str  # the dataset source, e.g. digits, imagefolder
    content_hash: str | None
    student: str | None
    teacher: str | None  # None: the export is of the teacher itself
    method: str
    batch_sizes: list[int]
    bench: dict  # warmup, runs, rounds: run.py --bench's defaults, those of cakd bench-latency


def interpolation() -> str:
    """The resize interpolation of cakd's eval transform; refused when Pillow cannot reproduce it, since the
    bundle's runner could then not feed the model what it was trained and gated on."""
    resize = eval_geometry(2).transforms[0]
    name = str(getattr(resize.interpolation, "value", resize.interpolation))
    if name not in PIL_FILTERS or not resize.antialias:
        raise CakdError(f"cakd's eval resize ({name}, antialias {resize.antialias}) has no Pillow equivalent: "
                        "the bundle's runner could not reproduce it, so no bundle is exported")
    return name


def preprocessing(origin: Origin) -> dict:
    return {"convert": "RGB", "resize": {"shorter_side": origin.img_size, "interpolation": interpolation(),
                                         "antialias": True},
            "crop": {"kind": "centre", "size": origin.img_size}, "scale": 1 / 255, "mean": origin.mean,
            "std": origin.std, "colour_order": "RGB", "value_range": [0, 255]}


def artefact_runtimes(kind: str) -> list[str]:
    """The runtimes run.py may run this artefact on: those that consume it, and onnxruntime for every ONNX file
    (the reference runtime its golden logits come from)."""
    users = [name for name in BUNDLE_RUNTIMES if name in RUNTIMES
             and any(kind in kinds for kinds in RUNTIMES[name].consumes.values())]
    return ["onnxruntime", *[u for u in users if u != "onnxruntime"]]


def artefact_doc(kind: str, entry: dict) -> dict:
    return {"file": entry["file"], "precision": PRECISION.get(kind, "int8"), "form": FORM[kind],
            "activations": (entry.get("gate") or {}).get("activations"), "runtimes": artefact_runtimes(kind),
            "gate": entry.get("parity") or entry.get("gate")}


def bundle_doc(origin: Origin, report: dict) -> dict:
    """The ``cakd.bundle`` document: classes, input, preprocessing, model, origin, artefacts with their gates."""
    model = report["model"]
    artefacts = {kind: artefact_doc(kind, entry) for kind, entry in report["artefacts"].items()
                 if entry["status"] == "ok" and kind in FORM}
    return {"version": BUNDLE_VERSION, "classes": origin.classes,
            "input": {"name": INPUT_NAME, "layout": "NCHW", "batch": "dynamic", "size": [origin.img_size] * 2,
                      "channels": model.get("in_chans", 3), "colour_order": "RGB", "dtype": "float32"},
            "preprocessing": preprocessing(origin),
            "model": {"timm_name": model["name"], "kwargs": model.get("kwargs", {}),
                      "num_classes": model["num_classes"], "img_size": model["img_size"]},
            "origin": {"cakd_version": __version__, "student": origin.student, "teacher": origin.teacher,
                       "method": origin.method, "checkpoint_sha256": report.get("checkpoint_sha256"),
                       "data": origin.data, "data_content_hash": origin.content_hash},
            "batch_sizes": origin.batch_sizes, "bench": origin.bench, "artefacts": artefacts}


def flat_keys(doc: dict, kind: str) -> dict[str, str]:
    """The keys people grep for, each a string (ONNX metadata values are strings; lists as JSON)."""
    pre, art = doc["preprocessing"], doc["artefacts"][kind]
    return {"classes": json.dumps(doc["classes"]), "names": json.dumps(dict(enumerate(doc["classes"]))),
            "mean": json.dumps(pre["mean"]), "std": json.dumps(pre["std"]), "img_size": str(doc["input"]["size"][0]),
            "layout": doc["input"]["layout"], "colour_order": pre["colour_order"],
            "interpolation": pre["resize"]["interpolation"], "precision": art["precision"], "artefact": kind,
            "cakd.version": doc["origin"]["cakd_version"], "model": str(doc["model"]["timm_name"])}


def stamp_onnx(path: Path, doc: dict, kind: str) -> None:
    """Write the document and the flat keys into the ONNX file's ``metadata_props`` (replacing earlier ones)."""
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({BUNDLE_KEY: json.dumps({**doc, "artefact": kind}), **flat_keys(doc, kind)})
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
