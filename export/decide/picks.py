"""What to deploy on each runtime: one rule, the same for every dataset, applied to the bench's rows at batch 1.

A latency budget, when set, bounds the candidates first:
- ``bench.budget_ms``: an artefact's p50 must fit it;
- ``bench.min_speedup``: an artefact must run at least that many times faster than the teacher's fastest
  artefact on the same runtime (the model labelled ``teacher``, timed in the same run) - a budget relative to
  the teacher, which holds on any machine and dataset, for the question distillation asks: is a student worth
  deploying instead of the teacher?
With a budget the pick is the most accurate artefact within it (then the faster). Without one it is the fastest
artefact within ``bench.pick_tolerance`` top-1 points of the most accurate on that runtime (a difference the
test set cannot resolve buys no latency). Only rows that were timed, scored and passed their accuracy check
take part, and no INT8 row slower than its FP32 (``int8_pays``); when nothing qualifies the pick says why.
"""

from __future__ import annotations

from ..measure.rows import BenchRow, Pick
from .int8_pays import eligible

TEACHER = "teacher"  # the label the pipeline gives the teacher's export (a reserved student name)


def reference_batch(rows: list[BenchRow]) -> int:
    """Batch 1 when measured (the latency a single request sees), else the smallest batch."""
    return min(row.batch_size for row in rows)


def _within_budget(usable: list[BenchRow], budget_ms: float | None, min_speedup: float | None,
                   batch: int) -> tuple[list[BenchRow], str | None, str]:
    """The rows the budgets allow, why none did (or None), and the budget in words."""
    limits, words = [], []
    if budget_ms is not None:
        limits.append(budget_ms)
        words.append(f"{budget_ms:g} ms")
    if min_speedup is not None:
        teacher = [r.p50_ms for r in usable if r.model == TEACHER]
        if not teacher:
            return [], f"min_speedup {min_speedup:g} needs the teacher timed on this runtime (label it teacher)", ""
        limits.append(min(teacher) / min_speedup)
        words.append(f"{min_speedup:g}x the teacher's fastest ({min(teacher):.2f} ms)")
    budget = " and ".join(words)
    fits = [r for r in usable if r.p50_ms <= min(limits)]
    why = None if fits else f"nothing runs within {budget} (p50, batch {batch})"
    return fits, why, budget


def pick_for(rows: list[BenchRow], runtime: str, budget_ms: float | None, tolerance: float,
             min_speedup: float | None = None, keep_slower_int8: bool = False) -> Pick:
    batch = reference_batch(rows)
    pick = Pick(runtime, batch, budget_ms=budget_ms)
    mine = [r for r in rows if r.runtime == runtime and r.batch_size == batch]
    usable = eligible(mine, keep_slower_int8)
    if not usable:
        why = {r.reason for r in mine if r.reason} or {"accuracy unknown: give --data to rank models"}
        pick.reason = "no usable result: " + "; ".join(sorted(why))
        return pick
    if budget_ms is not None or min_speedup is not None:
        usable, pick.reason, budget = _within_budget(usable, budget_ms, min_speedup, batch)
        if not usable:
            return pick
        best = max(usable, key=lambda r: (r.top1, -r.p50_ms))
        pick.rule = f"most accurate within {budget}"
    else:
        top = max(r.top1 for r in usable)
        best = min((r for r in usable if r.top1 >= top - tolerance), key=lambda r: r.p50_ms)
        pick.rule = f"fastest within {tolerance:g} top-1 points of the most accurate"
    pick.model, pick.precision, pick.artefact = best.model, best.precision, best.artefact
    pick.top1, pick.p50_ms = best.top1, best.p50_ms
    return pick


def picks(rows: list[BenchRow], runtimes: list[str], budget_ms: float | None, tolerance: float,
          min_speedup: float | None = None, keep_slower_int8: bool = False) -> list[Pick]:
    return [pick_for(rows, runtime, budget_ms, tolerance, min_speedup, keep_slower_int8) for runtime in runtimes]
