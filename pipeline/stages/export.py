"""``cakd export``: every artefact the deployment runtimes consume, gated, in one folder with ``export.json``;
with ``--format trt`` (into its own folder, artifacts/trt/NAME, never DVC's artifacts/export/NAME) also the
TensorRT engine, or, without TensorRT or a GPU, the bundle's build scripts to run on the target.

Quantisation-aware training is a step of this command, not a stage of its own (``qat.mode``): it needs the
post-training INT8 gate's verdict, and its file goes through the same gate into the same folder. Its
resumable training state lives in ``qat_dir``, outside the export folder that is swapped in whole."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rich import box
from rich.markup import escape
from rich.table import Table

from ...export.artefacts import FILES
from ...export.bundle.make import Bundle
from ...export.exported import REPORT, read_export, runtime_refusals
from ...export.make.artefacts import QAT_KINDS, artefacts_for, export_key, export_model
from ...export.make.gate_data import gate_data
from ...export.make.qat import QatJob, require_modelopt
from ...export.make.runtime_gate import serving_of
from ...export.runtimes import RUNTIMES, Artefact, Precision
from ...export.runtimes.tensorrt_gpu import build_engine, unavailable
from ..errors import CakdError
from ..files import layout
from ..files.fileio import check_out_dir, file_sha256, write_json
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
    report = _reusable(out_dir, checkpoint, export_key(cfg, kinds, qat, serving)) if fmt == "trt" else None
    if report is None:
        model = load_model(checkpoint)  # the checkpoint is the first thing a user gets wrong: check it first
        may_train = any(kind in QAT_KINDS for kind in kinds) and params.qat.mode != "off"
        if may_train and qat.supervisor is not None:
            load_model(qat.supervisor)  # so is the teacher: before any artefact is made
        if may_train and params.qat.mode == "always":
            require_modelopt()
        if may_train or qat_dir is not None:  # a file there failed (EEXIST) after the post-training export's work
            check_out_dir(qat.qat_dir, "--qat-dir" if qat_dir is not None else "QAT's folder (qat/ by --checkpoint)")
        if qat_dir is not None:  # a DVC output (dvc.yaml names it) even when QAT is not needed; the default
            qat.qat_dir.mkdir(parents=True, exist_ok=True)  # next to --checkpoint is made only by a training run
        report = export_model(checkpoint, out_dir, kinds, cfg, gate_data(params, manifest), model, qat, serving,
                              Bundle.of(params, manifest, out_dir.name, trt=fmt == "trt",
                                        teacher_run=checkpoint.resolve() == layout.TEACHER_MODEL.resolve()))
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
    missing = unavailable()
    if missing is not None:  # prepared for the target: its build script is in the bundle (exit status 3)
        script = f"{Path(entry['file']).stem}.trtexec.sh"
        console.print(escape(f"TensorRT engine not built here ({missing}): copy {out_dir} to the target and run "
                             f"./{script} there, then python run.py --self-test --runtime tensorrt "
                             f"--artefact {kind}"), soft_wrap=True)  # one line, however narrow the terminal
        return {"status": "prepared", "reason": missing, "script": script}
    spec = report["model"]
    engine = out_dir / f"{Path(entry['file']).stem}.engine"
    sidecar = build_engine(out_dir / entry["file"], engine, trt.precision, trt.batch_sizes, trt.workspace_mb,
                           spec["img_size"], spec.get("in_chans", 3))
    console.print(escape(f"TensorRT {trt.precision} engine: {engine} (GPU {sidecar['gpu']})"))
    return {"status": "built", **sidecar}


def print_export(report: dict, out_dir: Path) -> None:
    """What was exported where, a table of the artefacts that passed their gates (fits 120 columns), then one line
    per status and reason for those that did not."""
    console.print(escape(f"Export of {report['source']} -> {out_dir}"))
    table, lines = export_table(report)
    console.print(table)
    for line in lines:
        console.print(line)


def export_table(report: dict) -> tuple[Table, list[str]]:
    """The artefacts made (file, size, what their gate measured) and, under the table, the rejected and skipped
    ones grouped by reason: a QAT form skipped for a reason is one line, not a row with a long wrapped cell."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for name in ("artefact", "file", "MB", "gate on the test images"):
        table.add_column(name, justify="right" if name == "MB" else "left")
    groups: dict[tuple[str, str], list[str]] = {}
    for kind, entry in report["artefacts"].items():
        if entry["status"] == "ok":
            size = "-" if entry["size_bytes"] is None else f"{entry['size_bytes'] / 2**20:.2f}"
            table.add_row(kind, escape(entry["file"] or "-"), size, escape(_check_text(entry)))
        else:
            groups.setdefault((entry["status"], entry["reason"] or "no reason recorded"), []).append(kind)
    lines = [f"[yellow]{status}[/yellow] {escape(', '.join(kinds))}: {escape(reason)}"
             for (status, reason), kinds in groups.items()]
    lines += [f"[yellow]{kind} on {runtime}[/yellow] {escape(said)}" for kind, entry in report["artefacts"].items()
              for runtime, said in runtime_refusals(entry).items()]
    return table, lines


def _check_text(entry: dict) -> str:
    if entry.get("parity"):
        p = entry["parity"]
        return f"max|diff| {p['max_abs_diff']:.1e}, agrees {100 * p['top1_agreement']:.1f}%, {p['images']} images"
    if entry.get("gate"):
        g = entry["gate"]
        form = f", form {entry['chosen']} ({entry['quantiser']})" if entry.get("chosen") else ""
        return (f"top-1 {g['top1']:.2f}% (FP32 {g['fp32_top1']:.2f}%), agrees {g['agreement']:.1f}%, "
                f"{g['images']} images{form}")
    return entry.get("reason") or ""
