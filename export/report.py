"""Benchmark outputs: what to deploy per runtime (the picks), a rich table, CSV, and the Pareto plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from cakd.pipeline.fileio import atomic_path, write_text  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

COLUMNS = ["model", "runtime", "precision", "batch_size", "status", "p50_ms", "p50_round_min_ms",
           "p50_round_max_ms", "p90_ms", "p99_ms", "mean_ms", "runs", "throughput_ips", "top1", "max_abs_diff",
           "params_m", "gflops", "file_mb", "activations", "reason", "source"]
PICK_METRIC = "p50_ms"  # the Pareto axis and the budget use the same latency


def label(row: dict) -> str:
    return f"{row['model']} / {row['runtime']} {row['precision']}"


def reference_batch(rows: list[dict]) -> int:
    """Batch 1 when measured (the latency a single request sees), else the smallest batch."""
    return min(row["batch_size"] for row in rows)


def _measured(row: dict) -> bool:
    return row["status"] == "ok" and row["top1"] is not None and row[PICK_METRIC] is not None


def pick_for(rows: list[dict], runtime: str, budget_ms: float | None, tolerance: float) -> dict:
    """What to deploy on ``runtime`` at the reference batch. With a budget: the most accurate artefact
    whose p50 fits it. Without: the fastest artefact within ``tolerance`` top-1 points of the most
    accurate one (accuracy first, then speed: a point the user cannot tell apart buys no latency)."""
    batch = reference_batch(rows)
    pick = {"runtime": runtime, "model": None, "precision": None, "top1": None, "p50_ms": None,
            "batch_size": batch, "budget_ms": budget_ms, "reason": None}
    mine = [r for r in rows if r["runtime"] == runtime and r["batch_size"] == batch]
    usable = [r for r in mine if _measured(r)]
    if not usable:
        why = {r["reason"] for r in mine if r["reason"]} or {"accuracy unknown: give --data to rank models"}
        return {**pick, "reason": "no usable result: " + "; ".join(sorted(why))}
    if budget_ms is not None:
        usable = [r for r in usable if r[PICK_METRIC] <= budget_ms]
        if not usable:
            return {**pick, "reason": f"nothing runs within {budget_ms:g} ms (p50, batch {batch})"}
        best = max(usable, key=lambda r: (r["top1"], -r[PICK_METRIC]))
        rule = f"most accurate within {budget_ms:g} ms"
    else:
        top = max(r["top1"] for r in usable)
        best = min((r for r in usable if r["top1"] >= top - tolerance), key=lambda r: r[PICK_METRIC])
        rule = f"fastest within {tolerance:g} top-1 points of the most accurate"
    return {**pick, "model": best["model"], "precision": best["precision"], "top1": best["top1"],
            "p50_ms": best[PICK_METRIC], "rule": rule}


def picks(rows: list[dict], runtimes: list[str], budget_ms: float | None, tolerance: float) -> list[dict]:
    return [pick_for(rows, runtime, budget_ms, tolerance) for runtime in runtimes]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    return [i for i, (lat, acc) in enumerate(points)
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2 in points)]


def _panel(ax: plt.Axes, rows: list[dict], batch: int, budget_ms: float | None) -> None:
    ok = [r for r in rows if _measured(r)]
    bad = [r for r in rows if r["status"] == "failed" and r["top1"] is not None]
    points = [(r[PICK_METRIC], r["top1"]) for r in ok]
    for runtime in sorted({r["runtime"] for r in ok}):
        mine = [(r[PICK_METRIC], r["top1"]) for r in ok if r["runtime"] == runtime]
        ax.scatter(*zip(*mine, strict=True), label=runtime, zorder=2)
    if bad:
        ax.scatter([r[PICK_METRIC] for r in bad], [r["top1"] for r in bad], color="lightgray", marker="x",
                   label="failed accuracy check", zorder=1)
    if points:
        front = sorted(points[i] for i in pareto_front(points))
        ax.plot(*zip(*front, strict=True), color="tab:red", linewidth=1, marker="o", markerfacecolor="none",
                markersize=11, label="Pareto front", zorder=3)
    for r in ok + bad:
        text = label(r) + (" (failed)" if r["status"] == "failed" else "")
        ax.annotate(text, (r[PICK_METRIC], r["top1"]), textcoords="offset points", xytext=(4, 4), fontsize=6,
                    color="gray" if r["status"] == "failed" else "black")
    if budget_ms is not None and batch == 1:
        ax.axvline(budget_ms, color="tab:blue", linestyle="--", label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # log-scale minor labels overlap on narrow ranges
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"batch {batch}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def write_pareto_plot(rows: list[dict], path: str | Path, budget_ms: float | None = None) -> None:
    """Accuracy vs p50 latency, one panel per batch size; failed results greyed, never on the front."""
    batches = sorted({r["batch_size"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        _panel(ax, [r for r in rows if r["batch_size"] == batch], batch, budget_ms)
    fig.suptitle("Accuracy versus latency")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_csv(rows: list[dict], path: str | Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(result: dict, console: Console | None = None) -> None:
    console = console or Console()
    system = result["system"]
    table = Table(title=f"Latency ({system['cpu']}, {system['threads']} threads, {result['settings']['rounds']} "
                  "interleaved rounds; p50 [min-max of round p50s])")
    for name in ("model", "runtime", "prec", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "top-1 %",
                 "max|diff|", "params M", "MB", "status"):
        table.add_column(name, justify="left" if name in ("model", "runtime", "prec", "status") else "right")
    batch = reference_batch(result["rows"])
    for r in result["rows"]:
        if r["status"] == "unavailable" or (r["p50_ms"] is None and r["batch_size"] != batch):
            continue  # listed once below, not once per batch size
        spread = f" [{_fmt(r['p50_round_min_ms'])}-{_fmt(r['p50_round_max_ms'])}]" if r["p50_ms"] else ""
        status = r["status"] if r["status"] == "ok" else f"[yellow]{r['status']}[/yellow]: {escape(r['reason'])}"
        table.add_row(escape(r["model"]), r["runtime"], r["precision"], str(r["batch_size"]),
                      _fmt(r["p50_ms"]) + spread, _fmt(r["p90_ms"]), _fmt(r["p99_ms"]), _fmt(r["throughput_ips"], 0),
                      _fmt(r["top1"]), _fmt(r["max_abs_diff"], 4), _fmt(r["params_m"]), _fmt(r["file_mb"]), status)
    console.print(table)
    missing = {(r["runtime"], r["reason"]): None for r in result["rows"] if r["status"] == "unavailable"}
    for runtime, reason in missing:
        console.print(f"[yellow]unavailable[/yellow] {runtime}: {escape(reason)}")
    for note in result["notes"]:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")
    for p in result["picks"]:
        if p["model"]:
            console.print(f"deploy [bold]{escape(p['model'])}[/bold] {p['precision']} on {p['runtime']}: "
                          f"{p['top1']:.2f}% at {p['p50_ms']:.2f} ms (batch {p['batch_size']}; {p['rule']})")
        else:
            console.print(f"{p['runtime']}: nothing to deploy ({escape(p['reason'])})")
