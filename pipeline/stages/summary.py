"""``cakd summary``: the last stage — what a user reads after ``dvc repro`` to choose what to deploy.

It only reads the reports the other stages wrote (the teacher's metrics, each student's evaluation and
export, the latency bench) and restates, per student, the numbers a deployment decision needs:
baseline and distilled accuracy, the gain, ONNX parity and the INT8 outcome; then the teacher's source,
and one line per runtime naming the pick of the bench. ``summary.json`` goes under git-tracked
``reports/``, so ``dvc exp show`` lists every experiment's accuracy, gain, parity and latency.
"""

from __future__ import annotations

from pathlib import Path

from cakd.pipeline import layout
from cakd.pipeline.fileio import read_json, write_json
from cakd.pipeline.ui import console
from rich.markup import escape
from rich.table import Table


def int8_outcome(int8: dict | None) -> str:
    """The INT8 row of an export.json: accuracy and drop when accepted, the reason when not."""
    if not int8:
        return "INT8 not exported (export.int8: false)"
    if int8["status"] == "ok":
        return (f"INT8 top-1 {int8['top1']:.2f}% (drop {int8['drop']:.2f} points, "
                f"{int8['agreement']:.1f}% agreement with FP32 on {int8['images']} images)")
    return f"INT8 {int8['status']}: {int8['reason']}"


def student_latency(rows: list[dict], label: str) -> dict[str, float]:
    """p50 ms at batch 1 of ``label``'s artefacts that passed their checks, keyed ``runtime/precision``."""
    return {f"{r['runtime']}/{r['precision']}": r["p50_ms"] for r in rows
            if r["model"] == label and r["batch_size"] == 1 and r["status"] == "ok"}


def deploy_line(pick: dict) -> str:
    if pick.get("model") is None:
        return f"deploy nothing on {pick['runtime']}: no artefact passed its checks within the budget"
    return (f"deploy {pick['model']} {pick['precision']} on {pick['runtime']}: {pick['top1']:.2f}% at "
            f"{pick['p50_ms']:.2f} ms (batch {pick['batch_size']})")


def _export_entry(export: dict) -> dict:
    int8 = export.get("int8")
    return {"onnx_max_abs_diff": export["onnx"]["max_abs_diff"],
            "onnx_top1_agreement": export["onnx"]["top1_agreement"],
            "int8_status": int8["status"] if int8 else "off",
            "int8_top1": int8.get("top1") if int8 else None,
            "int8_drop": int8.get("drop") if int8 else None,
            "int8": int8_outcome(int8)}


def collect(students: dict[str, str], reports: Path, exports: Path, bench: dict) -> dict:
    """summary.json from the reports of the teacher and of ``students`` (name -> timm model), and the bench:
    the teacher, each student and the per-runtime picks (keyed by runtime, so DVC flattens
    them into columns)."""
    teacher = read_json(reports / layout.TEACHER_REPORT.name, "teacher metrics")
    rows = bench["rows"]
    result = {"teacher": {"model": teacher["model"], "top1": teacher["accuracy"],
                          "source": teacher.get("teacher_source"),
                          **_export_entry(read_json(layout.export_dir("teacher", exports) / "export.json",
                                                    "teacher export report")),
                          "latency_ms": student_latency(rows, "teacher")},
              "students": {}}
    for name, model in students.items():
        evaluation = read_json(layout.student_report(name, "eval", reports), f"evaluation of student {name}")
        export = read_json(layout.export_dir(name, exports) / "export.json", f"export report of student {name}")
        result["students"][name] = {
            "model": model,
            "baseline_top1": evaluation["baseline"]["top1"],
            "distilled_top1": evaluation["student"]["top1"],
            "assistant_top1": evaluation.get("assistant", {}).get("top1"),
            "gain": evaluation["gain_over_baseline"],
            **_export_entry(export),
            "latency_ms": student_latency(rows, name),
        }
    result["deploy"] = {pick["runtime"]: {k: v for k, v in pick.items() if k != "runtime"}
                        for pick in bench["picks"]}
    result["deploy_lines"] = [deploy_line(pick) for pick in bench["picks"]]
    return result


def source_line(source: dict | None) -> str:
    if not source:
        return "source not recorded"
    if not source.get("file"):
        return f"timm {source.get('timm_name')} trained from scratch"
    origin = "fine-tuned from" if source.get("fine_tuned") else "used as is from"
    where = source["file"]
    digest = f", sha256 {source['sha256'][:12]}" if source.get("sha256") else ""
    return f"{origin} {where}{digest}"


def print_summary(summary: dict) -> None:
    """The table of numbers, then plain lines (never wrapped, easy to grep): INT8 outcomes, teacher, picks."""
    table = Table(title="cakd summary (test set; latency p50 at batch 1)")
    for col in ("student", "baseline %", "distilled %", "gain", "ONNX parity", "p50 ms"):
        table.add_column(col, justify="left" if col in ("student", "p50 ms") else "right")
    for name, s in summary["students"].items():
        latency = ", ".join(f"{k} {v:.2f}" for k, v in s["latency_ms"].items()) or "n/a"
        table.add_row(escape(f"{name} ({s['model']})"), f"{s['baseline_top1']:.2f}", f"{s['distilled_top1']:.2f}",
                      f"{s['gain']:+.2f}", f"{s['onnx_max_abs_diff']:.1e}, {100 * s['onnx_top1_agreement']:.0f}%",
                      latency)
    console.print(table)
    for name, s in summary["students"].items():
        console.print(escape(f"{name}: {s['int8']}"))
    t = summary["teacher"]
    console.print(escape(f"teacher {t['model']}: top-1 {t['top1']:.2f}%, {source_line(t['source'])}; {t['int8']}"))
    for line in summary["deploy_lines"]:
        console.print(escape(line))


def run(students: dict[str, str], reports: Path, exports: Path, bench_path: Path, out: Path) -> dict:
    summary = collect(students, reports, exports, read_json(bench_path, "latency report"))
    write_json(out, summary)
    print_summary(summary)
    return summary
