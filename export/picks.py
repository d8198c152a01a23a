"""What to deploy on each runtime: one rule, the same for every dataset, applied to the bench's rows at batch 1.

With a latency budget (``bench.budget_ms``): the most accurate artefact whose p50 fits it (then the faster).
Without one: the fastest artefact within ``bench.pick_tolerance`` top-1 points of the most accurate on that
runtime (a difference the test set cannot resolve buys no latency). Only rows that were timed, scored and
passed their accuracy check take part; when nothing qualifies the pick says why.
"""

from __future__ import annotations

from cakd.export.rows import BenchRow, Pick


def reference_batch(rows: list[BenchRow]) -> int:
    """Batch 1 when measured (the latency a single request sees), else the smallest batch."""
    return min(row.batch_size for row in rows)


def pick_for(rows: list[BenchRow], runtime: str, budget_ms: float | None, tolerance: float) -> Pick:
    batch = reference_batch(rows)
    pick = Pick(runtime, batch, budget_ms=budget_ms)
    mine = [r for r in rows if r.runtime == runtime and r.batch_size == batch]
    usable = [r for r in mine if r.measured]
    if not usable:
        why = {r.reason for r in mine if r.reason} or {"accuracy unknown: give --data to rank models"}
        pick.reason = "no usable result: " + "; ".join(sorted(why))
        return pick
    if budget_ms is not None:
        usable = [r for r in usable if r.p50_ms <= budget_ms]
        if not usable:
            pick.reason = f"nothing runs within {budget_ms:g} ms (p50, batch {batch})"
            return pick
        best = max(usable, key=lambda r: (r.top1, -r.p50_ms))
        pick.rule = f"most accurate within {budget_ms:g} ms"
    else:
        top = max(r.top1 for r in usable)
        best = min((r for r in usable if r.top1 >= top - tolerance), key=lambda r: r.p50_ms)
        pick.rule = f"fastest within {tolerance:g} top-1 points of the most accurate"
    pick.model, pick.precision, pick.artefact = best.model, best.precision, best.artefact
    pick.top1, pick.p50_ms = best.top1, best.p50_ms
    return pick


def picks(rows: list[BenchRow], runtimes: list[str], budget_ms: float | None, tolerance: float) -> list[Pick]:
    return [pick_for(rows, runtime, budget_ms, tolerance) for runtime in runtimes]
