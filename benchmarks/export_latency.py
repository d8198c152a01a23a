"""Deployment speed of a distilled student (not a test): the latency claims, on every runtime of the table.

    python benchmarks/export_latency.py artifacts/student/model.pt --teacher artifacts/teacher/model.pt \\
        --manifest artifacts/data/manifest.json --out benchmarks/results/export_latency.json

It is `cakd bench-latency` (same runtime table, accuracy check per runtime, interleaved rounds, load
average) at batch 1 and 64 on torch, onnxruntime and OpenVINO, FP32 and INT8, plus these ratios:
  * onnxruntime FP32 vs PyTorch eager, batch 1             (target: <= 0.2x)
  * INT8 vs FP32, batch 64, onnxruntime and OpenVINO       (target: <= 0.7x), with the top-1 drop (<= 1 point)
  * teacher vs student on onnxruntime, batch 1             (target: student >= 5x faster)
Run it on an otherwise idle machine: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from cakd.pipeline.files.fileio import write_json
from cakd.pipeline.settings.loading import load_params
from cakd.pipeline.stages import bench

TARGETS = {"ort_fp32_vs_torch_b1": "<= 0.2", "ort_int8_vs_fp32_b64": "<= 0.7", "openvino_int8_vs_fp32_b64": "<= 0.7",
           "ort_int8_top1_drop": "<= 1.0", "openvino_int8_top1_drop": "<= 1.0", "teacher_vs_student_ort_b1": ">= 5"}


def _value(rows: list[dict], model: str, runtime: str, precision: str, batch: int, key: str) -> float | None:
    for r in rows:
        if (r["model"], r["runtime"], r["precision"], r["batch_size"]) == (model, runtime, precision, batch) and \
                r["artefact"] != "onnx-int8-qat":
            return r[key]
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def claims(rows: list[dict]) -> dict[str, float | None]:
    def p50(model: str, runtime: str, precision: str, batch: int) -> float | None:
        return _value(rows, model, runtime, precision, batch, "p50_ms")

    def drop(runtime: str) -> float | None:
        fp32, int8 = (_value(rows, "student", runtime, p, 1, "top1") for p in ("fp32", "int8"))
        return None if fp32 is None or int8 is None else fp32 - int8

    return {
        "ort_fp32_vs_torch_b1": _ratio(p50("student", "onnxruntime", "fp32", 1), p50("student", "torch", "fp32", 1)),
        "ort_int8_vs_fp32_b64": _ratio(p50("student", "onnxruntime", "int8", 64),
                                       p50("student", "onnxruntime", "fp32", 64)),
        "openvino_int8_vs_fp32_b64": _ratio(p50("student", "openvino", "int8", 64),
                                            p50("student", "openvino", "fp32", 64)),
        "ort_int8_top1_drop": drop("onnxruntime"),
        "openvino_int8_top1_drop": drop("openvino"),
        "teacher_vs_student_ort_b1": _ratio(p50("teacher", "onnxruntime", "fp32", 1),
                                            p50("student", "onnxruntime", "fp32", 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", type=Path)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_latency.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--runs", type=int, default=34, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    params = load_params(args.params, [
        f"bench.threads={args.threads}", f"bench.batch_sizes={args.batch_sizes}", f"bench.runs={args.runs}",
        f"bench.rounds={args.rounds}", "deploy.runtimes=[torch, onnxruntime, openvino]",
        "deploy.precisions=[fp32, int8]"])
    result = bench.run(params, [f"student={args.student}", f"teacher={args.teacher}"], args.out.with_suffix(""),
                       args.manifest)
    found = claims(result["rows"])
    console = Console(width=140)
    for name, value in found.items():
        shown = "n/a" if value is None else f"{value:8.3f}"
        console.print(f"{name:28s} {shown}   target {TARGETS[name]}")
    write_json(args.out, {"student": str(args.student), "teacher": str(args.teacher), "claims": found,
                          "targets": TARGETS, **result})
    console.print(f"written: {args.out} (table, CSV and Pareto plot in {args.out.with_suffix('')})")


if __name__ == "__main__":
    main()
