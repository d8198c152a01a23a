"""Candidate students timed before training: built untrained, exported as ``cakd export`` exports, timed with the
bench's own harness on the target runtime, the teacher in the same rounds.

An untrained network of an architecture runs the same graph, on the same shapes, as the trained one, so its
FP32 latency is the trained student's: it can be measured rather than predicted. The file is made by
``cakd export``'s own steps and INT8 recipe (``make_untrained``), INT8 calibrated on a few training images for
latency only (no accuracy gate: an untrained network has no accuracy to keep; the trained student's INT8 faces
the gate in ``cakd export``); the artefact table says which kinds an untrained network may have. Timing is
``measure``: interleaved rounds over every candidate and the teacher, so a burst of load falls on all alike,
and the round spread says how far a number can be trusted.

Ranking (``rank``): a candidate is within budget when its p50 at the shortlist's batch size is within the
budget (``budget_ms``, ``min_speedup`` over the untrained teacher: ``budget.py``'s rule, the bench's too).
Within budget, one per family first (each family's candidate with the most GFLOPs, then parameters; families in
the order of that candidate's GFLOPs, descending), then the other candidates by GFLOPs (then parameters),
descending: more capacity learns more within the same latency, and one per family keeps the top K from being
K widths of one architecture. The budget line has the teacher's round spread as its uncertainty (``noise``): a
candidate whose round p50s straddle it is borderline and ranks after every clear pass. Candidates over budget or
that failed to export are listed with the reason, never dropped.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import torch

from ...pipeline.errors import CakdError
from ...pipeline.models import ModelSpec, StagedModel, create_model, family_of
from ...pipeline.reporting import profiling
from ...pipeline.settings.params import ExportParams
from ..artefacts import ARTEFACTS
from ..make.artefacts import make_untrained
from ..measure.bench import Timing, count_gflops, failure_line, measure
from ..measure.rows import BenchRow
from ..onnx_inspect import int8_activations
from ..runtimes import RUNTIMES, Artefact, Precision, Runner, Session, Settings
from .budget import TEACHER, over_budget
from .noise import budget_line, standing
from .train_cost import over_train_budget

RULE = ("within budget: p50 <= budget_ms and speed-up over the teacher >= min_speedup; then one per family "
        "(its most GFLOPs), families by that candidate's GFLOPs, then the rest by GFLOPs, descending; candidates "
        "whose round p50s straddle the budget line (the teacher's round spread included) ranked after every clear "
        "pass, in the same order")


@dataclass(frozen=True)
class Target:
    """Where the students will run: what the budget is about and what is timed."""

    runtime: str
    precision: Precision
    batch_size: int


@dataclass
class Profiled:
    """One untrained network, its size, its timed artefact and the row the bench harness measured."""

    name: str
    spec: ModelSpec
    family: str
    net: StagedModel
    params: int
    gflops: float
    path: Path | None = None
    error: str | None = None
    row: BenchRow | None = None
    train_min: float | None = None  # the default recipe's estimated training time here (``train_cost``)


def target_artefact(target: Target) -> Artefact:
    """The artefact the runtime consumes in that precision that can be made without training; one line when the
    runtime cannot run here or runs no such artefact."""
    entry = RUNTIMES[target.runtime]
    why_not = entry.unavailable()
    if why_not:
        raise CakdError(f"shortlist.runtime {target.runtime} cannot run here: {why_not}")
    kinds = [kind for kind in entry.consumes.get(target.precision, ()) if ARTEFACTS[kind].untrained]
    if not kinds:
        runs = ", ".join(sorted(entry.consumes)) or "nothing"
        raise CakdError(f"shortlist: runtime {target.runtime} has no {target.precision} artefact to time "
                        f"(it runs {runs}); set shortlist.precision")
    return kinds[0]


def build(name: str, spec: ModelSpec) -> Profiled:
    """The untrained network with its parameters and FLOPs; a name or kwargs timm refuses is one line."""
    try:
        net = create_model(spec)  # whatever timm raises for the kwargs comes as one CakdError line
    except CakdError as err:
        raise CakdError(f"candidate '{name}': {err}") from None
    return Profiled(name, spec, family_of(spec.name), net, sum(p.numel() for p in net.parameters()),
                    count_gflops(net, spec.img_size, spec.in_chans))


def export_job(spec: dict, artefact: Artefact, folder: str, cfg: dict, images: torch.Tensor
               ) -> tuple[Path | None, str | None]:
    """One export in a worker process: the network rebuilt from its spec (other random weights, the same graph
    and latency), its artefact made; (path, None) or (None, the reason it failed)."""
    torch.set_num_threads(1)  # the workers share the cores
    net = create_model(ModelSpec.from_dict(spec))
    try:
        return make_untrained(net, artefact, Path(folder), ExportParams.model_validate(cfg), images), None
    except Exception as err:  # exporters raise many types; the candidate is listed as failed with the reason
        return None, failure_line(err)


def export_all(items: list[Profiled], artefact: Artefact, work: Path, cfg: ExportParams, images: torch.Tensor,
               jobs: int, progress: Callable[[str], None]) -> None:
    """Make every item's artefact, ``jobs`` exports at a time (the exporter is single-threaded Python); fills
    ``path`` or ``error``."""
    if artefact == "checkpoint":  # PyTorch runs the network itself
        for item in items:
            item.path = work
        return
    if jobs <= 1:
        for i, item in enumerate(items, 1):
            progress(f"[{i}/{len(items)}] {item.name}: {artefact} of untrained {item.spec.name}")
            try:
                item.path = make_untrained(item.net, artefact, work / item.name, cfg, images)
            except Exception as err:  # listed as failed, with the reason
                item.error = failure_line(err)
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(export_job, item.spec.to_dict(), artefact, str(work / item.name),
                               cfg.model_dump(mode="json"), images): item for item in items}
        for i, future in enumerate(as_completed(futures), 1):
            item = futures[future]
            try:
                item.path, item.error = future.result()
            except BrokenProcessPool as err:
                raise CakdError(f"an export worker process died ({err}); set shortlist.jobs: 1") from None
            progress(f"[{i}/{len(items)}] {item.name}: {artefact} of untrained {item.spec.name}"
                     + (f" failed: {item.error}" if item.error else ""))


def _row(item: Profiled, target: Target, artefact: Artefact, stats: dict | None) -> BenchRow:
    row = BenchRow(model=item.name, runtime=target.runtime, precision=target.precision, artefact=artefact,
                   batch_size=target.batch_size, status="ok" if stats else "failed", reason=item.error,
                   params_m=item.params / 1e6, gflops=item.gflops, source=f"untrained {item.spec.name}")
    if item.path is not None and item.path.is_file():
        row.file_mb = item.path.stat().st_size / 2**20
        row.activations = int8_activations(item.path) if target.precision == "int8" else None
    for key, value in (stats or {}).items():
        setattr(row, key, value)
    return row


def profile(items: list[Profiled], target: Target, timing: Timing, settings: Settings, cfg: ExportParams,
            images: torch.Tensor, jobs: int = 1, progress: Callable[[str], None] = lambda _: None) -> list[Profiled]:
    """Export and time every item (the teacher first) at ``target``; fills each item's ``row``. The teacher must
    export: every speed-up is measured against it."""
    artefact = target_artefact(target)
    export_all(items, artefact, settings.work_dir, cfg, images, jobs, progress)  # its exporter records its phases
    runners: dict[str, Runner] = {}
    for item in items:
        if item.error is None:
            try:
                with profiling.phase("runtime-load"):
                    runners[item.name] = RUNTIMES[target.runtime].build(Session(
                        item.path, target.precision, item.net, item.spec.img_size, item.spec.in_chans, settings))
            except Exception as err:  # a runtime that cannot load the file: the candidate's failure
                item.error = failure_line(err)
        if item.error is not None and item.name == TEACHER:
            raise CakdError(f"the teacher ({item.spec.name}) cannot be timed on {target.runtime}: {item.error}")
    names = list(runners)
    progress(f"timing {len(names)} models on {target.runtime} {target.precision}, batch {target.batch_size}: "
             f"{timing.rounds} interleaved rounds of {timing.runs} calls")
    with profiling.phase("timing"):
        stats = measure([runners[n] for n in names], timing)
    for item in items:
        found = item.name in runners
        item.row = _row(item, target, artefact, stats[names.index(item.name), target.batch_size] if found else None)
    return items


@dataclass
class Verdict:
    """A candidate's place in the shortlist: within budget or why not, its speed-up and rank."""

    name: str
    family: str
    model: str
    kwargs: dict
    row: BenchRow
    speedup: float | None
    within_budget: bool
    reason: str | None
    borderline: bool = False  # the budget lies inside the candidate's round spread: rerun before trusting it
    rank: int | None = None


def judge(item: Profiled, teacher: BenchRow, budget_ms: float | None, min_speedup: float | None,
          train_budget_min: float | None = None) -> Verdict:
    """Within budget, or the reason why not (measured numbers in the reason); a candidate that would not train
    within ``train_budget_min`` is out whatever its latency."""
    row = item.row
    verdict = Verdict(item.name, item.family, item.spec.name, dict(item.spec.kwargs), row, None, False, row.reason)
    if row.p50_ms is None:
        verdict.reason = f"failed: {row.reason}"
        return verdict
    verdict.speedup = teacher.p50_ms / row.p50_ms
    why = [over_budget(row.p50_ms, budget_ms, min_speedup, teacher.p50_ms),
           training := over_train_budget(item.train_min, train_budget_min)]
    verdict.reason = "; ".join(w for w in why if w) or None
    verdict.within_budget = verdict.reason is None
    verdict.borderline = not training and standing(row, budget_line(budget_ms, teacher, min_speedup)) == "borderline"
    return verdict


def _tier(verdicts: list[Verdict]) -> list[Verdict]:
    """One tier in the module's order: one per family (its most capacity), then the rest by capacity."""
    fits = sorted(verdicts, key=lambda v: (-v.row.gflops, -(v.row.params_m or 0), v.name))
    leaders = {}
    for v in fits:
        leaders.setdefault(v.family, v)  # fits is sorted by capacity: the first of a family is its largest
    first = {id(v) for v in leaders.values()}
    return list(leaders.values()) + [v for v in fits if id(v) not in first]


def rank(verdicts: list[Verdict]) -> list[Verdict]:
    """Number the candidates by the module's rule, the clear passes first and the borderline ones (the budget line
    inside their round spread, either side of it: ``noise``) after them; returns them in rank order."""
    clear = [v for v in verdicts if v.within_budget and not v.borderline]
    ordered = _tier(clear) + _tier([v for v in verdicts if v.borderline])
    for position, v in enumerate(ordered, 1):
        v.rank = position
    return ordered
