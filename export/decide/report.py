"""Benchmark outputs for people and tools: a rich table, CSV, and the accuracy-latency Pareto plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import NullFormatter  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from ...pipeline.files.fileio import atomic_path, write_text  # noqa: E402
from ..measure.rows import COLUMNS, BenchRow  # noqa: E402
from .budget import limit_ms  # noqa: E402
from .picks import reference_batch  # noqa: E402


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    return [i for i, (lat, acc) in enumerate(points)
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2 in points)]


def _panel(ax: plt.Axes, rows: list[BenchRow], batch: int, budget_ms: float | None) -> None:
    ok = [r for r in rows if r.measured]
    bad = [r for r in rows if r.status == "failed" and r.top1 is not None]
    points = [(r.p50_ms, r.top1) for r in ok]
    for runtime in sorted({r.runtime for r in ok}):
        mine = [(r.p50_ms, r.top1) for r in ok if r.runtime == runtime]
        ax.scatter(*zip(*mine, strict=True), label=runtime, zorder=2)
    if bad:
        ax.scatter([r.p50_ms for r in bad], [r.top1 for r in bad], color="lightgray", marker="x",
                   label="failed accuracy check", zorder=1)
    if points:
        front = sorted(points[i] for i in pareto_front(points))
        ax.plot(*zip(*front, strict=True), color="tab:red", linewidth=1, marker="o", markerfacecolor="none",
                markersize=11, label="Pareto front", zorder=3)
    for r in ok + bad:
        ax.annotate(r.name + (" (failed)" if r.status == "failed" else ""), (r.p50_ms, r.top1),
                    textcoords="offset points", xytext=(4, 4), fontsize=6,
                    color="gray" if r.status == "failed" else "black")
    if budget_ms is not None and batch == 1:
        ax.axvline(budget_ms, color="tab:blue", linestyle="--", label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # log-scale minor labels overlap on narrow ranges
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"batch {batch}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def write_pareto_plot(rows: list[BenchRow], path: str | Path, budget_ms: float | None = None) -> None:
    """Accuracy vs p50 latency, one panel per batch size; failed results greyed, never on the front."""
    batches = sorted({r.batch_size for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        _panel(ax, [r for r in rows if r.batch_size == batch], batch, budget_ms)
    fig.suptitle("Accuracy versus latency")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_csv(rows: list[BenchRow], path: str | Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.to_dict() for row in rows)
    write_text(path, buffer.getvalue())


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(result: dict, rows: list[BenchRow], console: Console) -> None:
    """The bench's rows (each unavailable runtime once, below them) and its notes."""
    system = result["system"]
    table = Table(title=f"Latency ({system['cpu']}, {system['threads']} threads, {result['settings']['rounds']} "
                  "interleaved rounds; p50 [min-max of round p50s])")
    for name in ("model", "runtime", "prec", "artefact", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "top-1 %",
                 "max|diff|", "params M", "MB", "status"):
        table.add_column(name, justify="left" if name in ("model", "runtime", "prec", "artefact", "status")
                         else "right")
    batch = reference_batch(rows)
    for r in rows:
        if r.status == "unavailable" or (r.p50_ms is None and r.batch_size != batch):
            continue  # listed once below, not once per batch size
        spread = f" [{_fmt(r.p50_round_min_ms)}-{_fmt(r.p50_round_max_ms)}]" if r.p50_ms else ""
        status = r.status if r.status == "ok" else f"[yellow]{r.status}[/yellow]: {escape(r.reason or '')}"
        table.add_row(escape(r.model), r.runtime, r.precision, r.artefact or "-", str(r.batch_size),
                      _fmt(r.p50_ms) + spread, _fmt(r.p90_ms), _fmt(r.p99_ms), _fmt(r.throughput_ips, 0),
                      _fmt(r.top1), _fmt(r.max_abs_diff, 4), _fmt(r.params_m), _fmt(r.file_mb), status)
    console.print(table)
    for runtime, precision, reason in dict.fromkeys((r.runtime, r.precision, r.reason) for r in rows
                                                     if r.status == "unavailable"):
        console.print(f"[yellow]unavailable[/yellow] {runtime} {precision}: {escape(reason or '')}")
    for note in result["notes"]:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")


def _shortlist_points(ax: plt.Axes, result: dict) -> None:
    """One colour per family; hollow markers over budget; error bars span the round p50s; the shortlist ringed."""
    colours = dict(zip(sorted({e["family"] for e in result["candidates"].values()}), plt.cm.tab10.colors,
                       strict=False))
    for name, e in result["candidates"].items():
        row = e["row"]
        if row["p50_ms"] is None:
            continue
        spread = [[row["p50_ms"] - row["p50_round_min_ms"]], [row["p50_round_max_ms"] - row["p50_ms"]]]
        ax.errorbar(row["gflops"], row["p50_ms"], yerr=spread, fmt="o", color=colours[e["family"]],
                    markerfacecolor=colours[e["family"]] if e["within_budget"] else "none", capsize=2, zorder=2)
        if name in result["shortlist"]:
            ax.scatter(row["gflops"], row["p50_ms"], s=180, facecolors="none", edgecolors="tab:red", zorder=3)
        ax.annotate(f"{name}" + (f" #{e['rank']}" if e["rank"] else ""), (row["gflops"], row["p50_ms"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=6)
    for family, colour in colours.items():
        ax.scatter([], [], color=colour, label=family)


def write_shortlist_plot(result: dict, path: str | Path) -> None:
    """``cakd shortlist``'s picture: p50 latency against GFLOPs per candidate, the teacher, and the budget's limits
    (``budget_ms``; the teacher's p50 / ``min_speedup``). Filled markers fit, hollow ones do not."""
    s, teacher = result["settings"], result["teacher"]["row"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    _shortlist_points(ax, result)
    ax.scatter([teacher["gflops"]], [teacher["p50_ms"]], marker="*", s=160, color="black", label="teacher", zorder=3)
    if s["budget_ms"]:
        ax.axhline(s["budget_ms"], color="tab:blue", linestyle="--", label=f"budget {s['budget_ms']:g} ms")
    if s["min_speedup"]:
        ax.axhline(limit_ms(None, s["min_speedup"], teacher["p50_ms"]), color="tab:purple", linestyle=":",
                   label=f"teacher / {s['min_speedup']:g} (min speed-up)")
    ax.scatter([], [], s=180, facecolors="none", edgecolors="tab:red", label=f"shortlist (top {s['top_k']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"GFLOPs per image ({s['img_size']} px, log scale)")
    ax.set_ylabel(f"p50 latency at batch {s['batch_size']} (ms, log scale; bars: round p50s)")
    ax.set_title(f"Untrained candidates on {s['runtime']} {s['precision']}: filled = within budget")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
