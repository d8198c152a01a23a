"""``cakd export``'s one function: every artefact the deployment runtimes consume, each behind its gate, built
in a new folder that replaces the previous export as a whole (a failed or killed export leaves it intact).

What each kind is (file, precision, gate, which step makes it) is the artefact table, ``cakd.export.artefacts``;
this module holds the steps: copy the checkpoint, FP32 ONNX (parity-gated; a failure stops the export), FP16
ONNX, post-training INT8 in each form, and quantisation-aware INT8 (export/make/qat.py, ``qat.mode``).

A rejected INT8 leaves no file and its reason in ``export.json``; the export still succeeds unless
``export.strict`` and some runtime is left without an INT8 that passed. Readers open the folder with
``cakd.export.exported.read_export``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import atomic_dir, file_sha256, write_json
from ...pipeline.models import StagedModel, load_model
from ...pipeline.reporting import profiling
from ...pipeline.settings.fingerprint import fingerprint
from ...pipeline.settings.params import ExportParams
from ..artefacts import ARTEFACTS, FILES, made_by
from ..exported import REPORT
from ..onnx_inspect import onnx_shape
from ..runtimes import RUNTIMES, Artefact, Precision
from .gate_data import EVAL_BATCH, GateData
from .int8 import export_int8, gate_int8_file, logits_on, quantize_int8
from .int8_search import search
from .onnx_export import export_fp16, export_fp32
from .runtime_gate import Serving, gate_on_runtimes

if TYPE_CHECKING:
    from ..bundle.make import Bundle
    from .qat import QatJob

POST_TRAINING_INT8 = made_by("int8")
QAT_KINDS = made_by("qat")  # one fine-tune, one file per INT8 form: ModelOpt's own (TensorRT's) and the CPU runtimes'


def artefacts_for(runtimes: Iterable[str], precisions: Iterable[Precision]) -> list[Artefact]:
    """What the runtimes consume in these precisions (read from the runtime table), plus the checkpoint and
    the FP32 ONNX every other artefact is made from."""
    precisions = list(precisions)
    wanted = {"checkpoint", "onnx"} | {kind for name in runtimes for p in precisions
                                       for kind in RUNTIMES[name].consumes.get(p, ())}
    return [kind for kind in ARTEFACTS if kind in wanted]


def int8_recipe(kind: Artefact, cfg: ExportParams) -> dict:
    """How onnxruntime quantises an INT8 kind, from its form in the artefact table: TensorRT's form has symmetric
    int8 activations and float biases (TensorRT has no INT32 DequantizeLinear); the CPU form follows the
    settings (``export.int8_activations``: uint8 runs onnxruntime's fast kernels)."""
    trt = ARTEFACTS[kind].form == "trt"
    return {"activations": "int8" if trt else cfg.int8_activations, "quantize_bias": not trt,
            "reduce_range": cfg.int8_reduce_range}


def make_untrained(net: StagedModel, kind: Artefact, folder: Path, cfg: ExportParams, images: torch.Tensor) -> Path:
    """One artefact of an untrained network, for the shortlist's timing: made by the same steps and recipe as
    ``export_model`` but without the accuracy gates (an untrained network has no accuracy to keep); ``images``
    serve the parity check and INT8 calibration. The checkpoint kind is the network itself (the folder)."""
    if not ARTEFACTS[kind].untrained:
        raise CakdError(f"{kind} needs a trained model; the shortlist times only kinds an untrained one has")
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "checkpoint":
        return folder
    spec, onnx = net.spec, folder / FILES["onnx"]
    proto, _ = export_fp32(net, onnx, img_size=spec.img_size, in_chans=spec.in_chans, opset=cfg.opset,
                           parity_images=images, atol=cfg.atol)
    path = folder / FILES[kind]
    if ARTEFACTS[kind].maker == "fp16":
        export_fp16(net, proto, path, parity_images=images, atol=cfg.fp16_atol)
    elif ARTEFACTS[kind].maker == "int8":
        quantize_int8(onnx, path, images, **int8_recipe(kind, cfg))
    return path


def export_model(source: Path, out_dir: Path, kinds: list[Artefact], cfg: ExportParams, data: GateData,
                 model: StagedModel | None = None, qat: QatJob | None = None, serving: Serving | None = None,
                 bundle: Bundle | None = None) -> dict:
    """Make ``kinds`` from ``source`` (a cakd checkpoint, or an FP32 ONNX file given by hand) into ``out_dir``
    with ``export.json``, replacing what was there only once every gate has run; returns the report.
    ``model`` is the checkpoint's model when the caller has already loaded it; ``qat`` is how to make the
    quantisation-aware INT8 (``cakd export``'s step; without it that artefact is skipped, with the reason);
    ``serving`` is where it will run: each INT8 file is gated on each runtime there that consumes it.
    ``bundle`` makes the folder a self-describing, self-testing bundle (export/bundle/)."""
    with atomic_dir(out_dir) as tmp:
        if source.suffix == ".onnx":
            made = _from_onnx(source, tmp, kinds)
        else:
            model = model or load_model(source)
            made = _from_checkpoint(source, model, tmp, kinds, cfg, data)
        entries = made["artefacts"]
        with profiling.phase("int8-gate"):
            fp32 = logits_on(tmp / FILES["onnx"], data.test_loader) if _gated_int8(kinds, data) else None
        spec = (made["model"]["img_size"], made["model"].get("in_chans", 3))
        entries.update(_int8_artefacts(tmp, [k for k in kinds if k in POST_TRAINING_INT8], cfg, data, fp32,
                                       (serving or Serving((), (EVAL_BATCH,)), spec)))
        entries.update(_qat_artefacts(tmp, [k for k in kinds if k in QAT_KINDS], entries, cfg, data, fp32, qat,
                                      (source, model)))
        if serving is not None and fp32 is not None:
            with profiling.phase("int8-gate"):
                gate_on_runtimes(tmp, entries, serving, spec, data.test_loader, fp32, cfg)
        uncovered = _uncovered_rejections(entries)
        if uncovered and cfg.strict:
            raise CakdError(f"{'; '.join(uncovered)} (export.strict: nothing exported, the previous export kept)")
        report = {"source": str(source), **made, "settings": export_key(cfg, kinds, qat, serving)}
        if bundle is not None:
            bundle.complete(tmp, report, getattr(data.test_loader, "dataset", None))
        write_json(tmp / REPORT, report)
    return report


def _gated_int8(kinds: list[Artefact], data: GateData) -> bool:
    """Whether any INT8 artefact is asked for and there is a dataset to gate it on."""
    return any(kind in (*POST_TRAINING_INT8, *QAT_KINDS) for kind in kinds) and data.test_loader is not None


def _uncovered_rejections(entries: dict[str, dict]) -> list[str]:
    """Each rejected INT8 that leaves some runtime without an INT8 that passed (``export.strict`` fails on these):
    a rejected post-training INT8 is covered when the quantisation-aware one, which the same runtimes
    consume, passed."""
    passed = {kind for kind, entry in entries.items() if entry["status"] == "ok"}
    uncovered = []
    for kind, entry in entries.items():
        users = [rt for rt in RUNTIMES.values() if kind in rt.consumes.get("int8", ())]
        if entry["status"] == "rejected" and not all(passed & set(rt.consumes["int8"]) for rt in users):
            uncovered.append(f"{kind}: {entry['reason']}")
    return uncovered


def _from_checkpoint(checkpoint: Path, model: StagedModel, folder: Path, kinds: list[Artefact], cfg: ExportParams,
                     data: GateData) -> dict:
    """The checkpoint's copy, the parity-gated FP32 ONNX and, when asked, the FP16 ONNX."""
    spec = model.spec
    if data.parity_images.shape[-1] != spec.img_size:
        raise CakdError(f"{checkpoint} takes {spec.img_size} px images but the dataset gives "
                        f"{data.parity_images.shape[-1]} px (data.img_size)")
    shutil.copyfile(checkpoint, folder / FILES["checkpoint"])
    made = {"checkpoint": _entry("checkpoint", folder, "ok")}
    proto, parity = export_fp32(model, folder / FILES["onnx"], img_size=spec.img_size, in_chans=spec.in_chans,
                                opset=cfg.opset, parity_images=data.parity_images, atol=cfg.atol)
    made["onnx"] = _entry("onnx", folder, "ok", parity=parity)
    if "onnx-fp16" in kinds:
        half = export_fp16(model, proto, folder / FILES["onnx-fp16"], parity_images=data.parity_images,
                           atol=cfg.fp16_atol)
        made["onnx-fp16"] = _entry("onnx-fp16", folder, "ok", parity=half)
    return {"checkpoint_sha256": file_sha256(checkpoint), "model": spec.to_dict(), "artefacts": made}


def _from_onnx(onnx_file: Path, folder: Path, kinds: list[Artefact]) -> dict:
    """An FP32 ONNX given by hand: taken as it is (there is no PyTorch model to check parity against)."""
    in_chans, img_size, num_classes = onnx_shape(onnx_file)
    shutil.copyfile(onnx_file, folder / FILES["onnx"])
    why = f"an ONNX file was given ({onnx_file}), not a checkpoint"
    made = {"checkpoint": _entry("checkpoint", folder, "skipped", reason=why),
            "onnx": _entry("onnx", folder, "ok", parity=None)}
    if "onnx-fp16" in kinds:
        made["onnx-fp16"] = _entry("onnx-fp16", folder, "skipped", reason=f"{why}: no PyTorch model to gate FP16 on")
    model = {"name": None, "img_size": img_size, "in_chans": in_chans, "num_classes": num_classes}
    return {"checkpoint_sha256": None, "model": model, "artefacts": made}


def export_key(cfg: ExportParams, kinds: list[Artefact], qat: QatJob | None = None,
               serving: Serving | None = None) -> str:
    """What an export depends on besides the checkpoint: a later ``--format trt`` may reuse an export with
    the same key."""
    qat_key = qat.key() if qat is not None and any(kind in QAT_KINDS for kind in kinds) else None
    serving_key = [serving.key()] if serving is not None else []
    return fingerprint(cfg.model_dump(mode="json", exclude={"strict", "trt"}), sorted(kinds), qat_key, *serving_key)


NO_DATA = "no dataset to calibrate and gate INT8 on (give --data)"


def _int8_artefacts(folder: Path, kinds: list[Artefact], cfg: ExportParams, data: GateData,
                    fp32: tuple[torch.Tensor, torch.Tensor] | None, where: tuple[Serving, tuple[int, int]]
                    ) -> dict[str, dict]:
    """The CPU runtimes' INT8 files, each in the form measured best on its runtime (``int8_search``), and
    TensorRT's, each through the INT8 gate (``fp32``: the FP32 ONNX's test logits and the labels; ``where``:
    the serving runtimes and batch sizes, and the input's size and channels)."""
    if not kinds:
        return {}
    if data.calib_images is None or fp32 is None:
        return {kind: _entry(kind, folder, "skipped", reason=NO_DATA) for kind in kinds}
    per_runtime = [kind for kind in kinds if ARTEFACTS[kind].chosen_on is not None]
    found = search(folder, per_runtime, cfg, data.calib_images, data.test_loader, fp32, *where) if per_runtime else {}
    entries = {kind: _entry(kind, folder, status, reason=reason, **details)
               for kind, (status, reason, details) in found.items()}
    for kind in (k for k in kinds if k not in found):
        gate = export_int8(folder / FILES["onnx"], folder / FILES[kind], data.calib_images, data.test_loader, fp32,
                           max_drop=cfg.int8_max_drop, min_agreement=cfg.int8_min_agreement,
                           **int8_recipe(kind, cfg))
        status, reason = gate.pop("status"), gate.pop("reason")
        entries[kind] = _entry(kind, folder, status, reason=reason, gate=gate)
    return entries


def _why_no_qat(entries: dict[str, dict], data: GateData, qat: QatJob | None, model: StagedModel | None
                ) -> str | None:
    """Why the quantisation-aware INT8 is not made here, or None (``auto`` without ModelOpt is a reason too)."""
    if model is None:
        return "an ONNX file was given, not a checkpoint: there is no PyTorch model to train"
    if data.calib_images is None or data.test_loader is None:
        return NO_DATA
    if qat is None:
        return "quantisation-aware training is a step of cakd export (qat.mode), not of this export"
    if qat.mode == "off":
        return "qat.mode: off"
    if qat.mode == "auto" and not any(entries.get(kind, {}).get("status") == "rejected" for kind in POST_TRAINING_INT8):
        return "post-training INT8 passed (qat.mode: auto)"
    from .qat import modelopt_missing

    return modelopt_missing() if qat.mode == "auto" else None


def _qat_artefacts(folder: Path, kinds: list[Artefact], entries: dict[str, dict], cfg: ExportParams, data: GateData,
                   fp32: tuple[torch.Tensor, torch.Tensor] | None, qat: QatJob | None,
                   source: tuple[Path, StagedModel | None]) -> dict[str, dict]:
    """The quantisation-aware INT8 forms ``kinds`` asks for, from one fine-tune, each through the same INT8 gate
    as post-training INT8; a diverged fine-tune rejects both with its reason. Its details go into each entry."""
    if not kinds:
        return {}
    checkpoint, model = source
    why = _why_no_qat(entries, data, qat, model)
    if why is not None:
        return {kind: _entry(kind, folder, "skipped", reason=why) for kind in kinds}
    from .qat import train_qat

    modelopt = next((folder / FILES[kind] for kind in kinds if ARTEFACTS[kind].form == "trt"), None)
    result = train_qat(qat, model, checkpoint, data.calib_images, modelopt, cfg.opset)
    if result.reason is not None:
        return {kind: _entry(kind, folder, "rejected", reason=result.reason, qat=result.details) for kind in kinds}
    made = {}
    for kind in kinds:
        if ARTEFACTS[kind].form == "cpu":
            gate = _cpu_form(folder, kind, result.weights, cfg, data, fp32)
        else:  # ModelOpt's own QDQ file, in TensorRT's form
            gate = {**gate_int8_file(modelopt, *fp32, data.test_loader, max_drop=cfg.int8_max_drop,
                                     min_agreement=cfg.int8_min_agreement), "activations": "int8"}
        status, reason = gate.pop("status"), gate.pop("reason")
        made[kind] = _entry(kind, folder, status, reason=reason, gate=gate, qat=result.details)
    return made


def _cpu_form(folder: Path, kind: Artefact, weights: StagedModel, cfg: ExportParams, data: GateData,
              fp32: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """The fine-tuned weights as an FP32 ONNX (parity-gated like any), quantised by onnxruntime with the recipe
    of ``kind``'s form (that of ``onnx-int8``), and gated against the shipped FP32 model's logits (not the
    fine-tuned one's)."""
    tuned = folder / ".qat-fp32.onnx"
    try:
        export_fp32(weights, tuned, img_size=weights.spec.img_size, in_chans=weights.spec.in_chans, opset=cfg.opset,
                    parity_images=data.parity_images, atol=cfg.atol)
        return export_int8(tuned, folder / FILES[kind], data.calib_images, data.test_loader, fp32,
                           max_drop=cfg.int8_max_drop, min_agreement=cfg.int8_min_agreement,
                           **int8_recipe(kind, cfg))
    finally:
        tuned.unlink(missing_ok=True)


def _entry(kind: Artefact, folder: Path, status: str, reason: str | None = None, **details: dict) -> dict:
    path = folder / FILES[kind]
    ok = status == "ok"
    return {"file": FILES[kind] if ok else None, "status": status, "reason": reason,
            "size_bytes": path.stat().st_size if ok else None, "sha256": file_sha256(path) if ok else None,
            **details}
