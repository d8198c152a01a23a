"""What to deploy on each runtime: one rule, the same for every dataset, applied to the bench's rows at batch 1.

A latency budget (``bench.budget_ms``, ``bench.min_speedup``: the rule is ``budget.py``'s, the shortlist's too),
when set, bounds the candidates first. With a budget the pick is the most accurate artefact within it (then the
faster). Without one it is the fastest artefact within ``bench.pick_tolerance`` top-1 points of the most accurate
on that runtime (a difference the test set cannot resolve buys no latency). Only rows that were timed, scored
and passed their accuracy check take part, and no INT8 row slower than its FP32 (``int8_pays``); when nothing
qualifies the pick says why. Within a budget, an artefact whose round spread straddles the line is taken only
when none passes it clearly (``noise.py``).
"""

from __future__ import annotations

from ..measure.rows import BenchRow, Pick
from .budget import TEACHER, limit_ms, words
from .int8_pays import eligible
from .noise import budget_line, standing


def reference_batch(rows: list[BenchRow]) -> int:
    """Batch 1 when measured (the latency a single request sees), else the smallest batch."""
    return min(row.batch_size for row in rows)


def _within_budget(usable: list[BenchRow], budget_ms: float | None, min_speedup: float | None,
                   batch: int) -> tuple[list[BenchRow], str | None, str]:
    """The rows the budgets allow, why none did (or None), and the budget in words. ``noise``'s rule: rows that
    pass whichever round was right come first; only when there are none, rows whose round spread straddles the
    line (the teacher's round spread included), said so in the budget's words."""
    teacher = min((r for r in usable if r.model == TEACHER), key=lambda r: r.p50_ms, default=None)
    if min_speedup is not None and teacher is None:
        return [], f"min_speedup {min_speedup:g} needs the teacher timed on this runtime (label it {TEACHER})", ""
    teacher_ms = teacher.p50_ms if teacher is not None else None
    budget = words(budget_ms, min_speedup, teacher_ms)
    line = budget_line(budget_ms, teacher, min_speedup)
    within = [r for r in usable if r.p50_ms <= limit_ms(budget_ms, min_speedup, teacher_ms)]
    fits = [r for r in within if standing(r, line) == "clear"]
    if within and not fits:
        fits, budget = within, f"{budget} (borderline: the line {line.text} lies inside their round p50s)"
    why = None if fits else f"nothing runs within {budget} (p50, batch {batch})"
    return fits, why, budget


def pick_for(rows: list[BenchRow], runtime: str, budget_ms: float | None, tolerance: float,
             min_speedup: float | None = None, keep_slower_int8: bool = False) -> Pick:
    batch = reference_batch(rows)
    pick = Pick(runtime, batch, budget_ms=budget_ms)
    mine = [r for r in rows if r.runtime == runtime and r.batch_size == batch]
    usable = eligible(mine, keep_slower_int8)
    if not usable:
        if any(r.status == "ok" and r.top1 is None for r in mine):  # timed, not scored: the other rows' reasons
            pick.reason = "no accuracy was measured: give --data to rank models"  # (a skipped QAT) are not why
        else:
            why = {r.reason for r in mine if r.reason} or {"nothing was timed on this runtime"}
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
