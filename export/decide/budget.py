"""The latency budget, one rule for the bench's deploy pick and the shortlist.

A budget has up to two conditions, either may be off:
- ``budget_ms``: the p50 must be at most this many milliseconds;
- ``min_speedup``: the p50 must be at least this many times below the teacher's, where "the teacher's" is the
  fastest p50 the teacher (the model labelled ``TEACHER``) reached in the same measurement, on the same runtime
  at the same batch size. The bench times the teacher's every exported artefact, so that is its fastest
  artefact; the shortlist times the untrained teacher in the shortlist's precision only, so it is that one.
  A budget relative to the teacher holds on any machine and dataset, for the question distillation asks:
  is a student worth deploying instead of the teacher?
"""

from __future__ import annotations

from ...pipeline.files.layout import TEACHER

__all__ = ["TEACHER", "limit_ms", "over_budget", "words"]


def limit_ms(budget_ms: float | None, min_speedup: float | None, teacher_ms: float | None) -> float | None:
    """The slowest p50 the budget allows (None: no budget). ``teacher_ms`` is needed only with ``min_speedup``."""
    limits = [budget_ms] if budget_ms is not None else []
    if min_speedup is not None:
        if teacher_ms is None:
            raise ValueError("min_speedup needs the teacher's p50")
        limits.append(teacher_ms / min_speedup)
    return min(limits) if limits else None


def over_budget(p50_ms: float, budget_ms: float | None, min_speedup: float | None, teacher_ms: float | None
                ) -> str | None:
    """Why ``p50_ms`` is over the budget, each broken condition with its measured numbers; None when within."""
    why = []
    if budget_ms is not None and p50_ms > limit_ms(budget_ms, None, None):
        why.append(f"p50 {p50_ms:.3f} ms > budget {budget_ms:g} ms")
    if min_speedup is not None and p50_ms > limit_ms(None, min_speedup, teacher_ms):
        why.append(f"{teacher_ms / p50_ms:.2f}x the teacher's speed < {min_speedup:g}x")
    return "; ".join(why) or None


def words(budget_ms: float | None, min_speedup: float | None, teacher_ms: float | None) -> str:
    """The budget as a pick's rule states it."""
    said = [f"{budget_ms:g} ms"] if budget_ms is not None else []
    if min_speedup is not None:
        said.append(f"{min_speedup:g}x the teacher's fastest ({teacher_ms:.2f} ms)")
    return " and ".join(said)
