"""Rows measured on a target by an export bundle's ``run.py --bench --accuracy DIR --out FILE``, merged into the
bench's rows so that picks and deploy lines are made per (target, runtime).

A target row keeps the runner's figures and is labelled ``RUNTIME@TARGET`` (``onnxruntime@pi5``; the target is
the results file's name), so every reader of ``bench.json`` (table, CSV, Pareto plot, summary, picks) names the
machine without a new column. Its accuracy is the runner's top-1 on the image folder it was given, checked like
the bench's runtime check: against the same model, precision and artefact measured here on the same runtime (the
same file: it must answer alike), else against that result's reference runtime. A target row more than
``bench.runtime_max_drop`` points below is ``failed`` with the comparison, and a failed row is never picked.

The file is read bounded (size and nesting) and every time must be a finite non-negative number: a results file
travels between machines and is not trusted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import bounded, read_regular
from ..runtimes import RUNTIMES
from .bench_accuracy import reference_of
from .rows import BenchRow

MAX_RESULTS_BYTES = 16 * 2**20  # a few hundred rows with their system info are ~100 KB
MAX_DEPTH = 8  # results -> rows -> row -> value is 4 levels; system info and predictions add 2
TIME_KEYS = ("p50_ms", "p50_round_min_ms", "p50_round_max_ms", "p90_ms", "p99_ms", "mean_ms")


def _depth(value: object) -> int:
    """Nesting depth of a JSON value, walked without recursion (a hostile file must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def bounded_json(path: Path, what: str) -> object:
    """A JSON file of at most ``MAX_RESULTS_BYTES`` and ``MAX_DEPTH`` levels, else one line."""
    data = read_regular(path, MAX_RESULTS_BYTES, what)
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CakdError(f"{what} {path} is not valid JSON: {bounded(str(err))}") from None
    except RecursionError:
        raise CakdError(f"{what} {path} is nested too deeply") from None
    if _depth(value) > MAX_DEPTH:
        raise CakdError(f"{what} {path} is nested more than {MAX_DEPTH} levels deep: not what run.py writes")
    return value


def checked_row(raw: object, path: Path) -> BenchRow:
    """One row of a runner's results: a model name, its times finite and non-negative, its p50 present."""
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
        raise CakdError(f"{path}: a row is not a BenchRow object with a model name")
    for key in TIME_KEYS:
        value = raw.get(key)
        if value is None and key != "p50_ms":
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise CakdError(f"{path}: {bounded(raw['model'], 60)}'s {key} is {bounded(repr(value), 40)}, not a "
                            "finite non-negative time")
    batch, names = raw.get("batch_size"), [raw.get(k) for k in ("runtime", "precision", "artefact", "status")]
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1 or not all(isinstance(n, str) for n in names):
        raise CakdError(f"{path}: a row of {bounded(raw['model'], 60)} is malformed (runtime, precision, "
                        "artefact and status must be names, batch_size a positive integer)")
    return BenchRow.from_dict(raw)


def read_target(path: Path) -> tuple[str, dict, list[BenchRow], dict[str, float]]:
    """(target name, its system info, its rows, top-1 per artefact kind where scored) from one results file."""
    results = bounded_json(path, "target results")
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list) or not results["rows"]:
        raise CakdError(f"{path} is not the output of an export bundle's `run.py --bench --out FILE`")
    rows = [checked_row(raw, path) for raw in results["rows"]]
    accuracy = results.get("accuracy") if isinstance(results.get("accuracy"), dict) else {}
    top1 = {}
    for kind, scored in accuracy.items():
        value = scored.get("top1") if isinstance(scored, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
            raise CakdError(f"{path}: the top-1 of {bounded(kind, 40)} is {bounded(repr(value), 40)}, not a "
                            "percentage")
        top1[kind] = float(value)
    system = results.get("system") if isinstance(results.get("system"), dict) else {}
    return path.stem, system, rows, top1


def merge_target(local: list[BenchRow], name: str, rows: list[BenchRow], scores: dict[str, float],
                 max_drop: float) -> list[BenchRow]:
    """The target's rows labelled ``RUNTIME@name``, sized from the local rows of the same model, their accuracy
    checked against the local result of the same file on the same runtime (or its reference)."""
    measured = {(r.model, r.runtime, r.precision, r.artefact): r for r in local if r.top1 is not None}
    labels = {r.model for r in local}
    merged = []
    for row in rows:
        if row.runtime not in RUNTIMES:
            raise CakdError(f"target {name}: runtime '{bounded(row.runtime, 40)}' is not one cakd knows")
        if row.model not in labels:
            raise CakdError(f"target {name}: model '{bounded(row.model, 60)}' was not benchmarked here (models: "
                            f"{', '.join(sorted(labels))}); give its export folder labelled so")
        key = (row.model, row.runtime, row.precision, row.artefact)
        same = next((r for r in local if r.model == row.model and r.params_m is not None), None)
        if same is not None:
            row.params_m, row.gflops = same.params_m, same.gflops
        top1 = row.top1 = scores.get(row.artefact)
        row.status, row.reason = "ok", None
        ref = measured.get(key) or measured.get(reference_of(key, set(measured)))
        if top1 is not None and ref is not None and ref.top1 - top1 > max_drop:
            row.status, row.reason = "failed", (f"on target {name}: top-1 {top1:.2f}% vs {ref.top1:.2f}% on "
                                                f"{ref.runtime} {ref.precision} here (drop {ref.top1 - top1:.2f} "
                                                f"points, allowed {max_drop:g})")
        row.runtime, row.source = f"{row.runtime}@{name}", f"target {name}: {row.source}"
        merged.append(row)
    return merged
