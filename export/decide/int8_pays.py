"""INT8 ships on a runtime only where it pays: an INT8 row is eligible for a deploy pick only when it runs faster
than its model's FP32 on the same runtime and batch beyond both round spreads (its slowest round's p50 below FP32's
fastest). On three default runs the students' INT8 files ran 1.3-2x slower than their FP32 on onnxruntime and
OpenVINO, while the teacher's ran 0.4-0.6x (issue 33). ``bench.keep_slower_int8`` keeps a passing but slower INT8
eligible, for a target that only runs INT8 (an NPU, say). Pure functions of the bench's rows.
"""

from __future__ import annotations

from ..measure.rows import BenchRow


def _fp32_of(row: BenchRow, rows: list[BenchRow]) -> BenchRow | None:
    """The same model's measured FP32 row on the same runtime and batch (the fastest, if several)."""
    fp32 = [r for r in rows if r.measured and r.precision == "fp32" and (r.model, r.runtime, r.batch_size) ==
            (row.model, row.runtime, row.batch_size)]
    return min(fp32, key=lambda r: r.p50_ms) if fp32 else None


def pays(row: BenchRow, rows: list[BenchRow]) -> bool:
    """Whether an INT8 row beats its FP32 outside the round spreads (True for non-INT8 rows, and for an INT8 row
    with no measured FP32 to compare with)."""
    fp32 = _fp32_of(row, rows)
    if row.precision != "int8" or fp32 is None:
        return True
    slowest = row.p50_round_max_ms if row.p50_round_max_ms is not None else row.p50_ms
    fastest = fp32.p50_round_min_ms if fp32.p50_round_min_ms is not None else fp32.p50_ms
    return slowest < fastest


def eligible(rows: list[BenchRow], keep_slower_int8: bool = False) -> list[BenchRow]:
    """The measured rows a deploy pick may name: no INT8 that does not pay, unless kept on purpose."""
    return [r for r in rows if r.measured and (keep_slower_int8 or pays(r, rows))]


def unpaid_lines(rows: list[BenchRow], batch: int, keep_slower_int8: bool = False) -> list[str]:
    """One line per (model, runtime) where no INT8 form pays at ``batch``, with the fastest form's numbers:
    ``convnext INT8 on onnxruntime: 1.33x slower than FP32 (0.16 vs 0.12 ms), not shipped``."""
    lines = []
    int8 = [r for r in rows if r.measured and r.precision == "int8" and r.batch_size == batch]
    for model, runtime in dict.fromkeys((r.model, r.runtime) for r in int8):
        forms = [r for r in int8 if (r.model, r.runtime) == (model, runtime)]
        fastest, fp32 = min(forms, key=lambda r: r.p50_ms), _fp32_of(forms[0], rows)
        if fp32 is None or any(pays(r, rows) for r in forms):
            continue
        ratio = fastest.p50_ms / fp32.p50_ms
        how = (f"{ratio:.2f}x slower than FP32" if ratio >= 1
               else f"{1 / ratio:.2f}x faster than FP32 but within the round spreads")
        verdict = "kept anyway (bench.keep_slower_int8)" if keep_slower_int8 else "not shipped"
        lines.append(f"{model} INT8 on {runtime}: {how} ({fastest.p50_ms:.2f} vs {fp32.p50_ms:.2f} ms, batch "
                     f"{batch}), {verdict}")
    return lines
