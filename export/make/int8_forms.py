"""The INT8 forms tried for each CPU runtime's own INT8 file: a form is a name and how to make it.

One QDQ file is right and fast on onnxruntime and wrong or slow on OpenVINO (issue 33), so each CPU runtime gets
its own file, chosen among these forms by measurement on that runtime (``int8_search``):

- ``all``: onnxruntime's ``quantize_static`` on every op type it can quantise, 7-bit weights (``reduce_range``);
- ``all-8bit``: the same with 8-bit weights (tried only where the CPU has VNNI: without it they saturate);
- ``conv-gemm-matmul``: only Conv, Gemm and MatMul quantised;
- ``minus-mishandled``: every op type but those this runtime gets wrong when they alone are quantised;
- ``k-sensitive-float``: ``all`` with the k layers of largest weight quantisation error (lowest SQNR against
  the float weight) kept float;
- ``nncf`` (OpenVINO only): NNCF, OpenVINO's own quantiser, on the same calibration images; when its file fails
  the gate, ``nncf.quantize_with_accuracy_control`` with the gate's top-1 as its metric.

Every onnxruntime-made file is cached by its recipe in the ``FormJob``: a form two runtimes try is made once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ...pipeline.settings.params import ExportParams
from ..measure.sysinfo import cpu_flags
from ..runtimes.base import INPUT_NAME
from .int8 import prepare, quantize_int8

CONV_GEMM_MATMUL = ["Conv", "Gemm", "MatMul"]
Batch = tuple[torch.Tensor, torch.Tensor]  # test images and their labels


class FormUnavailable(Exception):
    """A form that cannot be made here or would repeat another (its message says why); the search records it."""


@dataclass
class FormJob:
    """What every form is made from, and the files made so far (one per recipe, shared between runtimes).
    ``check(path, runtime)`` is the INT8 gate of a file on a runtime at every serving batch size
    (``runtime_gate.check_on_runtime``); ``score(path, runtime, batches)`` its top-1 (percent) on each of the
    given test batches; ``test_batches`` the test split at the largest serving batch size."""

    fp32_onnx: Path
    work: Path
    calib_images: torch.Tensor
    cfg: ExportParams
    check: Callable[[Path, str], dict]
    score: Callable[[Path, str, list[Batch]], list[float]]
    test_batches: list[Batch] = field(default_factory=list)
    made: dict[str, Path] = field(default_factory=dict)

    def qdq(self, *, reduce_range: bool = True, op_types: list[str] | None = None,
            exclude: list[str] | None = None) -> Path:
        """onnxruntime's QDQ file of this recipe (uint8/int8 activations as ``export.int8_activations``), made once."""
        recipe = {"reduce_range": reduce_range, "op_types": op_types, "exclude": exclude}
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        if key not in self.made:
            path = self.work / f"qdq-{key}.onnx"
            quantize_int8(self.fp32_onnx, path, self.calib_images, activations=self.cfg.int8_activations,
                          reduce_range=reduce_range, op_types=op_types, nodes_to_exclude=exclude)
            self.made[key] = path
        return self.made[key]


Made = tuple[Path, dict]  # the form's file and how it was made (recorded in export.json)


@dataclass(frozen=True)
class Form:
    """One row of the form table: its quantiser, how to make it for a runtime, and which runtimes may try it."""

    name: str
    quantiser: str
    make: Callable[[FormJob, str], Made]
    runtimes: tuple[str, ...] | None = None  # None: every CPU runtime


def _all(job: FormJob, runtime: str) -> Made:
    return job.qdq(reduce_range=True), {"reduce_range": True}


VNNI = {"avx512_vnni", "avx_vnni", "amx_int8"}  # x86 int8 dot products that do not saturate at 8-bit weights


def _all_8bit(job: FormJob, runtime: str) -> Made:
    """Skipped on an x86 CPU without VNNI, where 8-bit weights saturate the u8 x s8 int16 sums of onnxruntime's
    and OpenVINO's int8 kernels: on such a CPU (AVX2, 2026-12-07) this form failed the gate on every default
    model on both runtimes (docs/INT8_RUNTIMES.md), so making and gating it there only costs export time."""
    if platform.machine().lower() in ("x86_64", "amd64") and not VNNI & set(cpu_flags()):
        raise FormUnavailable("no VNNI on this x86 CPU: 8-bit weights saturate its int8 kernels' sums "
                              "(avx512_vnni, avx_vnni, amx_int8 absent); 7-bit weights (all) are its form")
    return job.qdq(reduce_range=False), {"reduce_range": False}


def _conv_gemm_matmul(job: FormJob, runtime: str) -> Made:
    return job.qdq(op_types=CONV_GEMM_MATMUL), {"reduce_range": True, "op_types": CONV_GEMM_MATMUL}


def quantisable_op_types(fp32_onnx: Path) -> list[str]:
    """The op types of the graph that onnxruntime's QDQ quantiser handles, sorted."""
    from onnxruntime.quantization.registry import QDQRegistry

    return sorted({node.op_type for node in onnx.load(str(fp32_onnx)).graph.node} & set(QDQRegistry))


def _minus_mishandled(job: FormJob, runtime: str) -> Made:
    """Each op type quantised alone and gated on ``runtime``; the op types that fail there are left float."""
    types = quantisable_op_types(job.fp32_onnx)
    alone = {}
    for op_type in types:
        result = job.check(job.qdq(op_types=[op_type]), runtime)
        worst = min(at["agreement"] for at in result["checked"].values())
        alone[op_type] = {"passed": len(result["batch_sizes"]) == len(result["checked"]), "agreement": worst}
    mishandled = [t for t in types if not alone[t]["passed"]]
    if not mishandled:
        raise FormUnavailable(f"no op type fails on {runtime} when quantised alone: the same file as all")
    kept = [t for t in types if t not in mishandled]
    if not kept:
        raise FormUnavailable(f"every op type fails on {runtime} when quantised alone ({', '.join(types)})")
    return job.qdq(op_types=kept), {"reduce_range": True, "op_types": kept, "mishandled": mishandled,
                                    "alone": alone}


def weight_sqnr(float_onnx: Path, qdq_onnx: Path) -> dict[str, float]:
    """Per node of the QDQ file with a quantised weight: the SQNR (dB, lower is worse) of that weight after its
    DequantizeLinear against the float weight of the graph the quantiser was given (``int8.prepare``'s, whose
    names the QDQ file keeps). Measured here, not by onnxruntime's ``qdq_loss_debug``: given the same graphs it
    agrees on a ResNet-10-T, but its ``compute_weight_error`` raises TypeError on the DeiT's and ConvNeXt's
    per-tensor (0-d) scales, and it scores an all-zero weight (a folded zero-initialised BatchNorm) at 0 dB."""
    floats = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(float_onnx)).graph.initializer}
    graph = onnx.load(str(qdq_onnx)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    error: dict[str, float] = {}
    for dq in (n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits):
        weight = floats.get(dq.input[0].removesuffix("_quantized"))
        if weight is None:
            continue
        q, scale = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]]
        zero = inits[dq.input[2]].astype(np.float64) if len(dq.input) > 2 else 0.0
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [-1 if i == axis % q.ndim else 1 for i in range(q.ndim)] if np.ndim(scale) else []
        restored = (q - np.reshape(zero, shape)) * np.reshape(scale, shape)
        noise = float(np.linalg.norm(weight - restored))
        sqnr = 20 * np.log10(float(np.linalg.norm(weight)) / noise) if noise > 0 else float("inf")
        for node in (n for n in graph.node if dq.output[0] in n.input):
            error[node.name] = min(error.get(node.name, float("inf")), sqnr)
    return error


def sensitive_nodes(float_onnx: Path, qdq_onnx: Path, k: int) -> list[tuple[str, float]]:
    """The ``k`` nodes whose weights lose most in quantisation (lowest SQNR first, then by name); a weight that
    quantises exactly (all zeros, say) is no candidate."""
    lossy = [(name, float(db)) for name, db in weight_sqnr(float_onnx, qdq_onnx).items() if np.isfinite(db)]
    return sorted(lossy, key=lambda item: (item[1], item[0]))[:k]


def _k_sensitive_float(job: FormJob, runtime: str) -> Made:
    prepared = job.work / "prepared.onnx"  # the graph the quantiser saw: its weight names are the QDQ file's
    if not prepared.exists():
        prepare(job.fp32_onnx, prepared)
    ranked = sensitive_nodes(prepared, job.qdq(reduce_range=True), job.cfg.int8_sensitive_k)
    if not ranked:
        raise FormUnavailable("no quantised weight to rank: the QDQ file's weights match none of the float graph's")
    nodes = [name for name, _ in ranked]
    return job.qdq(reduce_range=True, exclude=nodes), {"reduce_range": True, "float_nodes": nodes,
                                                       "weight_sqnr_db": dict(ranked)}


def nncf_missing() -> str | None:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return "nncf is not installed (pip install 'cakd[nncf]')"
    return None


def _nncf(job: FormJob, runtime: str) -> Made:
    """``nncf.quantize`` on the calibration images (ONNX backend: a QDQ ONNX made for OpenVINO); when that file
    fails the gate on ``runtime``, ``nncf.quantize_with_accuracy_control`` keeps float what costs top-1."""
    why = nncf_missing()
    if why is not None:
        raise FormUnavailable(why)
    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)  # NNCF logs every step at INFO; its figures are recorded
    model, n = onnx.load(str(job.fp32_onnx)), len(job.calib_images)
    calib = nncf.Dataset([image[None].float().numpy() for image in job.calib_images], lambda x: {INPUT_NAME: x})
    path = job.work / "nncf.onnx"
    onnx.save(nncf.quantize(model, calib, subset_size=n), str(path))
    details = {"method": "nncf.quantize", "version": nncf.__version__, "calib_images": n}
    plain = job.check(path, runtime)
    if len(plain["batch_sizes"]) == len(plain["checked"]):
        return path, details

    def top1(candidate: onnx.ModelProto, items: Iterable[Batch]) -> tuple[float, list[float]]:
        """Top-1 (percent) on the test batches NNCF gives, and per batch: with the per-item values NNCF ranks
        layers from them instead of calling this once per item."""
        batches = list(items)
        scratch = job.work / "nncf-candidate.onnx"
        onnx.save(candidate, str(scratch))
        per_batch = job.score(scratch, runtime, batches)
        sizes = [len(labels) for _, labels in batches]
        return sum(p * size for p, size in zip(per_batch, sizes, strict=True)) / sum(sizes), per_batch

    controlled = nncf.quantize_with_accuracy_control(
        model, calib, nncf.Dataset(job.test_batches), top1, max_drop=job.cfg.int8_max_drop, subset_size=n)
    path = job.work / "nncf-ac.onnx"
    onnx.save(controlled, str(path))
    return path, {**details, "method": "nncf.quantize_with_accuracy_control",
                  "plain": {b: at["reason"] for b, at in plain["checked"].items()}}


FORMS: dict[str, Form] = {form.name: form for form in (
    Form("all", "onnxruntime", _all),
    Form("all-8bit", "onnxruntime", _all_8bit),
    Form("conv-gemm-matmul", "onnxruntime", _conv_gemm_matmul),
    Form("minus-mishandled", "onnxruntime", _minus_mishandled),
    Form("k-sensitive-float", "onnxruntime", _k_sensitive_float),
    Form("nncf", "nncf", _nncf, runtimes=("openvino",)),
)}
