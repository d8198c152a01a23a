"""Which INT8 form a runtime's file ships in: a pure function of the rows ``int8_search`` recorded.

The fastest form that passed the INT8 gate on that runtime at every serving batch size wins, by p50 at the smallest
timed batch (a single request's latency), then at the largest, then by name, so the same rows always give the same
choice. A form that failed at any batch size, or could not be made, never wins: a file that is right only at some
batch sizes would need the user to know which. When none passes, the reason names every form with its numbers.
Whether the winner is faster than FP32 is ``decide/int8_pays``'s rule, applied to the bench's rows.
"""

from __future__ import annotations

from ...pipeline.files.fileio import bounded


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


def form_brief(name: str, row: dict) -> str:
    """One form in a few words for a line a person reads (``nncf 0.76 ms``, ``all failed at batch 64 (top-1
    60.00%)``, ``all-8bit not made (this x86 CPU has no VNNI ...)``); ``form_said`` and export.json say it all."""
    if row["status"] in ("unavailable", "error"):
        return f"{name} not made ({bounded(row['reason'].split(': ')[0], 70)})"
    if row["status"] != "passed":
        refused = [b for b, at in row.get("checked", {}).items() if at["reason"] is not None]
        where = f" at batch {', '.join(refused)}" if refused else ""
        return f"{name} failed{where} (top-1 {row['top1']:.2f}%)"
    p50 = row.get("p50_ms") or {}
    return f"{name} {p50[min(p50, key=int)]:.2f} ms" if p50 else f"{name} passed, not timed"


def runtime_line(label: str, runtime: str, entry: dict) -> str:
    """``label``'s INT8 forms on ``runtime`` in one short line from ``export.json``, the chosen one first, with
    FP32's p50 in the same rounds: what the summary prints under a deploy line that names no model."""
    forms = entry.get("forms", {})
    chosen = entry.get("chosen")
    order = sorted(forms, key=lambda name: name != chosen)
    briefs = [form_brief(name, forms[name]) + (f" (chosen, {entry['quantiser']})" if name == chosen else "")
              for name in order]
    fp32 = entry.get("fp32_p50_ms") or {}
    first = min(fp32, key=int) if fp32 else None
    fp32_said = f"; FP32 {fp32[first]:.2f} ms (p50, batch {first})" if first else ""
    verdict = "" if chosen else "none passes: "
    return f"{label} INT8 on {runtime}: {verdict}{', '.join(briefs) or 'no form tried'}{fp32_said}"
