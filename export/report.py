"""Benchmark outputs: the latency budget pick, a rich table, CSV, and the accuracy/latency Pareto plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.fileio import atomic_path, write_text  # noqa: E402

COLUMNS = ["model", "runtime", "precision", "batch_size", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
           "throughput_ips", "top1", "params_m", "gflops", "file_mb", "source"]
BUDGET_METRIC = "p90_ms"  # a latency budget is about the slow calls, not the typical one


def runtime_label(row: dict) -> str:
    """The runtime, plus the precision where the runtime name does not already say it."""
    shown = row["runtime"] == "tensorrt" or row["precision"] == "fp16"
    return f"{row['runtime']} {row['precision']}" if shown else row["runtime"]


def label(row: dict) -> str:
    return f"{row['model']} / {runtime_label(row)}"


def reference_batch(rows: list[dict]) -> int:
    """Batch 1 when measured (the latency a single request sees), else the smallest batch."""
    return min(row["batch_size"] for row in rows)


def budget_pick(rows: list[dict], budget_ms: float) -> dict:
    """The most accurate (model, runtime) whose p90 latency at the reference batch fits the budget."""
    batch = reference_batch(rows)
    fitting = [r for r in rows if r["batch_size"] == batch and r[BUDGET_METRIC] <= budget_ms]
    result = {"budget_ms": budget_ms, "metric": BUDGET_METRIC, "batch_size": batch, "pick": None}
    if not fitting:
        return {**result, "reason": f"no model runs within {budget_ms:g} ms ({BUDGET_METRIC}, batch {batch})"}
    if any(r["top1"] is None for r in fitting):
        return {**result, "reason": "accuracy unknown: give a dataset to rank models within the budget"}
    best = max(fitting, key=lambda r: (r["top1"], -r[BUDGET_METRIC]))
    pick = {k: best[k] for k in ("model", "runtime", "precision", "top1", BUDGET_METRIC, "source")}
    return {**result, "pick": pick, "reason": None}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    return [i for i, (lat, acc) in enumerate(points)
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2 in points)]


def write_pareto_plot(rows: list[dict], path: str | Path, budget_ms: float | None = None) -> None:
    batch = reference_batch(rows)
    chosen = [r for r in rows if r["batch_size"] == batch and r["top1"] is not None]
    points = [(r[BUDGET_METRIC], r["top1"]) for r in chosen]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(*zip(*points, strict=True), color="tab:gray", label="measured", zorder=2)
    if front:
        ordered = sorted(points[i] for i in front)
        ax.plot(*zip(*ordered, strict=True), color="tab:red", marker="o", label="Pareto front", zorder=3)
    for row, (x, y) in zip(chosen, points, strict=True):
        ax.annotate(label(row), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:blue", linestyle="--", label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel(f"{BUDGET_METRIC.removesuffix('_ms')} latency at batch {batch} (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy versus latency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
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
    table = Table(title=f"Latency ({system['cpu']}, {system['threads']} threads)")
    for name in ("model", "runtime", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "top-1 %", "params M",
                 "GFLOPs", "MB"):
        table.add_column(name, justify="left" if name in ("model", "runtime") else "right")
    for r in result["rows"]:
        table.add_row(escape(r["model"]), runtime_label(r), str(r["batch_size"]), _fmt(r["p50_ms"]), _fmt(r["p90_ms"]),
                      _fmt(r["p99_ms"]), _fmt(r["throughput_ips"], 0), _fmt(r["top1"]), _fmt(r["params_m"]),
                      _fmt(r["gflops"], 3), _fmt(r["file_mb"]))
    console.print(table)
    for u in result["unavailable"]:
        who = f"{u['model']} / " if "model" in u else ""
        console.print(f"[yellow]unavailable[/yellow] {escape(who + u['runtime'])}: {escape(u['reason'])}")
    budget = result.get("budget")
    if budget:
        if budget["pick"]:
            p = budget["pick"]
            console.print(f"Within {budget['budget_ms']:g} ms ({budget['metric']}, batch {budget['batch_size']}): "
                          f"[bold]{escape(p['model'])}[/bold] on {p['runtime']}, top-1 {p['top1']:.2f}%")
        else:
            console.print(f"Budget {budget['budget_ms']:g} ms: {escape(budget['reason'])}")
