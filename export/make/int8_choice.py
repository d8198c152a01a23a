"""Which INT8 form a runtime's file ships in: a pure function of the rows ``int8_search`` recorded.

The fastest form that passed the INT8 gate on that runtime at every serving batch size wins, by p50 at the smallest
timed batch (a single request's latency), then at the largest, then by name, so the same rows always give the same
choice. A form that failed at any batch size, or could not be made, never wins: a file that is right only at some
batch sizes would need the user to know which. When none passes, the reason names every form with its numbers.
Whether the winner is faster than FP32 is ``decide/int8_pays``'s rule, applied to the bench's rows.
"""

from __future__ import annotations


def _by_batch(values: dict[str, float]) -> list[float]:
    return [values[b] for b in sorted(values, key=int)]


def choose(forms: dict[str, dict]) -> str | None:
    """The fastest form that passed and was timed, or None."""
    timed = [name for name, row in forms.items() if row["status"] == "passed" and row.get("p50_ms")]
    if not timed:
        return None

    def speed(name: str) -> tuple[float, float, str]:
        p50 = _by_batch(forms[name]["p50_ms"])
        return p50[0], p50[-1], name

    return min(timed, key=speed)


def form_said(name: str, row: dict) -> str:
    """One form's outcome with its numbers, e.g. ``all-8bit failed (top-1 61.20%, agreement 60.10% at batch 64:
    ...)`` or ``conv-gemm-matmul passed (top-1 97.33%, agreement 99.33%; p50 0.21 / 3.10 ms at batch 1 / 64)``."""
    if row["status"] in ("unavailable", "error"):
        return f"{name} {row['status']}: {row['reason']}"
    numbers = f"top-1 {row['top1']:.2f}%, agreement {row['agreement']:.2f}%"
    if row["status"] != "passed":
        return f"{name} {row['status']} ({numbers}; {row['reason']})"
    p50 = row.get("p50_ms") or {}
    if not p50:
        return f"{name} passed ({numbers}; not timed)"
    batches = sorted(p50, key=int)
    times = " / ".join(f"{p50[b]:.2f}" for b in batches)
    return f"{name} passed ({numbers}; p50 {times} ms at batch {' / '.join(batches)})"


def none_passed(runtime: str, forms: dict[str, dict]) -> str:
    """Why a runtime gets no INT8: every form tried, with its numbers."""
    tried = "; ".join(form_said(name, row) for name, row in forms.items()) or "no form was tried"
    return f"no INT8 form passes on {runtime}: {tried}"


def runtime_line(label: str, runtime: str, entry: dict) -> str:
    """Which form and quantiser made ``label``'s INT8 file for ``runtime``, or why none did, with every form's
    numbers and FP32's p50 from ``export.json``: what the summary says under a runtime's deploy line."""
    fp32 = entry.get("fp32_p50_ms") or {}
    fp32_said = ("; FP32 p50 " + " / ".join(f"{fp32[b]:.2f}" for b in sorted(fp32, key=int)) + " ms"
                 if fp32 else "")
    forms = entry.get("forms", {})
    if entry.get("chosen"):
        others = "; ".join(form_said(name, row) for name, row in forms.items())
        return (f"{label} INT8 on {runtime}: form {entry['chosen']} by {entry['quantiser']}{fp32_said} "
                f"(tried: {others})")
    return f"{label} INT8 on {runtime}: {entry.get('reason') or none_passed(runtime, forms)}{fp32_said}"
