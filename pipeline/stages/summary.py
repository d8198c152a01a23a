"""``cakd summary``: the last stage — one table a user reads after ``dvc repro``.

It only reads the reports the other stages wrote (evaluation, export, latency) and restates the
numbers a deployment decision needs: accuracies and gain, ONNX parity, INT8 accuracy, and latency
of the student against the teacher.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from pipeline.fileio import read_json, write_json
from pipeline.ui import console


def _latency(rows: list[dict], checkpoint: str, runtime: str, precision: str = "fp32", batch: int = 1) -> float | None:
    """p50 latency (ms) at ``batch`` on ``runtime`` of the model benchmarked from ``checkpoint`` (its ONNX
    rows come from the export folder, so rows are matched by the model name the checkpoint's rows carry)."""
    names = {row["model"] for row in rows if row["source"] == checkpoint}
    for row in rows:
        if (row["model"] in names and row["runtime"] == runtime and row["precision"] == precision
                and row["batch_size"] == batch):
            return row["p50_ms"]
    return None


def run(eval_path: Path, export_path: Path, bench_path: Path, teacher: Path, student: Path, out: Path) -> dict:
    evaluation = read_json(eval_path, "evaluation metrics")
    exported = read_json(export_path, "export report")
    bench = read_json(bench_path, "latency report")
    rows = bench["rows"]
    onnx, int8 = exported["onnx"], exported.get("int8")
    latency = {
        "student_torch_ms": _latency(rows, str(student), "torch"),
        "student_onnxruntime_ms": _latency(rows, str(student), "onnxruntime"),
        "student_int8_ms": _latency(rows, str(student), "onnxruntime", "int8"),
        "teacher_onnxruntime_ms": _latency(rows, str(teacher), "onnxruntime"),
    }
    speedup = (latency["teacher_onnxruntime_ms"] / latency["student_onnxruntime_ms"]
               if latency["teacher_onnxruntime_ms"] and latency["student_onnxruntime_ms"] else None)
    summary = {
        "teacher_top1": evaluation["teacher"]["top1"],
        "baseline_top1": evaluation["baseline"]["top1"],
        "student_top1": evaluation["student"]["top1"],
        "assistant_top1": evaluation.get("assistant", {}).get("top1"),
        "gain_over_baseline": evaluation["gain_over_baseline"],
        "onnx_max_abs_diff": onnx["max_abs_diff"],
        "onnx_top1_agreement": onnx["top1_agreement"],
        "int8_top1": int8["top1"] if int8 and int8["status"] == "ok" else None,
        "int8_accuracy_drop": int8["drop"] if int8 and int8["status"] == "ok" else None,
        **latency,
        "student_speedup_over_teacher": speedup,
    }
    write_json(out, summary)

    def ms(v: float | None) -> str:
        return f"{v:.2f} ms" if v is not None else "n/a"

    table = Table(title="cakd summary (test set; latency p50 at batch 1, "
                  f"{bench['settings']['threads']} threads, {bench['system'].get('cpu', 'CPU')})")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("teacher top-1", f"{summary['teacher_top1']:.2f}%")
    table.add_row("student alone (baseline) top-1", f"{summary['baseline_top1']:.2f}%")
    table.add_row("distilled student top-1", f"{summary['student_top1']:.2f}%")
    if summary["assistant_top1"] is not None:
        table.add_row("fused assistant top-1", f"{summary['assistant_top1']:.2f}%")
    table.add_row("gain over the student alone", f"{summary['gain_over_baseline']:+.2f} points")
    table.add_row("ONNX parity (max |logit diff|, top-1 agreement)",
                  f"{summary['onnx_max_abs_diff']:.1e}, {100 * summary['onnx_top1_agreement']:.1f}%")
    if int8 and int8["status"] == "rejected":
        table.add_row("INT8 ONNX", f"INT8 rejected: {int8['reason']}")
    elif int8 and int8["status"] == "ok":
        table.add_row("INT8 ONNX top-1 (drop)",
                      f"{summary['int8_top1']:.2f}% (drop {summary['int8_accuracy_drop']:.2f} points)")
    table.add_row("student latency: PyTorch / onnxruntime / INT8",
                  f"{ms(latency['student_torch_ms'])} / {ms(latency['student_onnxruntime_ms'])} / "
                  f"{ms(latency['student_int8_ms'])}")
    table.add_row("teacher latency: onnxruntime", ms(latency["teacher_onnxruntime_ms"]))
    if speedup is not None:
        table.add_row("student speed-up over teacher (onnxruntime)", f"{speedup:.1f}x")
    console.print(table)
    return summary
