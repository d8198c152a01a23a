"""The artefact table (``ARTEFACTS``): every kind of file ``cakd export`` can make, in one place.

Shaped like the runtime table (``runtimes.RUNTIMES``) and Ultralytics' ``export_formats()``: one row per kind
gives its file name, precision, the step of the exporter that makes it (``maker``, a name: this module imports
no exporter, so the bench can read the table without reaching one), its INT8 form, its gate, and whether the
shortlist may make it from an untrained network. Which runtimes consume a kind is said once, by the runtimes
(``runtimes.consumers``). The exporter, the shortlist, the readers of an export folder and the summary all read
this table: adding an artefact that an existing maker can make is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Artefact = Literal["checkpoint", "onnx", "onnx-fp16", "onnx-int8", "onnx-int8-openvino", "onnx-int8-trt",
                   "onnx-int8-qat", "onnx-int8-qat-cpu"]
Precision = Literal["fp32", "fp16", "int8"]
# The exporter's steps (export/make/artefacts.py): copy the checkpoint, FP32 ONNX, FP16 ONNX, post-training INT8
# (onnxruntime static QDQ), quantisation-aware INT8 (one ModelOpt fine-tune for every row of this maker).
Maker = Literal["copy", "onnx", "fp16", "int8", "qat"]
# An INT8 file's QDQ form: the CPU runtimes' (export.int8_activations, INT32 biases: onnxruntime's fast kernels)
# or TensorRT's (symmetric int8 activations, float biases: TensorRT rejects the others).
Int8Form = Literal["cpu", "trt"]

INT8_GATE = "INT8 gate: top-1 drop and agreement with FP32 on the test set; a rejected file is removed"


@dataclass(frozen=True)
class ArtefactKind:
    """One row of the artefact table."""

    file: str
    precision: Precision
    maker: Maker
    gate: str
    form: Int8Form | None = None  # INT8 rows only
    untrained: bool = True  # the shortlist may make it from an untrained network (QAT needs a trained one)
    # the one CPU runtime this file is made for: its form is chosen by measurement on that runtime
    # (export/make/int8_search.py); None: every runtime of its form runs the same file
    chosen_on: str | None = None


ARTEFACTS: dict[Artefact, ArtefactKind] = {
    "checkpoint": ArtefactKind("model.pt", "fp32", "copy", "none: a copy of the source checkpoint"),
    "onnx": ArtefactKind("model.onnx", "fp32", "onnx", "FP32 parity vs PyTorch; failing it stops the export"),
    "onnx-fp16": ArtefactKind("model.fp16.onnx", "fp16", "fp16", "FP16 parity vs PyTorch (export.fp16_atol)"),
    "onnx-int8": ArtefactKind("model.int8.onnx", "int8", "int8", INT8_GATE, form="cpu", chosen_on="onnxruntime"),
    "onnx-int8-openvino": ArtefactKind("model.int8-openvino.onnx", "int8", "int8", INT8_GATE, form="cpu",
                                       chosen_on="openvino"),
    "onnx-int8-trt": ArtefactKind("model.int8-trt.onnx", "int8", "int8", INT8_GATE, form="trt"),
    "onnx-int8-qat": ArtefactKind("model.int8-qat.onnx", "int8", "qat", INT8_GATE, form="trt", untrained=False),
    "onnx-int8-qat-cpu": ArtefactKind("model.int8-qat-cpu.onnx", "int8", "qat", INT8_GATE, form="cpu",
                                      untrained=False),
}
FILES: dict[Artefact, str] = {kind: row.file for kind, row in ARTEFACTS.items()}  # a view of the table


def made_by(maker: Maker) -> tuple[Artefact, ...]:
    """The kinds one step of the exporter makes, in table order."""
    return tuple(kind for kind, row in ARTEFACTS.items() if row.maker == maker)


def int8_kinds(form: Int8Form | None = None) -> tuple[Artefact, ...]:
    """INT8 kinds (of one form, when given), in table order: post-training before quantisation-aware."""
    return tuple(kind for kind, row in ARTEFACTS.items()
                 if row.precision == "int8" and (form is None or row.form == form))


def int8_kinds_on(runtime: str) -> tuple[Artefact, ...]:
    """The CPU-form INT8 kinds ``runtime`` runs: those made for it and those made for every CPU runtime."""
    return tuple(kind for kind in int8_kinds("cpu") if ARTEFACTS[kind].chosen_on in (None, runtime))
