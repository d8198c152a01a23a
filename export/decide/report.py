"""Benchmark outputs for people and tools: a rich table, CSV, and the accuracy-latency Pareto plot."""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from ...pipeline.files.fileio import atomic_path, write_text  # noqa: E402
from ..measure.rows import COLUMNS, BenchRow  # noqa: E402
from .budget import limit_ms  # noqa: E402


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    return [i for i, (lat, acc) in enumerate(points)
            if not any(l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc) for l2, a2 in points)]


MARKERS = "osD^vP*Xph<>d8H"  # one per runtime and precision; filled for FP32, hollow for quantised


def _kind(row: BenchRow) -> str:
    """What a marker stands for: the row's name without its model (runtime, precision, non-default INT8 form)."""
    return row.name.removeprefix(f"{row.model} / ")


def _styles(rows: list[BenchRow]) -> tuple[dict[str, tuple], dict[str, str]]:
    """A colour per model and a marker per runtime-precision, the same in every panel: the legend names each
    point, so no label is written on the axes where labels of close points would collide."""
    drawn = [r for r in rows if r.measured]
    models = list(dict.fromkeys(r.model for r in drawn))
    kinds = list(dict.fromkeys(_kind(r) for r in sorted(drawn, key=lambda r: (r.runtime, r.precision, _kind(r)))))
    colours = {m: plt.cm.tab10.colors[i % 10] for i, m in enumerate(models)}
    return colours, {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(kinds)}


def _panel(ax: plt.Axes, rows: list[BenchRow], batch: int, styles: tuple[dict, dict], budget_ms: float | None
           ) -> None:
    """One batch size: the measured rows only (a failed result would stretch the accuracy axis: it goes in the
    note below), the Pareto front ringed and joined."""
    colours, markers = styles
    ok = [r for r in rows if r.measured]
    for r in ok:
        filled = r.precision == "fp32"
        ax.scatter([r.p50_ms], [r.top1], marker=markers[_kind(r)], s=42, zorder=2, linewidths=1.2,
                   facecolors=colours[r.model] if filled else "none", edgecolors=colours[r.model])
    if ok:
        points = [(r.p50_ms, r.top1) for r in ok]
        front = sorted(points[i] for i in pareto_front(points))
        ax.plot(*zip(*front, strict=True), color="tab:red", linewidth=1, marker="o", markerfacecolor="none",
                markersize=13, zorder=3)
    if budget_ms is not None and batch == 1:
        ax.axvline(budget_ms, color="tab:blue", linestyle="--")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # log-scale minor labels overlap on narrow ranges
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"batch {batch}")
    ax.grid(True, alpha=0.3)


def _legend_handles(styles: tuple[dict, dict], budget_ms: float | None) -> list[Line2D]:
    colours, markers = styles
    handles = [Line2D([], [], linestyle="", marker="s", markersize=8, color=c, label=m) for m, c in colours.items()]
    handles += [Line2D([], [], linestyle="", marker=mk, markersize=7, color="dimgray", label=k,
                       markerfacecolor="dimgray" if k.split()[1] == "fp32" else "none") for k, mk in markers.items()]
    handles.append(Line2D([], [], color="tab:red", marker="o", markerfacecolor="none", markersize=10,
                          label="Pareto front"))
    if budget_ms is not None:
        handles.append(Line2D([], [], color="tab:blue", linestyle="--", label=f"budget {budget_ms:g} ms (batch 1)"))
    return handles


def failed_note(rows: list[BenchRow]) -> str | None:
    """The rows that failed their accuracy check, one entry per artefact with its top-1 per batch size."""
    failed: dict[str, list[str]] = {}
    for r in rows:
        if r.status == "failed":
            top1 = "no top-1" if r.top1 is None else f"{r.top1:.2f}%"
            failed.setdefault(r.name, []).append(f"batch {r.batch_size}: {top1}")
    if not failed:
        return None
    listed = "; ".join(f"{name} ({', '.join(batches)})" for name, batches in failed.items())
    return f"Not drawn, failed the accuracy check against the reference runtime (reasons in bench.json): {listed}"


def pareto_figure(rows: list[BenchRow], budget_ms: float | None = None) -> plt.Figure:
    """Accuracy vs p50 latency, one panel per batch size, a legend keyed by colour (model) and marker (runtime and
    precision; hollow = quantised), and failed results in a note under the panels, never on the axes."""
    batches = sorted({r.batch_size for r in rows})
    styles = _styles(rows)
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches) + 2.6, 4.8), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        _panel(ax, [r for r in rows if r.batch_size == batch], batch, styles, budget_ms)
    fig.legend(handles=_legend_handles(styles, budget_ms), loc="center right", fontsize=8, frameon=False,
               title="colour: model; marker: runtime, precision\n(filled FP32, hollow quantised)", title_fontsize=8)
    fig.suptitle("Accuracy versus latency")
    note = failed_note(rows)
    width = fig.get_figwidth()
    if note:
        fig.text(0.01, 0.01, textwrap.fill(note, width=int(width * 15)), fontsize=7, color="dimgray",
                 va="bottom", ha="left")
    lines = 0 if not note else len(textwrap.wrap(note, width=int(width * 15)))
    fig.tight_layout(rect=(0, 0.035 * lines, 1 - 2.5 / width, 1))
    return fig


def write_pareto_plot(rows: list[BenchRow], path: str | Path, budget_ms: float | None = None) -> None:
    """``pareto_figure`` as a PNG, written atomically."""
    fig = pareto_figure(rows, budget_ms)
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


def _fmt_ms(value: float | None, digits: int = 3) -> str:
    """Latencies to ``digits`` significant figures: 0.137, 1.37, 13.7 (two decimals hide sub-0.1 ms differences)."""
    return "-" if value is None else f"{value:.{digits}g}" if value < 10 ** digits else f"{value:.0f}"


def footnotes(reasons: list[str | None]) -> dict[str, int]:
    """Each distinct long reason once, numbered in order of appearance: a table cell holds its number, the text
    goes under the table, where it may be as long as it needs."""
    return {reason: i for i, reason in enumerate(dict.fromkeys(r for r in reasons if r), start=1)}


def grouped_lines(items: list[tuple[str, str, str, str, str | None]]) -> list[str]:
    """(status, artefact, runtime and precision, model, reason) as one line per status and reason: a QAT form
    skipped for every model, runtime and batch size is one line, not a table row each."""
    groups: dict[tuple[str, str | None], tuple[dict, dict, dict]] = {}
    for status, artefact, target, model, reason in items:
        for seen, value in zip(groups.setdefault((status, reason), ({}, {}, {})), (artefact, target, model),
                               strict=True):
            seen[value] = None
    return [f"[yellow]{status}[/yellow] " + escape(" on ".join(", ".join(names) for names in whats[:2]) +
                                                   f" for {', '.join(whats[2])}: {reason or 'no reason recorded'}")
            for (status, reason), whats in groups.items()]


def bench_table(rows: list[BenchRow]) -> tuple[Table, list[str]]:
    """The measured rows (timed, failed included) in a table that fits 120 columns, and the lines under it:
    footnotes for failed results, then every row that was not timed, grouped by status and reason."""
    table = Table(box=box.SIMPLE_HEAD, padding=0)
    for name in ("model", "runtime", "prec", "artefact", "bs", "p50 [rounds]", "p99", "img/s", "top-1",
                 "|diff|", "params", "MB", "status"):
        table.add_column(escape(name), justify="left" if name in ("model", "runtime", "prec", "artefact", "status")
                         else "right")
    timed = [r for r in rows if r.p50_ms is not None]
    notes = footnotes([r.reason for r in timed if r.status != "ok"])
    for r in timed:
        spread = f" [{_fmt_ms(r.p50_round_min_ms, 2)}-{_fmt_ms(r.p50_round_max_ms, 2)}]"
        status = "ok" if r.status == "ok" else f"[yellow]{r.status}[/yellow]" + (
            escape(f" [{notes[r.reason]}]") if r.reason else "")
        table.add_row(escape(r.model), r.runtime, r.precision, r.artefact or "-", str(r.batch_size),
                      _fmt_ms(r.p50_ms) + spread, _fmt_ms(r.p99_ms), _fmt(r.throughput_ips, 0), _fmt(r.top1),
                      "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.0e}", _fmt(r.params_m), _fmt(r.file_mb, 1),
                      status)
    lines = [escape(f"[{i}] {reason}") for reason, i in notes.items()]
    untimed = [(r.status, r.artefact or "-", f"{r.runtime} {r.precision}", r.model, r.reason)
               for r in rows if r.p50_ms is None]
    return table, lines + grouped_lines(untimed)


def print_table(result: dict, rows: list[BenchRow], console: Console) -> None:
    """What the bench measured and on what, the table, the rows it could not time, and its notes."""
    system = result["system"]
    console.print(escape(f"Latency on {system['cpu']}, {system['threads']} threads, {result['settings']['rounds']} "
                         "interleaved rounds. bs: batch size; p50 [min-max of the round p50s] and p99 in ms; top-1 "
                         "in %; |diff|: max |logit difference| vs PyTorch FP32; params in millions; file size in MB"))
    table, lines = bench_table(rows)
    console.print(table)
    for line in lines:
        console.print(line)
    for note in result["notes"]:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")


def _shortlist_points(ax: plt.Axes, result: dict) -> list[Line2D]:
    """One colour per family and one marker per candidate within it, named in the legend (names written beside
    close points collide); hollow markers over budget; error bars span the round p50s; the shortlist ringed."""
    families = sorted({e["family"] for e in result["candidates"].values()})
    colours = dict(zip(families, plt.cm.tab10.colors, strict=False))
    handles, seen = [], dict.fromkeys(families, 0)
    for name, e in sorted(result["candidates"].items(), key=lambda item: (item[1]["family"], item[0])):
        row, colour = e["row"], colours[e["family"]]
        marker = MARKERS[seen[e["family"]] % len(MARKERS)]
        seen[e["family"]] += 1
        face = colour if e["within_budget"] else "none"
        untimed = ", failed: not drawn" if row["p50_ms"] is None else ""
        handles.append(Line2D([], [], linestyle="", marker=marker, color=colour, markerfacecolor=face,
                              label=f"{name}" + (f" #{e['rank']}" if e["rank"] else "") + f" ({e['family']}{untimed})"))
        if row["p50_ms"] is None:
            continue
        spread = [[row["p50_ms"] - row["p50_round_min_ms"]], [row["p50_round_max_ms"] - row["p50_ms"]]]
        ax.errorbar(row["gflops"], row["p50_ms"], yerr=spread, fmt=marker, color=colour, markerfacecolor=face,
                    capsize=2, zorder=2)
        if name in result["shortlist"]:
            ax.scatter(row["gflops"], row["p50_ms"], s=200, facecolors="none", edgecolors="tab:red", zorder=3)
    return handles


def write_shortlist_plot(result: dict, path: str | Path) -> None:
    """``cakd shortlist``'s picture: p50 latency against GFLOPs per candidate, the teacher, and the budget's limits
    (``budget_ms``; the teacher's p50 / ``min_speedup``). Filled markers fit, hollow ones do not."""
    s, teacher = result["settings"], result["teacher"]["row"]
    fig, ax = plt.subplots(figsize=(10.5, 5.5))
    handles = _shortlist_points(ax, result)
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
    lines, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + lines, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              title="#rank (family); hollow: over budget", title_fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
