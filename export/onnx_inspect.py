"""What an ONNX file is, read from the file itself: its artefact kind, its INT8 activations' zero-point type, and
the input and output shapes it takes and gives. The exporter (a hand-given FP32 ONNX), the bench (a hand-given
file and every row's activations) and the shortlist read files through these, so none imports another's module.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from ..pipeline.errors import CakdError
from ..pipeline.files.fileio import bounded
from ..pipeline.settings.params import check_model_shape
from .artefacts import Artefact


def onnx_artefact(path: Path) -> Artefact:
    """The artefact kind of an ONNX file, judged by its content (not its name)."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # a file that is not ONNX raises DecodeError and others
        raise CakdError(f"{path} is not a readable ONNX model ({type(err).__name__})") from None
    if any(node.op_type == "QuantizeLinear" for node in graph.node):
        return "onnx-int8"
    return "onnx-fp16" if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer) else "onnx"


def int8_activations(path: Path) -> str:
    """``uint8`` (asymmetric) or ``int8`` (symmetric): the zero-point type of the activations."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name: t for t in graph.initializer}  # onnxruntime's files; torch's exporter writes Constant nodes
    inits.update({node.output[0]: node.attribute[0].t for node in graph.node
                  if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits and len(node.input) > 2:
            return "uint8" if inits[node.input[2]].data_type == onnx.TensorProto.UINT8 else "int8"
    return "int8"


def onnx_shape(path: Path) -> tuple[int, int, int]:
    """(in_chans, img_size, num_classes) read from an ONNX file's input and output; one line if it has none."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        classes = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    except Exception as err:  # onnx raises DecodeError, IndexError... for files that are not ONNX models
        reason = f"{type(err).__name__}: {bounded(str(err), 120)}"
        raise CakdError(f"{path} is not a readable ONNX model ({reason})") from None
    if len(dims) != 4 or dims[1] <= 0 or dims[2] != dims[3] or dims[2] <= 0:
        raise CakdError(f"{path} takes an input of shape {bounded(str(dims))}, not a batch of square images "
                        "(N, C, H, W)")
    check_model_shape(dims[1], dims[3], classes or None, str(path))
    return dims[1], dims[3], classes
