"""``cakd export``: every artefact the deployment runtimes consume, gated, in one folder with ``export.json``;
with ``--format trt`` also the TensorRT engine (or, without a GPU, the trtexec command that builds it).

Quantisation-aware training is a step of this command, not a stage of its own (``qat.mode``): it needs the
post-training INT8 gate's verdict, and its file goes through the same gate into the same folder. Its
resumable training state lives in ``qat_dir``, outside the export folder that is swapped in whole."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rich.markup import escape
from rich.table import Table

from ...export.exported import FILES, REPORT, read_export, runtime_refusals
from ...export.make.artefacts import QAT_KINDS, artefacts_for, export_model, settings_key
from ...export.make.gate_data import gate_data
from ...export.make.qat import QatJob, require_modelopt
from ...export.make.runtime_gate import serving_of
from ...export.runtimes import RUNTIMES, Artefact, Precision
from ...export.runtimes.tensorrt_gpu import build_engine
from ..errors import CakdError
from ..files.fileio import file_sha256, write_json
from ..models import load_model
from ..reporting import profiling
from ..reporting.ui import console
from ..settings.params import Params


def trt_artefact(precision: Precision) -> Artefact:
    """The artefact TensorRT builds its engine from in that precision (its INT8 form for int8)."""
    return RUNTIMES["tensorrt"].consumes[precision][0]


def run(params: Params, checkpoint: Path, manifest: Path, out_dir: Path, fmt: Literal["onnx", "trt"],
        precisions: list[Precision], teacher: Path | None = None, qat_dir: Path | None = None) -> dict:
    """Export (or, for ``--format trt``, reuse an export of the same checkpoint and settings), then the engine.
    ``teacher`` supervises quantisation-aware training with ``qat.supervisor: teacher`` (else the FP32 model
    itself); its training state goes to ``qat_dir`` (default: ``qat/`` next to the checkpoint)."""
    profiling.mark_ready()
    cfg = params.export
    kinds = artefacts_for(params.deploy.runtimes, precisions)
    if fmt == "trt" and trt_artefact(cfg.trt.precision) not in kinds:
        kinds = artefacts_for([*params.deploy.runtimes, "tensorrt"], [*precisions, cfg.trt.precision])
    qat = QatJob(params, manifest, teacher, qat_dir or checkpoint.parent / "qat")
    serving = serving_of(params)
    report = _reusable(out_dir, checkpoint, settings_key(cfg, kinds, qat, serving)) if fmt == "trt" else None
    if report is None:
        model = load_model(checkpoint)  # the checkpoint is the first thing a user gets wrong: check it first
        may_train = any(kind in QAT_KINDS for kind in kinds) and params.qat.mode != "off"
        if may_train and qat.supervisor is not None:
            load_model(qat.supervisor)  # so is the teacher: before any artefact is made
        if may_train and params.qat.mode == "always":
            require_modelopt()
        if may_train or qat_dir is not None:
            qat.qat_dir.mkdir(parents=True, exist_ok=True)  # a DVC output even when QAT is not needed
        report = export_model(checkpoint, out_dir, kinds, cfg, gate_data(params, manifest), model, qat, serving)
    print_export(report, out_dir)
    if fmt == "trt":
        report["tensorrt"] = _engine(report, out_dir, params)
        write_json(out_dir / REPORT, report)
    return report


def _reusable(out_dir: Path, checkpoint: Path, key: str) -> dict | None:
    """An earlier export of the same checkpoint with the same settings, every file still there."""
    if not (out_dir / REPORT).is_file():
        return None
    try:
        report = read_export(out_dir).report
    except CakdError:  # a malformed or stale report: export anew (into a new folder, swapped in whole)
        return None
    if report.get("settings") != key or report.get("checkpoint_sha256") != file_sha256(checkpoint):
        return None
    return report


def _engine(report: dict, out_dir: Path, params: Params) -> dict:
    trt = params.export.trt
    kind = trt_artefact(trt.precision)
    entry = report["artefacts"][kind]
    if entry["status"] != "ok":
        raise CakdError(f"a TensorRT {trt.precision} engine is built from {FILES[kind]}, which was "
                        f"{entry['status']}: {entry['reason']}")
    spec = report["model"]
    engine = out_dir / f"model.{trt.precision}.engine"
    sidecar = build_engine(out_dir / entry["file"], engine, trt.precision, trt.batch_sizes, trt.workspace_mb,
                           spec["img_size"], spec.get("in_chans", 3))
    console.print(escape(f"TensorRT {trt.precision} engine: {engine} (GPU {sidecar['gpu']})"))
    return sidecar


def print_export(report: dict, out_dir: Path) -> None:
    table = Table(title=escape(f"Export of {report['source']} -> {out_dir}"))
    for name in ("artefact", "file", "status", "check", "MB"):
        table.add_column(name)
    for kind, entry in report["artefacts"].items():
        size = "-" if entry["size_bytes"] is None else f"{entry['size_bytes'] / 2**20:.2f}"
        table.add_row(kind, escape(entry["file"] or "-"), entry["status"], escape(_check_text(entry)), size)
    console.print(table)
    for kind, entry in report["artefacts"].items():
        if entry["status"] == "rejected":
            console.print(f"[yellow]{kind} rejected[/yellow]: {escape(entry['reason'])}")
        for runtime, said in runtime_refusals(entry).items():
            console.print(f"[yellow]{kind} on {runtime}[/yellow] {escape(said)}")


def _check_text(entry: dict) -> str:
    if entry.get("parity"):
        p = entry["parity"]
        return (f"parity on {p['images']} images: max |diff| {p['max_abs_diff']:.2e}, "
                f"top-1 agreement {100 * p['top1_agreement']:.1f}%")
    if entry.get("gate"):
        g = entry["gate"]
        return (f"INT8 gate on {g['images']} test images: top-1 {g['top1']:.2f}% vs FP32 {g['fp32_top1']:.2f}% "
                f"(drop {g['drop']:.2f}), agreement {g['agreement']:.1f}%")
    return entry.get("reason") or ""
