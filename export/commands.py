"""``cakd export`` and ``cakd bench-latency``: load model and data, run the export/bench code, write reports.

Plain functions; ``pipeline/cli.py`` registers them as typer commands.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import torch
from cakd.export.bench_inputs import resolve
from cakd.export.bench_latency import Context, pinned_threads, run_bench
from cakd.export.int8 import export_int8
from cakd.export.onnx_export import export_onnx, variant_path
from cakd.export.report import picks, print_table, write_csv, write_pareto_plot
from cakd.export.runtimes import RUNTIMES, Settings
from cakd.export.sysinfo import load_average, load_warning, system_info
from cakd.export.tensorrt import build_engine
from cakd.pipeline.data import build_datasets, load_manifest
from cakd.pipeline.errors import CakdError
from cakd.pipeline.fileio import file_hash, read_json, remove_outputs, write_json
from cakd.pipeline.models import load_model
from cakd.pipeline.params import Params
from cakd.pipeline.ui import console
from rich.markup import escape
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

EVAL_BATCH = 64
SKIPPED_INT8 = {"status": "skipped", "reason": "INT8 not requested (export.int8 / --int8)", "top1": None,
                "fp32_top1": None, "drop": None, "agreement": None, "images": None, "activations": None,
                "path": None}


def spread_sample(dataset: Dataset, count: int) -> torch.Tensor:
    """``count`` images at evenly spaced indices: deterministic, and covering every class even when
    the split is stored class by class."""
    n = len(dataset)
    if n == 0:
        raise CakdError("the dataset split is empty")
    indices = torch.linspace(0, n - 1, min(count, n)).round().long().unique()
    return torch.stack([dataset[int(i)][0] for i in indices])


def _datasets(params: Params, manifest: Path, img_size: int, what: Path) -> tuple[Dataset, Dataset]:
    if params.data.img_size != img_size:
        raise CakdError(f"{what} takes {img_size} px images but data.img_size is {params.data.img_size}")
    return build_datasets(params.data, load_manifest(manifest), params.seed, train_augment=False)


def _reusable(report_path: Path, digest: str, need_fp16: bool, need_int8: bool) -> dict | None:
    """An earlier export of the same checkpoint whose files are all still there (``--format trt`` reuses it)."""
    if not report_path.is_file():
        return None
    report = read_json(report_path, "export report")
    if report.get("checkpoint_sha256") != digest:
        return None
    onnx, int8 = report["onnx"], report.get("int8")
    files = [onnx["path"]]
    if need_fp16:
        if not onnx.get("fp16"):
            return None
        files.append(onnx["fp16"]["path"])
    if need_int8:
        int8 = int8 or {}
        if int8.get("status") != "ok" or int8.get("activations") != "int8" or int8.get("quantize_bias", True):
            return None  # TensorRT needs symmetric activations and float biases
        files.append(int8["path"])
    return report if all(Path(f).is_file() for f in files) else None


def export_command(params: Params, checkpoint: Path, manifest: Path, out_dir: Path,
                   fmt: Literal["onnx", "trt"] = "onnx", fp16: bool = False, int8: bool = False) -> dict:
    """Write ``<checkpoint stem>.onnx`` (+ ``.fp16.onnx``, ``.int8.onnx``) and ``export.json`` into
    ``out_dir``; with ``fmt="trt"`` then build the TensorRT engine (precision ``export.trt.precision``)
    from the matching ONNX, reusing an earlier export of the same checkpoint."""
    cfg = params.export
    precision = cfg.trt.precision
    need_fp16 = fp16 or (fmt == "trt" and precision == "fp16")
    need_int8 = int8 or (fmt == "trt" and precision == "int8")
    model = load_model(checkpoint)
    spec = model.spec
    onnx_path = out_dir / f"{checkpoint.stem}.onnx"
    report_path = out_dir / "export.json"
    digest = file_hash(checkpoint)
    report = _reusable(report_path, digest, need_fp16, need_int8) if fmt == "trt" else None
    if report is None:
        remove_outputs([report_path, variant_path(onnx_path, "int8")])
        train_ds, test_ds = _datasets(params, manifest, spec.img_size, checkpoint)
        report = {"checkpoint": str(checkpoint), "checkpoint_sha256": digest, "model": spec.to_dict()}
        report["onnx"] = export_onnx(model, onnx_path, img_size=spec.img_size, in_chans=spec.in_chans,
                                     opset=cfg.opset, parity_images=spread_sample(test_ds, cfg.parity_images),
                                     atol=cfg.atol, fp16=need_fp16, fp16_atol=cfg.fp16_atol)
        report["int8"] = SKIPPED_INT8
        if need_int8:
            loader = DataLoader(test_ds, batch_size=EVAL_BATCH, num_workers=params.runtime.num_workers)
            report["int8"] = export_int8(onnx_path, variant_path(onnx_path, "int8"),
                                         spread_sample(train_ds, cfg.calib_images), loader,
                                         max_accuracy_drop=cfg.max_accuracy_drop,
                                         min_agreement=cfg.min_int8_agreement,
                                         activations="int8" if fmt == "trt" else cfg.int8_activations,
                                         quantize_bias=fmt != "trt", reduce_range=cfg.int8_reduce_range)
        if report["int8"]["status"] == "rejected" and (cfg.strict or (fmt == "trt" and precision == "int8")):
            raise CakdError(f"{report['int8']['reason']}; no INT8 ONNX written"
                            f"{' (export.strict)' if cfg.strict else ''}")
        write_json(report_path, report)
    _print_export(report)
    if fmt == "trt":
        source = onnx_path if precision == "fp32" else variant_path(onnx_path, precision)
        engine = out_dir / f"{checkpoint.stem}.{precision}.engine"
        report["tensorrt"] = build_engine(source, engine, precision, cfg.trt.batch_sizes, cfg.trt.workspace_mb,
                                          spec.img_size, spec.in_chans)
        write_json(report_path, report)
        console.print(escape(f"TensorRT {precision} engine: {engine} (GPU {report['tensorrt']['gpu']})"))
    return report


def _print_export(report: dict) -> None:
    table = Table(title=escape(f"Export of {report['checkpoint']}"))
    for name in ("file", "check", "result", "MB"):
        table.add_column(name)
    onnx = report["onnx"]
    table.add_row(escape(onnx["path"]), f"FP32 parity on {onnx['images']} images",
                  f"max |diff| {onnx['max_abs_diff']:.2e}, top-1 agreement {100 * onnx['top1_agreement']:.1f}%",
                  f"{onnx['size_bytes'] / 2**20:.2f}")
    if onnx["fp16"]:
        half = onnx["fp16"]
        table.add_row(escape(half["path"]), "FP16 parity", f"max |diff| {half['max_abs_diff']:.2e}, "
                      f"top-1 agreement {100 * half['top1_agreement']:.1f}%", f"{half['size_bytes'] / 2**20:.2f}")
    q = report["int8"]
    if q["status"] != "skipped":
        table.add_row(escape(q["path"] or "(INT8 rejected, not written)"), f"INT8 on {q['images']} test images",
                      f"top-1 {q['top1']:.2f}% vs FP32 {q['fp32_top1']:.2f}% (drop {q['drop']:.2f}), "
                      f"agreement {q['agreement']:.1f}%", "-" if q["size_bytes"] is None else
                      f"{q['size_bytes'] / 2**20:.2f}")
    console.print(table)
    if q["status"] == "rejected":
        console.print(f"[yellow]INT8 rejected[/yellow]: {escape(q['reason'])}")


def _bench_context(params: Params, manifest: Path | None, work: Path) -> Context:
    bench = params.bench
    settings = Settings(bench.threads, work, tuple(sorted(bench.batch_sizes)), params.export.trt.workspace_mb,
                        bench.openvino_hint)
    ctx = Context(settings, params.export, int8_activations=params.export.int8_activations)
    if manifest is not None:
        data = load_manifest(manifest)
        train_ds, test_ds = build_datasets(params.data, data, params.seed, train_augment=False)
        ctx.loader = DataLoader(test_ds, batch_size=EVAL_BATCH, num_workers=params.runtime.num_workers)
        ctx.parity_images = spread_sample(test_ds, params.export.parity_images)
        ctx.calib_images = spread_sample(train_ds, params.export.calib_images)
        ctx.num_classes = data["num_classes"]
    return ctx


def bench_latency_command(params: Params, items: list[str], out_dir: Path, manifest: Path | None = None) -> dict:
    """Benchmark ``[LABEL=]PATH`` items and write ``bench.json``, ``bench.csv`` and, when a dataset gives
    accuracies, ``pareto.png`` into ``out_dir``."""
    bench = params.bench
    json_path, csv_path, png_path = out_dir / "bench.json", out_dir / "bench.csv", out_dir / "pareto.png"
    remove_outputs([json_path, csv_path, png_path])
    models, notes = resolve(items)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="cakd-bench-") as work, pinned_threads(bench.threads):
        rows = run_bench(models, _bench_context(params, manifest, Path(work)), runtimes=list(bench.runtimes),
                         precisions=list(bench.precisions), batch_sizes=sorted(bench.batch_sizes),
                         warmup=bench.warmup, runs=bench.runs, rounds=bench.rounds)
    load_after = load_average()
    warning = load_warning(load_before, load_after, bench.threads)
    settings = Settings(bench.threads, out_dir, tuple(sorted(bench.batch_sizes)), params.export.trt.workspace_mb,
                        bench.openvino_hint)
    result = {
        "system": {**system_info(bench.threads), "load_before": load_before, "load_after": load_after,
                   "load_warning": warning},
        "settings": {**bench.model_dump(mode="json"), "batch_sizes": sorted(bench.batch_sizes),
                     "max_accuracy_drop": params.export.max_accuracy_drop,
                     "sessions": {r: RUNTIMES[r].options(settings) for r in bench.runtimes}},
        "models": [{"label": m.label, "given": [str(p) for p in m.given]} for m in models],
        "notes": notes + ([warning] if warning else []),
        "rows": rows,
        "picks": picks(rows, list(bench.runtimes), bench.budget_ms, params.export.max_accuracy_drop),
    }
    has_accuracy = any(row["top1"] is not None for row in rows)
    result["pareto_png"] = str(png_path) if has_accuracy else None
    if has_accuracy:
        write_pareto_plot(rows, png_path, bench.budget_ms)
    write_json(json_path, result)
    write_csv(rows, csv_path)
    print_table(result, console)
    return result
