"""An INT8 file gated, at export, on every deploy runtime that consumes it, at every batch size it will serve.

The INT8 gate proper runs on onnxruntime at the evaluation batch. That says nothing about another runtime, nor
about another batch: OpenVINO 2026.4 scored a DeiT's INT8 file 97.33% at batch 1 and 8 and 60.89% at batch 64
where onnxruntime gave 97.56% at every batch (issue 33). So each consumer in ``deploy.runtimes`` scores the file
at each of ``bench.batch_sizes`` and the evaluation batch, against the same FP32 logits and with the same gate.
A runtime keeps the file for the batch sizes where it passes (``export.json``: ``runtimes.NAME.batch_sizes``); a
file that passes on no consumer at any batch size is rejected like any failed INT8. A runtime that cannot run
here is recorded as unchecked, with why: the bench's runtime check is its only check.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...pipeline.settings.params import ExportParams, Params
from ..exported import runtime_refusals
from ..measure.bench_accuracy import rebatched
from ..runtimes import RUNTIMES, Runner, Session, Settings
from .gate_data import EVAL_BATCH
from .int8 import int8_gate

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Serving:
    """Where an export will be served: the deploy runtimes, the batch sizes, and the bench's session settings."""

    runtimes: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    threads: int = 1
    openvino_hint: str = "f32"
    bench_batch_sizes: tuple[int, ...] = ()  # the bench's own (``batch_sizes`` adds the evaluation batch)

    def key(self) -> dict:
        return asdict(self)


def serving_of(params: Params) -> Serving:
    """``deploy.runtimes`` at ``bench.batch_sizes`` plus the evaluation batch (the largest a user is told of)."""
    return Serving(tuple(params.deploy.runtimes), tuple(sorted({*params.bench.batch_sizes, EVAL_BATCH})),
                   params.bench.threads, params.bench.openvino_hint, tuple(sorted(params.bench.batch_sizes)))


def consumers(kind: str, runtimes: Iterable[str]) -> list[str]:
    return [name for name in runtimes if kind in RUNTIMES[name].consumes.get("int8", ())]


def serving_runner(path: Path, precision: str, runtime: str, serving: Serving, spec: tuple[int, int],
                   work_dir: Path, batch_sizes: tuple[int, ...]) -> Runner:
    """A runtime's runner for one file with the serving session settings (``spec``: input size and channels)."""
    settings = Settings(serving.threads, work_dir, batch_sizes, openvino_hint=serving.openvino_hint)
    return RUNTIMES[runtime].build(Session(path, precision, None, spec[0], spec[1], settings))


def check_on_runtime(path: Path, runtime: str, serving: Serving, spec: tuple[int, int], loader: Loader,
                     fp32: tuple[torch.Tensor, torch.Tensor], cfg: ExportParams, work_dir: Path) -> dict:
    """The INT8 gate of ``path`` on one runtime at each batch size: ``batch_sizes`` it passes at, and per batch
    size (a string key, as JSON writes it) its top-1, agreement and reason; or ``unchecked`` and why."""
    why_not = RUNTIMES[runtime].unavailable()
    if why_not is not None:
        return {"unchecked": why_not}
    predict = serving_runner(path, "int8", runtime, serving, spec, work_dir, serving.batch_sizes).predict
    checked = {}
    for batch in serving.batch_sizes:
        logits = torch.cat([predict(images) for images, _ in rebatched(loader, batch)])
        gate = int8_gate(fp32[0], logits, fp32[1], max_drop=cfg.int8_max_drop, min_agreement=cfg.int8_min_agreement)
        checked[str(batch)] = {name: gate[name] for name in ("top1", "agreement", "reason")}
    return {"batch_sizes": [b for b in serving.batch_sizes if checked[str(b)]["reason"] is None], "checked": checked}


def gate_on_runtimes(folder: Path, entries: dict[str, dict], serving: Serving, spec: tuple[int, int],
                     loader: Loader, fp32: tuple[torch.Tensor, torch.Tensor], cfg: ExportParams) -> None:
    """Add ``runtimes`` to every passed INT8 entry that a deploy runtime consumes; reject (and delete) a file
    that every consumer ran and refused at every batch size."""
    loader = rebatched(loader, max(serving.batch_sizes))  # read the test split once, not per runtime and batch
    for kind, entry in entries.items():
        users = consumers(kind, serving.runtimes)
        if entry["status"] != "ok" or not users:
            continue
        path, done = folder / entry["file"], entry.get("runtimes", {})  # the form search gated its own runtime
        with tempfile.TemporaryDirectory(dir=folder) as work:  # a runtime's compiled files are not shipped
            checked = {rt: check_on_runtime(path, rt, serving, spec, loader, fp32, cfg, Path(work))
                       for rt in users if rt not in done}
        entry["runtimes"] = {**done, **checked}
        said = runtime_refusals(entry)
        refusals = [f"{rt} {said[rt]}" for rt, result in entry["runtimes"].items()
                    if "unchecked" not in result and not result["batch_sizes"]]
        if len(refusals) == len(users):
            path.unlink()
            entry.update(status="rejected", file=None, size_bytes=None,
                         reason="INT8 refused on every runtime that consumes it: " + "; ".join(refusals))
