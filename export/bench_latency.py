"""Latency of several models across the runtimes present, measured the same way for each.

Inputs are checkpoints (``.pt``: PyTorch rows, and onnxruntime rows through an ONNX exported on the
fly unless one is given), ONNX files (a QDQ graph is the ``onnxruntime-int8`` runtime) and folders of
ONNX files (``cakd export``'s output, whose ``export.json`` ties them to their checkpoint). A requested
runtime that cannot run here is listed with the reason, never silently dropped.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from export.int8 import Activations, quantize_int8
from export.onnx_export import export_onnx, variant_path
from export.report import budget_pick
from export.runtimes import Runner, is_quantized, ort_runner, torch_runner
from export.sysinfo import system_info
from export.tensorrt import Precision, build_engine, tensorrt_runner, tensorrt_unavailable
from pipeline.errors import CakdError
from pipeline.fileio import file_hash, read_json
from pipeline.metrics import top1_accuracy
from pipeline.models import load_model
from pipeline.params import BenchParams, ExportParams

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Candidate:
    """One model file on one runtime, with what is known about the model it holds."""

    model: str
    runtime: str
    precision: Precision
    path: Path  # the file measured (an ONNX or engine made here on the fly, or the given file)
    source: Path  # the file the user gave
    make_runner: Callable[[], Runner]
    params: int | None = None
    gflops: float | None = None


@dataclass
class Plan:
    candidates: list[Candidate]
    unavailable: list[dict]


@dataclass
class _Files:
    """What was given (or made here) for one model, each with the given file it comes from."""

    checkpoint: Path | None = None
    fp32: Path | None = None
    fp16: Path | None = None
    int8: Path | None = None
    sources: dict[Path, Path] = field(default_factory=dict)

    def add(self, slot: str, path: Path, source: Path) -> None:
        setattr(self, slot, path)
        self.sources[path] = source


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Pin PyTorch's intra-op threads for the measurement (onnxruntime gets them per session)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_key(path: Path) -> str:
    """``student.pt``, ``student.onnx``, ``student.fp16.onnx`` and ``student.int8.onnx`` all describe
    the model ``student``."""
    return path.stem.removesuffix(".int8").removesuffix(".fp16")


def count_gflops(model: nn.Module, img_size: int, in_chans: int = 3) -> float:
    """Forward FLOPs for one image (a multiply-add counts as 2), from PyTorch's own op counter."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.zeros(1, in_chans, img_size, img_size))
    return counter.get_total_flops() / 1e9


def onnx_precision(path: Path) -> Precision:
    if is_quantized(path):
        return "int8"
    graph = onnx.load(str(path), load_external_data=False).graph
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    return "fp16" if half else "fp32"


def onnx_img_size(path: Path) -> int:
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


def runtime_unavailable(runtime: str) -> str | None:
    """Why a whole runtime cannot run on this machine, or None."""
    if runtime == "torch-cuda" and not torch.cuda.is_available():
        return "no CUDA device is visible to PyTorch"
    if runtime == "onnxruntime-cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if runtime == "tensorrt":
        return tensorrt_unavailable()
    return None


def _expand(models: list[Path]) -> list[Path]:
    """Files as given; a folder (e.g. ``cakd export``'s output) stands for the ONNX files in it."""
    files = []
    for path in models:
        if path.is_dir():
            found = sorted(path.glob("*.onnx"))
            if not found:
                raise CakdError(f"no .onnx files in {path}")
            files += found
        elif not path.is_file():
            raise CakdError(f"model file not found: {path}")
        elif path.suffix not in (".pt", ".pth", ".onnx"):
            raise CakdError(f"cannot benchmark {path}: give .pt checkpoints, .onnx files or folders of them")
        else:
            files.append(path)
    return files


def _exported_from(onnx_path: Path) -> str | None:
    """The checkpoint hash ``cakd export`` recorded next to this ONNX, if any."""
    report = onnx_path.parent / "export.json"
    return read_json(report, "export report").get("checkpoint_sha256") if report.is_file() else None


def _unique_keys(paths: list[Path]) -> list[str]:
    """Model names from file names; same-named files of one kind (``teacher/model.pt``,
    ``student/model.pt``) keep their folder."""
    keys = [model_key(p) for p in paths]
    return [f"{p.parent.name}/{k}" if keys.count(k) > 1 else k for p, k in zip(paths, keys, strict=True)]


def _group(models: list[Path]) -> dict[str, _Files]:
    """Files per model. An ONNX made by ``cakd export`` from one of the given checkpoints (same hash in
    its ``export.json``) joins that checkpoint's model, so it is neither exported twice nor unlinked."""
    files = _expand(models)
    checkpoints = [p for p in files if p.suffix != ".onnx"]
    groups: dict[str, _Files] = {}
    by_hash: dict[str, str] = {}
    for path, key in zip(checkpoints, _unique_keys(checkpoints), strict=True):
        groups.setdefault(key, _Files()).add("checkpoint", path, path)
        by_hash[file_hash(path)] = key
    onnx_files = [p for p in files if p.suffix == ".onnx"]
    for slot in ("fp32", "fp16", "int8"):
        paths = [p for p in onnx_files if onnx_precision(p) == slot]
        for path, key in zip(paths, _unique_keys(paths), strict=True):
            key = by_hash.get(_exported_from(path), key)
            entry = groups.setdefault(key, _Files())
            if getattr(entry, slot) is not None:
                raise CakdError(f"two {slot} ONNX files for the model '{key}': {getattr(entry, slot)} and {path}")
            entry.add(slot, path, path)
    return groups


def _check_size(path: Path, img_size: int, images: torch.Tensor | None) -> None:
    if images is not None and images.shape[-1] != img_size:
        raise CakdError(f"{path} takes {img_size} px images but the dataset gives {images.shape[-1]} px "
                        "(data.img_size)")


def _onnx_candidates(key: str, path: Path, source: Path, runtimes: list[str], threads: int, work_dir: Path,
                     batch_sizes: list[int], workspace_mb: int, info: dict,
                     images: torch.Tensor | None) -> list[Candidate]:
    """onnxruntime (CPU, CUDA) and TensorRT rows for one ONNX file, as far as they were requested."""
    precision = onnx_precision(path)
    _check_size(path, onnx_img_size(path), images)
    found = []
    cpu_runtime = "onnxruntime-int8" if precision == "int8" else "onnxruntime"
    if cpu_runtime in runtimes:
        found.append(Candidate(key, cpu_runtime, precision, path, source,
                               lambda: ort_runner(path, threads, runtime=cpu_runtime), **info))
    if "onnxruntime-cuda" in runtimes and precision != "int8":
        found.append(Candidate(key, "onnxruntime-cuda", precision, path, source,
                               lambda: ort_runner(path, threads, cuda=True, runtime="onnxruntime-cuda"), **info))
    if "tensorrt" in runtimes:
        engine = work_dir / f"{path.stem}.{precision}.engine"

        def make_trt() -> Runner:
            build_engine(path, engine, precision, batch_sizes, workspace_mb, onnx_img_size(path))
            return tensorrt_runner(engine)

        found.append(Candidate(key, "tensorrt", precision, engine, source, make_trt, **info))
    return found


def _torch_candidates(key: str, files: _Files, usable: list[str],
                      images: torch.Tensor | None) -> tuple[nn.Module, list[Candidate], dict]:
    model = load_model(files.checkpoint)
    spec = model.spec
    _check_size(files.checkpoint, spec.img_size, images)
    info = {"params": sum(p.numel() for p in model.parameters()),
            "gflops": count_gflops(model, spec.img_size, spec.in_chans)}
    found = [Candidate(key, runtime, "fp32", files.checkpoint, files.checkpoint,
                       lambda d=device: torch_runner(model, spec.img_size, spec.in_chans, d), **info)
             for runtime, device in (("torch", "cpu"), ("torch-cuda", "cuda")) if runtime in usable]
    return model, found, info


def plan(models: list[Path], runtimes: list[str], work_dir: Path, *, threads: int, batch_sizes: list[int],
         export: ExportParams, parity_images: torch.Tensor | None = None,
         calib_images: torch.Tensor | None = None, int8_activations: Activations = "int8") -> Plan:
    """Resolve the given files into (model, runtime) candidates. A checkpoint without a given ONNX is
    exported into ``work_dir`` (parity-gated) when an ONNX runtime is wanted; an FP32 ONNX without a
    given INT8 one is quantised there when INT8 is wanted and calibration images are given."""
    unavailable = [{"runtime": r, "reason": why} for r in runtimes if (why := runtime_unavailable(r))]
    usable = [r for r in runtimes if runtime_unavailable(r) is None]
    fp32_runtimes = [r for r in usable if r != "onnxruntime-int8"]
    wants_int8 = "onnxruntime-int8" in usable
    candidates: list[Candidate] = []
    for key, files in _group(models).items():
        stem = work_dir / key.replace("/", "_")
        info: dict = {}
        if files.checkpoint is not None:
            model, found, info = _torch_candidates(key, files, usable, parity_images)
            candidates += found
            needs_onnx = any(r in fp32_runtimes for r in ("onnxruntime", "onnxruntime-cuda", "tensorrt")) or (
                wants_int8 and files.int8 is None and calib_images is not None)
            if files.fp32 is None and needs_onnx:
                spec = model.spec
                images = parity_images if parity_images is not None else torch.randn(
                    8, spec.in_chans, spec.img_size, spec.img_size)
                export_onnx(model, stem.with_suffix(".onnx"), img_size=spec.img_size, in_chans=spec.in_chans,
                            opset=export.opset, parity_images=images, atol=export.atol)
                files.add("fp32", stem.with_suffix(".onnx"), files.checkpoint)
        for onnx_file in (files.fp32, files.fp16):
            if onnx_file is not None:
                candidates += _onnx_candidates(key, onnx_file, files.sources[onnx_file], fp32_runtimes, threads,
                                               work_dir, batch_sizes, export.trt.workspace_mb, info, parity_images)
        if not wants_int8:
            continue
        if files.int8 is None and files.fp32 is not None and calib_images is not None:
            made = quantize_int8(files.fp32, variant_path(stem.with_suffix(".onnx"), "int8"), calib_images,
                                 activations=int8_activations)
            files.add("int8", made, files.sources[files.fp32])
        if files.int8 is None:
            unavailable.append({"runtime": "onnxruntime-int8", "model": key,
                                "reason": "no INT8 ONNX given and no calibration images to make one"})
            continue
        candidates += _onnx_candidates(key, files.int8, files.sources[files.int8], usable, threads, work_dir,
                                       batch_sizes, export.trt.workspace_mb, info, parity_images)
    return Plan(candidates, unavailable)


def time_call(call: Callable[[], None], warmup: int, runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def latency_stats(times: list[float], batch: int) -> dict:
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(statistics.fmean(ms)), "throughput_ips": float(batch * 1e3 / p50)}


def measure(candidates: list[Candidate], *, batch_sizes: list[int], warmup: int, runs: int,
            loader: Loader | None = None) -> list[dict]:
    """One row per (candidate, batch size); accuracy (top-1 %) once per candidate when a loader is given."""
    rows = []
    for cand in candidates:
        runner = cand.make_runner()
        top1 = top1_accuracy(runner.predict, loader) if loader is not None else None
        for batch in batch_sizes:
            stats = latency_stats(time_call(runner.timed_call(batch), warmup, runs), batch)
            rows.append({"model": cand.model, "runtime": cand.runtime, "precision": cand.precision,
                         "batch_size": batch, **stats,
                         "top1": top1, "params_m": None if cand.params is None else cand.params / 1e6,
                         "gflops": cand.gflops, "file_mb": cand.path.stat().st_size / 2**20,
                         "source": str(cand.source)})
    return rows


def bench_latency(models: list[Path], work_dir: Path, *, bench: BenchParams, export: ExportParams,
                  loader: Loader | None = None, parity_images: torch.Tensor | None = None,
                  calib_images: torch.Tensor | None = None, int8_activations: Activations = "int8") -> dict:
    """Plan, measure with pinned threads, and return rows + system + unavailable runtimes + budget pick."""
    with pinned_threads(bench.threads):
        found = plan(models, list(bench.runtimes), work_dir, threads=bench.threads,
                     batch_sizes=bench.batch_sizes, export=export, parity_images=parity_images,
                     calib_images=calib_images, int8_activations=int8_activations)
        if not found.candidates:
            reasons = "; ".join(f"{u['runtime']}: {u['reason']}" for u in found.unavailable)
            raise CakdError(f"nothing to benchmark with runtimes {list(bench.runtimes)} ({reasons or 'none'})")
        rows = measure(found.candidates, batch_sizes=sorted(bench.batch_sizes), warmup=bench.warmup,
                       runs=bench.runs, loader=loader)
    return {
        "system": system_info(bench.threads),
        "settings": {"batch_sizes": sorted(bench.batch_sizes), "warmup": bench.warmup, "runs": bench.runs,
                     "threads": bench.threads, "runtimes": list(bench.runtimes)},
        "rows": rows,
        "unavailable": found.unavailable,
        "budget": budget_pick(rows, bench.budget_ms) if bench.budget_ms is not None else None,
    }
