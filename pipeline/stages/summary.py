"""``cakd summary``: the last stage - what a user reads after ``dvc repro`` to choose what to deploy.

It only reads the reports the other stages wrote (the teacher's metrics, each student's evaluation and
export, the latency bench) and restates, per student, the numbers a deployment decision needs: baseline and
distilled accuracy, the gain, ONNX parity and the INT8 outcome; then the teacher's source, and one line per
runtime naming the bench's pick. ``summary.json`` goes under git-tracked ``reports/``, so ``dvc exp show``
lists every experiment's accuracy, gain, parity and latency.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ...export.artefacts import ARTEFACTS, int8_kinds
from ...export.exported import read_export, runtime_refusals
from ...export.make.int8_choice import runtime_line
from ...export.measure.bench_report import read_bench_report
from ...export.measure.rows import BenchRow, Pick
from ..files import layout
from ..files.fileio import write_json
from ..files.reports import read_eval_report, read_teacher_report
from ..reporting import profiling
from ..reporting.ui import console

INT8_KINDS = int8_kinds("cpu") + int8_kinds("trt")  # the CPU forms in order of preference, then TensorRT's


def int8_outcome(artefacts: dict) -> str:
    """Which INT8 file ships and why: each INT8 form's accuracy and agreement when its gate passed it, its
    reason if not (rejected by the gate, or quantisation-aware training skipped and why)."""
    entries = {kind: artefacts[kind] for kind in INT8_KINDS if kind in artefacts}
    if not entries:
        return "INT8 not exported (deploy.precisions has no int8)"
    parts = []
    for kind, entry in entries.items():
        gate, how = entry.get("gate") or {}, _how_trained(entry.get("qat"))
        how += f" in form {entry['chosen']} by {entry['quantiser']}" if entry.get("chosen") else ""
        if entry["status"] == "ok":
            parts.append(f"{kind}{how} top-1 {gate['top1']:.2f}% (drop {gate['drop']:.2f} points, "
                         f"{gate['agreement']:.1f}% agreement with FP32 on {gate['images']} images)"
                         + "".join(f", on {rt} {said}" for rt, said in runtime_refusals(entry).items()))
        else:
            parts.append(f"{kind}{how} {entry['status']}: {entry['reason']}")
    shipped = [kind for kind, entry in entries.items() if entry["status"] == "ok"]
    head = f"INT8 ships {' and '.join(shipped)}" if shipped else "no INT8 ships"
    return f"{head}; " + "; ".join(parts) if len(entries) > 1 else "INT8: " + parts[0]


def _how_trained(qat: dict | None) -> str:
    """`` (quantisation-aware, 2 epochs, nvidia-modelopt 0.47.0)`` for an INT8 that QAT made."""
    if not qat:
        return ""
    epochs = qat.get("epochs")
    return f" (quantisation-aware, {epochs} epoch{'s' if epochs != 1 else ''}, {qat['library']} {qat['version']})"


def latency_of(rows: list[BenchRow], label: str) -> dict[str, float]:
    """p50 ms at batch 1 of ``label``'s artefacts that passed their checks, keyed ``runtime/precision``."""
    return {f"{r.runtime}/{r.precision}" + ("-qat" if r.artefact.startswith("onnx-int8-qat") else ""): r.p50_ms
            for r in rows if r.model == label and r.batch_size == 1 and r.status == "ok"}


def runtime_failures(rows: list[BenchRow], label: str) -> list[str]:
    """Files that passed their export gates yet failed the bench's check on a runtime (another runtime's
    answers for the same file, e.g. an INT8 file one runtime executes differently): ``runtime artefact: why``."""
    failed = {(r.runtime, r.artefact): r.reason for r in rows if r.model == label and r.status == "failed"}
    return [f"{runtime} {artefact}: {reason}" for (runtime, artefact), reason in failed.items()]


def export_entry(folder: Path) -> dict:
    artefacts = read_export(folder).report["artefacts"]
    parity = (artefacts.get("onnx") or {}).get("parity") or {}
    shipped = [kind for kind in INT8_KINDS if artefacts.get(kind, {}).get("status") == "ok"]
    return {"onnx_max_abs_diff": parity.get("max_abs_diff"), "onnx_top1_agreement": parity.get("top1_agreement"),
            "int8_shipped": shipped[0] if shipped else None, "int8": int8_outcome(artefacts)}


def collect(students: dict[str, str], reports: Path, exports: Path, bench: dict) -> dict:
    """summary.json from the reports of the teacher and of ``students`` (name -> timm model), and the bench:
    the teacher, each student and the per-runtime picks (keyed by runtime, so DVC flattens them into columns)."""
    teacher = read_teacher_report(reports / layout.TEACHER_REPORT.name)
    rows = [BenchRow.from_dict(row) for row in bench["rows"]]
    chosen = [Pick.from_dict(pick) for pick in bench["picks"]]
    teacher_export = export_entry(layout.export_dir(layout.TEACHER, exports))
    result = {"teacher": {"model": teacher["model"], "top1": teacher["accuracy"],
                          "source": teacher.get("teacher_source"), **teacher_export,
                          "latency_ms": latency_of(rows, layout.TEACHER),
                          "runtime_failures": runtime_failures(rows, layout.TEACHER)},
              "students": {}}
    for name, model in students.items():
        evaluation = read_eval_report(layout.student_report(name, "eval", reports), name)
        result["students"][name] = {
            "model": model,
            "baseline_top1": evaluation["baseline"]["top1"],
            "distilled_top1": evaluation["student"]["top1"],
            "assistant_top1": (evaluation.get("assistant") or {}).get("top1"),
            "gain": evaluation["gain_over_baseline"],
            **export_entry(layout.export_dir(name, exports)),
            "latency_ms": latency_of(rows, name),
            "runtime_failures": runtime_failures(rows, name),
        }
    result["deploy"] = {p.runtime: {k: v for k, v in p.to_dict().items() if k != "runtime"} for p in chosen}
    result["int8_unpaid"] = bench.get("int8_unpaid", [])  # where INT8 is no faster than FP32 (int8_pays)
    forms = {label: read_export(layout.export_dir(label, exports)).report["artefacts"]
             for label in [layout.TEACHER, *students]}
    result["deploy_lines"] = [p.line for p in chosen]
    notes = {p.runtime: forms_said(p, forms) for p in chosen}
    result["deploy_notes"] = {runtime: lines for runtime, lines in notes.items() if lines}
    return result


def forms_said(pick: Pick, artefacts: dict[str, dict]) -> list[str]:
    """For a deploy line that names no model: one line per model with its INT8 forms tried on that runtime and
    their numbers (``export.json``), so why none qualifies is right under it; none otherwise."""
    if pick.model is not None:
        return []
    return [runtime_line(label, pick.runtime, entry) for label, entries in artefacts.items()
            for kind, entry in entries.items() if ARTEFACTS.get(kind) and ARTEFACTS[kind].chosen_on == pick.runtime
            and "forms" in entry]


def source_line(source: dict | None) -> str:
    if not source:
        return "source not recorded"
    if not source.get("file"):
        return f"timm {source.get('timm_name')} trained from scratch"
    origin = "fine-tuned from" if source.get("fine_tuned") else "used as is from"
    digest = f", sha256 {source['sha256'][:12]}" if source.get("sha256") else ""
    return f"{origin} {source['file']}{digest}"


def _parity(entry: dict) -> str:
    if entry["onnx_max_abs_diff"] is None:
        return "n/a"
    return f"{entry['onnx_max_abs_diff']:.1e}, {100 * entry['onnx_top1_agreement']:.0f}%"


def _failures(entry: dict) -> str:
    failures = entry["runtime_failures"]
    return f"; but the bench's runtime check failed on {'; '.join(failures)}" if failures else ""


def print_summary(summary: dict) -> None:
    """The table of numbers, then plain lines (never wrapped, easy to grep): INT8 outcomes, teacher, picks."""
    table = Table(title="cakd summary (test set; latency p50 at batch 1)")
    for col in ("student", "baseline %", "distilled %", "gain", "ONNX parity", "p50 ms"):
        table.add_column(col, justify="left" if col in ("student", "p50 ms") else "right")
    for name, s in summary["students"].items():
        latency = ", ".join(f"{k} {v:.2f}" for k, v in s["latency_ms"].items()) or "n/a"
        table.add_row(escape(f"{name} ({s['model']})"), f"{s['baseline_top1']:.2f}", f"{s['distilled_top1']:.2f}",
                      f"{s['gain']:+.2f}", _parity(s), latency)
    console.print(table)
    for name, s in summary["students"].items():
        console.print(escape(f"{name}: {s['int8']}{_failures(s)}"))
    t = summary["teacher"]
    console.print(escape(f"teacher {t['model']}: top-1 {t['top1']:.2f}%, {source_line(t['source'])}; {t['int8']}"
                         f"{_failures(t)}"))
    for line in summary.get("int8_unpaid", []):
        console.print(escape(line))
    for line in summary["deploy_lines"]:
        console.print(escape(line))
    for runtime, notes in summary.get("deploy_notes", {}).items():  # under the lines: why nothing deploys there
        console.print(escape(f"{runtime}, the INT8 forms tried (p50 at batch 1; all numbers in export.json):"))
        for note in notes:
            console.print(escape(f"  {note}"))


def run(students: dict[str, str], reports: Path, exports: Path, bench_path: Path, out: Path) -> dict:
    profiling.mark_ready()
    summary = collect(students, reports, exports, read_bench_report(bench_path))  # every input read and checked
    write_json(out, summary)
    print_summary(summary)
    return summary
