"""Budget decisions that survive timing noise: the shortlist's ranking and the bench's deploy pick share this rule.

One p50 is one draw. A budget relative to the teacher (``min_speedup``) moves with the teacher's own draw: on a
shared 2-core machine the untrained teacher's round p50s spanned 0.87-1.64 ms in one run, and whether a 0.5 ms
candidate was "2x faster" followed that noise. So the budget line is an interval, not a number:

- an absolute ``budget_ms`` is exact;
- ``min_speedup`` gives ``[teacher's slowest-round p50, fastest-round p50] / min_speedup`` reversed into
  ``[low, high]``: the teacher's round p50s divided by the speed-up asked for.

The line is the tighter of the two at each end. A candidate, with its own round p50s ``[min, max]``, is:

- ``clear``: its slowest round is at or under the line's low end (within budget whichever draw was right);
- ``over``: its fastest round is above the line's high end;
- ``borderline``: the two spreads overlap: the measurement cannot say. Borderline candidates rank after every
  clear pass, and the deploy pick takes one only when nothing passes clearly (and says so).

A row without round spreads (one round) counts as the single point p50.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..measure.rows import BenchRow
from .budget import limit_ms

Standing = Literal["clear", "borderline", "over"]


@dataclass(frozen=True)
class Line:
    """The budget line with its uncertainty: ``low <= line <= high`` (ms), and the budget in words."""

    low: float
    high: float
    words: str

    @property
    def text(self) -> str:
        """``0.62 ms [0.44-0.82]``: the line's middle estimate is not used for decisions, its ends are."""
        if self.high - self.low < 1e-9:
            return f"{self.high:.3f} ms"
        return f"{self.low:.3f}-{self.high:.3f} ms"


def spread(row: BenchRow) -> tuple[float, float]:
    """A row's round p50s as ``(fastest, slowest)``; the p50 itself when only one round was timed."""
    low = row.p50_round_min_ms if row.p50_round_min_ms is not None else row.p50_ms
    high = row.p50_round_max_ms if row.p50_round_max_ms is not None else row.p50_ms
    return min(low, row.p50_ms), max(high, row.p50_ms)


def budget_line(budget_ms: float | None, teacher: BenchRow | None, min_speedup: float | None) -> Line | None:
    """The line the budgets draw (``budget.limit_ms`` at the teacher's fastest and slowest round), or None when
    no budget is set. ``teacher`` is needed only for ``min_speedup``."""
    if budget_ms is None and min_speedup is None:
        return None
    words = [f"p50 <= {budget_ms:g} ms"] if budget_ms is not None else []
    fast = slow = None
    if min_speedup is not None:
        if teacher is None or teacher.p50_ms is None:
            raise ValueError("a min_speedup budget needs the teacher's timing")
        fast, slow = spread(teacher)
        words.append(f">= {min_speedup:g}x the teacher's speed (teacher {teacher.p50_ms:.3f} ms, rounds "
                     f"{fast:.3f}-{slow:.3f})")
    return Line(limit_ms(budget_ms, min_speedup, fast), limit_ms(budget_ms, min_speedup, slow), " and ".join(words))


def standing(row: BenchRow, line: Line | None) -> Standing:
    """Where a timed row stands against the line (no line: every row passes clearly)."""
    if line is None:
        return "clear"
    fast, slow = spread(row)
    if slow <= line.low:
        return "clear"
    if fast > line.high:
        return "over"
    return "borderline"


def reference_spread(teacher: BenchRow) -> float:
    """The teacher's round spread relative to its p50: how uncertain a teacher-relative budget is."""
    fast, slow = spread(teacher)
    return (slow - fast) / teacher.p50_ms
