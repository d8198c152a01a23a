"""Deployment speed of a distilled student (not a test): the three latency claims of issue 4.

    python benchmarks/export_latency.py artifacts/student/model.pt --teacher artifacts/teacher/model.pt \\
        --manifest artifacts/data/manifest.json --out benchmarks/export_latency.json

Measures, with pinned threads (run it on an otherwise idle machine):
  * onnxruntime FP32 vs PyTorch eager, batch 1            (target: <= 0.2x)
  * INT8 vs FP32 onnxruntime, batch 64, with top-1 drop   (target: <= 0.7x, <= 1 point)
    for both activation forms: int8 symmetric (what TensorRT consumes) and uint8 (onnxruntime's x86 path)
  * teacher vs student in onnxruntime, batch 1            (target: student >= 5x faster)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from export.bench_latency import Candidate, count_gflops, measure, pinned_threads
from export.commands import EVAL_BATCH, spread_sample
from export.int8 import quantize_int8
from export.onnx_export import export_onnx, variant_path
from export.runtimes import ort_runner, torch_runner
from export.sysinfo import system_info
from pipeline.data import build_datasets, load_manifest
from pipeline.fileio import write_json
from pipeline.models import load_model
from pipeline.params import load_params


def candidates(name: str, checkpoint: Path, work: Path, threads: int, parity: torch.Tensor,
               calib: torch.Tensor | None, opset: int) -> list[Candidate]:
    model = load_model(checkpoint)
    spec = model.spec
    info = {"params": sum(p.numel() for p in model.parameters()),
            "gflops": count_gflops(model, spec.img_size, spec.in_chans)}
    fp32 = work / f"{name}.onnx"
    export_onnx(model, fp32, img_size=spec.img_size, in_chans=spec.in_chans, opset=opset, parity_images=parity,
                atol=1e-4)
    found = [Candidate(name, "torch", "fp32", checkpoint, checkpoint,
                       lambda: torch_runner(model, spec.img_size, spec.in_chans), **info),
             Candidate(name, "onnxruntime", "fp32", fp32, checkpoint, lambda: ort_runner(fp32, threads), **info)]
    for activations in ("int8", "uint8") if calib is not None else ():
        path = quantize_int8(fp32, variant_path(fp32, activations), calib, activations=activations)
        found.append(Candidate(name, f"onnxruntime-{activations}", "int8", path, checkpoint,
                               lambda p=path, a=activations: ort_runner(p, threads, runtime=f"onnxruntime-{a}"),
                               **info))
    return found


def ratio(rows: list[dict], num: tuple[str, str, int], den: tuple[str, str, int]) -> float:
    by = {(r["model"], r["runtime"], r["batch_size"]): r for r in rows}
    return by[num]["p50_ms"] / by[den]["p50_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", type=Path)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/export_latency.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    params = load_params(args.params)
    train_ds, test_ds = build_datasets(params.data, load_manifest(args.manifest), params.seed, train_augment=False)
    loader = DataLoader(test_ds, batch_size=EVAL_BATCH)
    parity = spread_sample(test_ds, params.export.parity_images)
    calib = spread_sample(train_ds, params.export.calib_images)

    with tempfile.TemporaryDirectory(prefix="cakd-export-latency-") as tmp, pinned_threads(args.threads):
        work = Path(tmp)
        found = (candidates("student", args.student, work, args.threads, parity, calib, params.export.opset)
                 + candidates("teacher", args.teacher, work, args.threads, parity, None, params.export.opset))
        rows = measure(found, batch_sizes=[1, 64], warmup=args.warmup, runs=args.runs, loader=loader)

    by = {(r["model"], r["runtime"], r["batch_size"]): r for r in rows}
    claims = {
        "ort_fp32_vs_torch_b1": ratio(rows, ("student", "onnxruntime", 1), ("student", "torch", 1)),
        "int8_s8_vs_fp32_b64": ratio(rows, ("student", "onnxruntime-int8", 64), ("student", "onnxruntime", 64)),
        "int8_u8_vs_fp32_b64": ratio(rows, ("student", "onnxruntime-uint8", 64), ("student", "onnxruntime", 64)),
        "int8_s8_top1_drop": by["student", "onnxruntime", 1]["top1"] - by["student", "onnxruntime-int8", 1]["top1"],
        "int8_u8_top1_drop": by["student", "onnxruntime", 1]["top1"] - by["student", "onnxruntime-uint8", 1]["top1"],
        "teacher_vs_student_ort_b1": ratio(rows, ("teacher", "onnxruntime", 1), ("student", "onnxruntime", 1)),
    }
    targets = {"ort_fp32_vs_torch_b1": "<= 0.2", "int8_s8_vs_fp32_b64": "<= 0.7", "int8_u8_vs_fp32_b64": "<= 0.7",
               "int8_s8_top1_drop": "<= 1.0", "int8_u8_top1_drop": "<= 1.0", "teacher_vs_student_ort_b1": ">= 5"}

    console = Console(width=140)
    table = Table(title=f"{args.student} vs {args.teacher} ({args.threads} threads)")
    for col in ("model", "runtime", "batch", "p50 ms", "p90 ms", "img/s", "top-1 %", "MB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["runtime"], str(r["batch_size"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}",
                      f"{r['throughput_ips']:.0f}", f"{r['top1']:.2f}", f"{r['file_mb']:.2f}")
    console.print(table)
    for name, value in claims.items():
        console.print(f"{name:28s} {value:8.3f}   target {targets[name]}")
    write_json(args.out, {"student": str(args.student), "teacher": str(args.teacher), "rows": rows,
                          "claims": claims, "targets": targets, "system": system_info(args.threads),
                          "settings": {"warmup": args.warmup, "runs": args.runs, "batch_sizes": [1, 64]}})
    console.print(f"written: {args.out}")


if __name__ == "__main__":
    main()
