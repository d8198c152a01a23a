"""Latency and accuracy of several models on every runtime of ``export/runtimes.py``'s table.

For each (model, runtime, precision) the artefact the runtime consumes is found among the given files
or made here (ONNX export, INT8 quantisation, TensorRT's INT8 form); the test split is run through it
(top-1, max |logit diff| vs PyTorch FP32) and a result that falls more than ``export.max_accuracy_drop``
below its reference is marked failed. Latency is then measured in interleaved rounds, so a change in
machine load hits every model and runtime alike. Nothing requested is dropped silently: a runtime
that cannot run here, an artefact that cannot be made or an INT8 model the export gate rejected is a
row with its status and reason.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from cakd.export.bench_accuracy import Accuracy, Key, accuracy, check, max_abs_diff
from cakd.export.bench_inputs import Model
from cakd.export.int8 import Activations, export_int8, quantize_int8
from cakd.export.onnx_export import export_onnx
from cakd.export.runtimes import RUNTIMES, Artefact, Precision, Runner, Session, Settings
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import load_model
from cakd.pipeline.params import ExportParams
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]
P99_MIN_RUNS = 100  # below this many timed calls the 99th percentile is the slowest call, not a percentile


@dataclass
class Context:
    """Everything the artefacts are made and checked with (the same for every model)."""

    settings: Settings
    export: ExportParams
    loader: Loader | None = None
    parity_images: torch.Tensor | None = None
    calib_images: torch.Tensor | None = None
    num_classes: int | None = None
    int8_activations: Activations = "uint8"


@dataclass
class Loaded:
    """A model with what is known about it: PyTorch module (when a checkpoint was given) and shape."""

    model: Model
    net: nn.Module | None
    img_size: int
    in_chans: int
    num_classes: int
    params: int | None = None
    gflops: float | None = None


@dataclass
class Candidate:
    """One artefact of one model on one runtime, ready to run."""

    loaded: Loaded
    runtime: str
    precision: Precision
    artefact: Artefact
    path: Path
    runner: Runner | None = None


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Pin PyTorch's intra-op threads for the measurement (other runtimes get them per session)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def count_gflops(model: nn.Module, img_size: int, in_chans: int = 3) -> float:
    """Forward FLOPs for one image (a multiply-add counts as 2), from PyTorch's own op counter."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.zeros(1, in_chans, img_size, img_size))
    return counter.get_total_flops() / 1e9


def _onnx_shape(path: Path) -> tuple[int, int, int]:
    """(in_chans, img_size, num_classes) read from an ONNX file's input and output."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    return dims[1], dims[-1], graph.output[0].type.tensor_type.shape.dim[-1].dim_value


def load(model: Model, ctx: Context) -> Loaded:
    """The model's network and shape; a model that does not fit the dataset is refused in one line
    (a 32 px model is not measured on 16 px images, nor a 100-class one scored on 10 classes)."""
    if "checkpoint" in model.files:
        net = load_model(model.files["checkpoint"])
        spec = net.spec
        loaded = Loaded(model, net, spec.img_size, spec.in_chans, spec.num_classes,
                        sum(p.numel() for p in net.parameters()), count_gflops(net, spec.img_size, spec.in_chans))
    else:
        in_chans, img_size, classes = _onnx_shape(next(iter(model.files.values())))
        loaded = Loaded(model, None, img_size, in_chans, classes)
    images = ctx.parity_images
    if images is not None and images.shape[-1] != loaded.img_size:
        raise CakdError(f"{model.label} takes {loaded.img_size} px images but the dataset gives "
                        f"{images.shape[-1]} px (data.img_size); benchmark it without --data or on its own data")
    if ctx.num_classes is not None and loaded.num_classes != ctx.num_classes:
        raise CakdError(f"{model.label} predicts {loaded.num_classes} classes but the dataset has "
                        f"{ctx.num_classes}; benchmark it without --data or on its own data")
    return loaded


def _stem(loaded: Loaded, ctx: Context) -> Path:
    return ctx.settings.work_dir / loaded.model.label.replace("/", "_")


def _fp32_onnx(loaded: Loaded, ctx: Context) -> Path | None:
    """The given FP32 ONNX, or one exported (parity-gated) from the checkpoint into the work folder."""
    files = loaded.model.files
    if "onnx" not in files and loaded.net is not None:
        images = ctx.parity_images if ctx.parity_images is not None else torch.randn(
            8, loaded.in_chans, loaded.img_size, loaded.img_size)
        path = _stem(loaded, ctx).with_suffix(".onnx")
        export_onnx(loaded.net, path, img_size=loaded.img_size, in_chans=loaded.in_chans, opset=ctx.export.opset,
                    parity_images=images, atol=ctx.export.atol)
        files["onnx"] = path
    return files.get("onnx")


def _make_int8(loaded: Loaded, ctx: Context, fp32: Path) -> tuple[Path | None, str | None]:
    """Quantise as ``cakd export`` does, behind the same gate when there is a test set to gate on."""
    model, path = loaded.model, _stem(loaded, ctx).with_name(f"{_stem(loaded, ctx).name}.int8.onnx")
    if ctx.loader is None:
        quantize_int8(fp32, path, ctx.calib_images, activations=ctx.int8_activations,
                      reduce_range=ctx.export.int8_reduce_range)
    else:
        report = export_int8(fp32, path, ctx.calib_images, ctx.loader, max_accuracy_drop=ctx.export.max_accuracy_drop,
                             min_agreement=ctx.export.min_int8_agreement, activations=ctx.int8_activations,
                             reduce_range=ctx.export.int8_reduce_range)
        if report["status"] == "rejected":
            model.int8_rejected = report["reason"]
            return None, report["reason"]
    model.files["onnx-int8"] = path
    model.int8_activations = ctx.int8_activations
    return path, None


def ensure_artefact(loaded: Loaded, kind: Artefact, ctx: Context) -> tuple[Path | None, str, str | None]:
    """(path, "ok", None), or (None, status, reason) when the artefact is not there and cannot be made."""
    files = loaded.model.files
    if kind in files:
        return files[kind], "ok", None
    if kind == "checkpoint":
        return None, "unavailable", "no checkpoint given for this model"
    if kind == "onnx-fp16":
        return None, "unavailable", "no FP16 ONNX given (cakd export --fp16)"
    fp32 = _fp32_onnx(loaded, ctx)
    if fp32 is None:
        return None, "unavailable", "no FP32 ONNX given and no checkpoint to export one from"
    if kind == "onnx":
        return fp32, "ok", None
    if kind == "onnx-int8" and loaded.model.int8_rejected:
        return None, "rejected", loaded.model.int8_rejected
    if ctx.calib_images is None:
        return None, "unavailable", "no INT8 ONNX given and no calibration images (--data) to make one"
    if kind == "onnx-int8":
        path, reason = _make_int8(loaded, ctx, fp32)
        return path, ("ok" if path else "rejected"), reason
    # TensorRT: symmetric activations (zero point 0) and float biases (no INT32 DequantizeLinear)
    path = quantize_int8(fp32, _stem(loaded, ctx).with_name(f"{_stem(loaded, ctx).name}.int8-trt.onnx"),
                         ctx.calib_images, activations="int8", quantize_bias=False,
                         reduce_range=ctx.export.int8_reduce_range)
    files[kind] = path
    return path, "ok", None


def plan(models: list[Loaded], runtimes: list[str], precisions: list[Precision],
         ctx: Context) -> tuple[list[Candidate], list[dict]]:
    """Candidates to run, and one entry per (model, runtime, precision) that cannot run, with the reason."""
    candidates, skipped = [], []
    for runtime in runtimes:
        entry = RUNTIMES[runtime]
        why_not = entry.unavailable()
        for loaded in models:
            for precision in (p for p in precisions if p in entry.consumes):
                key = {"model": loaded.model.label, "runtime": runtime, "precision": precision}
                if why_not:
                    skipped.append({**key, "status": "unavailable", "reason": why_not, "loaded": loaded})
                    continue
                path, status, reason = ensure_artefact(loaded, entry.consumes[precision], ctx)
                if path is None:
                    skipped.append({**key, "status": status, "reason": reason, "loaded": loaded})
                else:
                    candidates.append(Candidate(loaded, runtime, precision, entry.consumes[precision], path))
    return candidates, skipped


def build_runners(candidates: list[Candidate], settings: Settings) -> None:
    for cand in candidates:
        session = Session(cand.path, cand.precision, cand.loaded.net, cand.loaded.img_size, cand.loaded.in_chans,
                          settings)
        cand.runner = RUNTIMES[cand.runtime].build(session)


def time_call(call: Callable[[], None], runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def latency_stats(rounds: list[list[float]], batch: int) -> dict:
    """p50/p90 over all timed calls; the spread of the per-round p50s; p99 only when there are enough
    calls for it to be a percentile rather than the slowest call."""
    ms = np.concatenate([np.asarray(r) for r in rounds]) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    per_round = [float(np.median(np.asarray(r) * 1e3)) for r in rounds]
    return {"p50_ms": float(p50), "p50_round_min_ms": min(per_round), "p50_round_max_ms": max(per_round),
            "p90_ms": float(p90), "p99_ms": float(p99) if len(ms) >= P99_MIN_RUNS else None,
            "mean_ms": float(statistics.fmean(ms)), "runs": len(ms), "rounds": len(rounds),
            "throughput_ips": float(batch * 1e3 / p50)}


def measure(candidates: list[Candidate], *, batch_sizes: list[int], warmup: int, runs: int,
            rounds: int) -> dict[tuple[int, int], dict]:
    """Latency stats per (candidate index, batch size). Every round times each (candidate, batch) once,
    starting one candidate further along than the last round, so slow and quiet phases of a shared
    machine fall on all of them."""
    calls = {(i, b): c.runner.timed_call(b) for i, c in enumerate(candidates) for b in batch_sizes}
    for call in calls.values():
        time_call(call, warmup)
    keys = list(calls)
    times: dict[tuple[int, int], list[list[float]]] = {k: [] for k in keys}
    for r in range(rounds):
        shift = (r * len(batch_sizes)) % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(time_call(calls[key], runs))
    return {key: latency_stats(t, key[1]) for key, t in times.items()}


def accuracies(candidates: list[Candidate], loader: Loader) -> dict[Key, Accuracy]:
    """Test-set accuracy of every candidate, plus PyTorch FP32 of every model with a checkpoint (the
    reference logits) even when torch itself is not timed."""
    results = {_key(c): accuracy(c.runner.predict, loader) for c in candidates}
    for loaded in {id(c.loaded): c.loaded for c in candidates}.values():
        key = (loaded.model.label, "torch", "fp32")
        if key not in results and loaded.net is not None:
            net = loaded.net.eval()
            results[key] = accuracy(lambda x, n=net: n(x).detach(), loader)
    return results


def _key(cand: Candidate) -> Key:
    return cand.loaded.model.label, cand.runtime, cand.precision


def _row(loaded: Loaded, runtime: str, precision: str, batch: int, status: str, reason: str | None) -> dict:
    model = loaded.model
    return {"model": model.label, "runtime": runtime, "precision": precision, "batch_size": batch,
            "status": status, "reason": reason, "p50_ms": None, "p50_round_min_ms": None, "p50_round_max_ms": None,
            "p90_ms": None, "p99_ms": None, "mean_ms": None, "runs": 0, "rounds": 0, "throughput_ips": None,
            "top1": None, "max_abs_diff": None, "params_m": None if loaded.params is None else loaded.params / 1e6,
            "gflops": loaded.gflops, "file_mb": None, "artefact": None,
            "activations": model.int8_activations if precision == "int8" else None,
            "source": str(model.given[0]), "given": [str(p) for p in model.given]}


def assemble_rows(candidates: list[Candidate], skipped: list[dict], latency: dict[tuple[int, int], dict],
                  results: dict[Key, Accuracy] | None, batch_sizes: list[int], max_drop: float) -> list[dict]:
    """One row per (model, runtime, precision, batch size): measured ones first, in table order."""
    verdict = check(results, max_drop) if results is not None else {}
    rows = []
    for i, cand in enumerate(candidates):
        key = _key(cand)
        status, reason = verdict.get(key, ("ok", None))
        for batch in batch_sizes:
            row = _row(cand.loaded, cand.runtime, cand.precision, batch, status, reason)
            row.update(latency[i, batch], artefact=cand.artefact, file_mb=cand.path.stat().st_size / 2**20)
            if results is not None:
                row.update(top1=results[key].top1, max_abs_diff=max_abs_diff(results, key))
            rows.append(row)
    for entry in skipped:
        rows += [_row(entry["loaded"], entry["runtime"], entry["precision"], b, entry["status"], entry["reason"])
                 for b in batch_sizes]
    return rows


def run_bench(items: list[Model], ctx: Context, *, runtimes: list[str], precisions: list[Precision],
              batch_sizes: list[int], warmup: int, runs: int, rounds: int) -> list[dict]:
    """Load, plan, check accuracy, time: the rows of bench.json."""
    models = [load(m, ctx) for m in items]
    candidates, skipped = plan(models, runtimes, precisions, ctx)
    if not candidates:
        reasons = "; ".join(sorted({f"{s['runtime']}: {s['reason']}" for s in skipped}))
        raise CakdError(f"nothing to benchmark with runtimes {runtimes} ({reasons or 'none'})")
    build_runners(candidates, ctx.settings)
    results = accuracies(candidates, ctx.loader) if ctx.loader is not None else None
    latency = measure(candidates, batch_sizes=batch_sizes, warmup=warmup, runs=runs, rounds=rounds)
    return assemble_rows(candidates, skipped, latency, results, batch_sizes, ctx.export.max_accuracy_drop)
