"""Latency and accuracy of exported models on every runtime of the runtime table.

The bench only reads artefacts: each model is an export folder (``read_export``), made by ``cakd export``'s
function and gated there. For each (model, runtime, precision, artefact the runtime consumes) the test split
is run through the artefact on that runtime at each batch size (top-1, max |logit diff| vs PyTorch FP32) and
checked against its reference runtime at the same batch size (``bench_accuracy``); latency is then measured in
interleaved rounds, so a change in machine load hits every model and runtime alike. Nothing requested is dropped
silently: a runtime that cannot run here, an artefact that was not exported, an INT8 file the gate rejected or
refused on this runtime at this batch size, or a file a runtime fails to load or run, is a row with its
status and reason, and the bench goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import bounded
from ...pipeline.models import load_model
from ...pipeline.reporting import profiling
from ..bundle.run import percentiles as latency_stats  # the target's runner: one set of statistics
from ..exported import Exported
from ..onnx_inspect import int8_activations
from ..runtimes import RUNTIMES, Artefact, Precision, Runner, Session, Settings
from .bench_accuracy import Accuracy, Key, accuracy, check, max_abs_diff, rebatched
from .rows import BenchRow

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class BenchModel:
    """One model to time: its label in every row, what the user gave, and its export folder."""

    label: str
    exported: Exported
    given: tuple[str, ...]


@dataclass(frozen=True)
class Timing:
    batch_sizes: tuple[int, ...]
    warmup: int
    runs: int  # timed calls per round
    rounds: int  # interleaved rounds


@dataclass
class Loaded:
    """A model with its PyTorch network (when its export holds the checkpoint) and size."""

    model: BenchModel
    net: nn.Module | None
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

    @property
    def key(self) -> Key:
        return self.loaded.model.label, self.runtime, self.precision, self.artefact


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


def load(model: BenchModel, img_size: int | None, num_classes: int | None) -> Loaded:
    """The model's network and size; a model that does not fit the dataset is refused in one line (a 32 px
    model is not measured on 16 px images, nor a 100-class one scored on 10 classes)."""
    exported = model.exported
    if img_size is not None and exported.img_size != img_size:
        raise CakdError(f"{model.label} takes {exported.img_size} px images but the dataset gives {img_size} px "
                        "(data.img_size); benchmark it without --data or on its own data")
    if num_classes is not None and exported.num_classes != num_classes:
        raise CakdError(f"{model.label} predicts {exported.num_classes} classes but the dataset has {num_classes}; "
                        "benchmark it without --data or on its own data")
    checkpoint = exported.files.get("checkpoint")
    if checkpoint is None:
        return Loaded(model, None)
    net = load_model(checkpoint)
    return Loaded(model, net, sum(p.numel() for p in net.parameters()),
                  count_gflops(net, exported.img_size, exported.in_chans))


def plan(models: list[Loaded], runtimes: list[str], precisions: list[Precision]
         ) -> tuple[list[Candidate], list[tuple[Loaded, str, Precision, Artefact, str, str]]]:
    """Candidates to run, and (model, runtime, precision, artefact, status, reason) for each that cannot."""
    candidates, skipped = [], []
    for runtime in runtimes:
        entry = RUNTIMES[runtime]
        why_not = entry.unavailable()
        for loaded in models:
            exported = loaded.model.exported
            for precision in (p for p in precisions if p in entry.consumes):
                for artefact in entry.consumes[precision]:
                    if why_not:
                        skipped.append((loaded, runtime, precision, artefact, "unavailable", why_not))
                    elif artefact in exported.files:
                        candidates.append(Candidate(loaded, runtime, precision, artefact, exported.files[artefact]))
                    elif artefact in exported.missing:
                        skipped.append((loaded, runtime, precision, artefact, *exported.missing[artefact]))
                    else:
                        skipped.append((loaded, runtime, precision, artefact, "unavailable",
                                        f"not exported ({artefact}): cakd export makes it when deploy.runtimes "
                                        f"has {runtime} and deploy.precisions has {precision}"))
    return candidates, skipped


def failure_line(err: Exception) -> str:
    """A runtime's or exporter's exception as a row's one-line reason (they raise many types of their own)."""
    if isinstance(err, CakdError):
        return str(err)
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def build_runners(candidates: list[Candidate], settings: Settings, batch_sizes: tuple[int, ...]) -> dict[Key, str]:
    """Each candidate's runner, tried once at every batch size before anything is timed; a runtime that cannot
    load or run a file fails that candidate alone (the reason per key), as Ultralytics' benchmarks do."""
    failed = {}
    for cand in candidates:
        exported = cand.loaded.model.exported
        try:
            cand.runner = RUNTIMES[cand.runtime].build(Session(cand.path, cand.precision, cand.loaded.net,
                                                               exported.img_size, exported.in_chans, settings))
            for batch in batch_sizes:
                cand.runner.timed_call(batch)()
        except Exception as err:  # whatever the runtime raises becomes the row's reason; the bench goes on
            failed[cand.key] = failure_line(err)
    return failed


def time_call(call: Callable[[], None], runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def measure(runners: list[Runner], timing: Timing) -> dict[tuple[int, int], dict]:
    """Latency stats per (runner index, batch size). Every round times each (runner, batch) once, starting
    one runner further along than the last round, so slow and quiet phases of a shared machine fall on all."""
    calls = {(i, b): runner.timed_call(b) for i, runner in enumerate(runners) for b in timing.batch_sizes}
    for call in calls.values():
        time_call(call, timing.warmup)
    keys = list(calls)
    times: dict[tuple[int, int], list[list[float]]] = {k: [] for k in keys}
    for r in range(timing.rounds):
        shift = (r * len(timing.batch_sizes)) % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(time_call(calls[key], timing.runs))
    return {key: latency_stats(t, key[1]) for key, t in times.items()}


def accuracies(candidates: list[Candidate], loader: Loader, failed: dict[Key, str],
               references: dict[Key, Accuracy] | None = None) -> dict[Key, Accuracy]:
    """Test-set accuracy of every candidate, plus PyTorch FP32 of every model with a checkpoint (the
    reference logits) even when torch itself is not timed; such a reference is no row, so one batch size
    serves every other: it is taken from ``references`` when scored already, and kept there. A candidate whose
    runner fails here goes into ``failed`` with its reason."""
    references = {} if references is None else references
    results = {}
    for cand in (c for c in candidates if c.key not in failed):
        try:
            results[cand.key] = accuracy(cand.runner.predict, loader)
        except Exception as err:  # as in build_runners: the row says why, the bench goes on
            failed[cand.key] = failure_line(err)
    for loaded in {id(c.loaded): c.loaded for c in candidates}.values():
        key = (loaded.model.label, "torch", "fp32", "checkpoint")
        if key not in results and loaded.net is not None:
            if key not in references:
                net = loaded.net.eval()
                with torch.inference_mode():
                    references[key] = accuracy(lambda x, n=net: n(x), loader)
            results[key] = references[key]
    return results


def scored_at(candidates: list[Candidate], loader: Loader, batch: int, max_drop: float,
              references: dict[Key, Accuracy], failed: dict[Key, str]
              ) -> tuple[dict[Key, Accuracy], dict[Key, tuple[str, str | None]]]:
    """Every candidate's accuracy at one batch size, each checked against its reference at the same batch size:
    a row's top-1 is the one its batch size gives."""
    results = accuracies(candidates, rebatched(loader, batch), failed, references)
    return results, check(results, max_drop)


def export_refusal(cand: Candidate, batch: int) -> tuple[str, str] | None:
    """("rejected", why) when the export's gate refused this INT8 file on this runtime at this batch size."""
    why = cand.loaded.model.exported.refused(cand.artefact, cand.runtime, batch)
    return None if why is None else ("rejected", f"refused at export on {cand.runtime} at batch {batch}: {why}")


def _row(loaded: Loaded, runtime: str, precision: str, artefact: str, batch: int, status: str,
         reason: str | None, path: Path | None = None) -> BenchRow:
    return BenchRow(model=loaded.model.label, runtime=runtime, precision=precision, artefact=artefact,
                    batch_size=batch, status=status, reason=reason,
                    params_m=None if loaded.params is None else loaded.params / 1e6, gflops=loaded.gflops,
                    file_mb=path.stat().st_size / 2**20 if path is not None else None,
                    activations=int8_activations(path) if path is not None and precision == "int8" else None,
                    source=", ".join(loaded.model.given))


def run_bench(models: list[BenchModel], settings: Settings, *, runtimes: list[str], precisions: list[Precision],
              timing: Timing, loader: Loader | None = None, img_size: int | None = None,
              num_classes: int | None = None, max_drop: float = 1.0) -> list[BenchRow]:
    """Load, plan, check accuracy, time: one row per (model, runtime, precision, artefact, batch size),
    measured ones first; a runner that cannot be built or run is a failed row with its reason."""
    loaded = [load(m, img_size, num_classes) for m in models]
    candidates, skipped = plan(loaded, runtimes, precisions)
    if not candidates:
        reasons = "; ".join(sorted({f"{s[1]}: {s[5]}" for s in skipped}))
        raise CakdError(f"nothing to benchmark with runtimes {runtimes} ({reasons or 'none'})")
    with profiling.phase("runtime-load"):
        failed = build_runners(candidates, settings, timing.batch_sizes)
    with profiling.phase("bench-accuracy"):
        references: dict[Key, Accuracy] = {}  # untimed PyTorch references: scored once, at the largest batch
        scored = {} if loader is None else {b: scored_at(candidates, loader, b, max_drop, references, failed)
                                            for b in sorted(timing.batch_sizes, reverse=True)}
    working = [c for c in candidates if c.key not in failed]
    if not working:  # a bench with nothing that runs has no table to show: say why, once
        reasons = "; ".join(sorted({f"{c.loaded.model.label} on {c.runtime}: {failed[c.key]}" for c in candidates}))
        raise CakdError(f"nothing could be benchmarked: {bounded(reasons, 600)}")
    with profiling.phase("timing"):
        latency = measure([c.runner for c in working], timing)
    rows = []
    for i, cand in enumerate(working):
        for batch in timing.batch_sizes:
            results, verdict = scored.get(batch, ({}, {}))
            status, reason = export_refusal(cand, batch) or verdict.get(cand.key, ("ok", None))
            row = _row(cand.loaded, cand.runtime, cand.precision, cand.artefact, batch, status, reason, cand.path)
            for name, value in latency[i, batch].items():
                setattr(row, name, value)
            if cand.key in results:
                row.top1, row.max_abs_diff = results[cand.key].top1, max_abs_diff(results, cand.key)
            rows.append(row)
    for cand in (c for c in candidates if c.key in failed):  # not built or run: no numbers (nor file read), the reason
        rows += [_row(cand.loaded, cand.runtime, cand.precision, cand.artefact, b, "failed", failed[cand.key])
                 for b in timing.batch_sizes]
    for loaded_model, runtime, precision, artefact, status, reason in skipped:
        rows += [_row(loaded_model, runtime, precision, artefact, b, status, reason) for b in timing.batch_sizes]
    return rows
