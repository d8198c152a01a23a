"""What a person reads of the bench and the shortlist: plots whose every point is named in a legend (names written
beside close points collided), failed results in a note instead of on the accuracy axis, and terminal tables that
fit 120 columns without a wrapped cell."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import pytest
from rich.console import Console
from rich.text import Text

from cakd.export.decide.report import bench_table, pareto_figure, print_table, write_shortlist_plot
from cakd.export.measure.rows import BenchRow
from cakd.pipeline.stages.export import export_table

MODELS = {"teacher": (100.0, 0.5), "deit": (97.56, 0.14), "convnext": (99.11, 0.11)}  # top-1 %, onnxruntime p50
RUNTIMES = {"torch": ("fp32",), "onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "int8")}
SLOWER = {"torch": 7.0, "onnxruntime": 1.0, "openvino": 2.0}
QAT_SKIPPED = "quantisation-aware training is a step of cakd export; post-training INT8 passed (qat.mode: auto)"


def default_run_rows() -> list[BenchRow]:
    """Rows shaped like the default run's bench.json: 3 models x 3 runtimes x fp32/int8 x batch 1/8, the deit's
    OpenVINO INT8 failed its accuracy check at 60.89%, skipped QAT forms, an unavailable runtime."""
    rows = []
    for batch in (1, 8):
        for model, (top1, p50) in MODELS.items():
            for runtime, precisions in RUNTIMES.items():
                for precision in precisions:
                    failed = (model, runtime, precision) == ("deit", "openvino", "int8")
                    ms = p50 * SLOWER[runtime] * (0.8 if precision == "int8" else 1) * (5 if batch == 8 else 1)
                    artefact = "checkpoint" if runtime == "torch" else "onnx" if precision == "fp32" else "onnx-int8"
                    rows.append(BenchRow(model, runtime, precision, artefact, batch, "failed" if failed else "ok",
                                         reason="top-1 60.89% is 36.67 points below onnxruntime's 97.56%"
                                         if failed else None, p50_ms=ms, p50_round_min_ms=ms * 0.97,
                                         p50_round_max_ms=ms * 1.05, p90_ms=ms * 1.1, throughput_ips=batch * 1e3 / ms,
                                         top1=60.89 if failed else top1, max_abs_diff=4e-6, params_m=0.2, file_mb=0.9))
            rows.append(BenchRow(model, "onnxruntime", "int8", "onnx-int8-qat-cpu", batch, "skipped",
                                 reason=QAT_SKIPPED))
        rows.append(BenchRow("teacher", "tensorrt", "int8", "onnx-int8-trt", batch, "unavailable",
                             reason="TensorRT needs an NVIDIA GPU and the tensorrt package (pip install 'cakd[trt]')"))
    return rows


def test_pareto_plot_keeps_failed_points_off_the_axis_and_names_every_point() -> None:
    rows = default_run_rows()
    fig = pareto_figure(rows, budget_ms=2.0)
    try:
        axes = fig.axes
        assert [ax.get_title() for ax in axes] == ["batch 1", "batch 8"]
        for ax in axes:
            low, high = ax.get_ylim()
            assert 95 < low < 97.56 and 100 <= high < 101  # the 60.89% point would have pulled it to about 58
            assert not ax.texts  # no names written beside points, where they collide
        legend = {t.get_text() for t in fig.legends[0].get_texts()}
        assert {"teacher", "deit", "convnext", "torch fp32", "onnxruntime fp32", "onnxruntime int8", "openvino fp32",
                "openvino int8", "Pareto front", "budget 2 ms (batch 1)"} <= legend
        note = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
        assert "deit / openvino int8 (batch 1: 60.89%, batch 8: 60.89%)" in note
    finally:
        plt.close(fig)


def test_pareto_plot_without_failures_has_no_note() -> None:
    rows = [r for r in default_run_rows() if r.status != "failed"]
    fig = pareto_figure(rows)
    try:
        assert [t.get_text() for t in fig.texts] == ["Accuracy versus latency"]  # the title, no note
    finally:
        plt.close(fig)


def test_shortlist_plot_names_every_candidate_in_its_legend(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def row(p50: float | None, gflops: float) -> dict:
        return {"p50_ms": p50, "p50_round_min_ms": p50 and p50 * 0.9, "p50_round_max_ms": p50 and p50 * 1.1,
                "gflops": gflops}

    result = {"settings": {"budget_ms": None, "min_speedup": 2.0, "top_k": 2, "img_size": 12, "batch_size": 1,
                           "runtime": "onnxruntime", "precision": "fp32"},
              "teacher": {"row": row(0.5, 0.035)}, "shortlist": ["deit-a", "convnext-n"],
              "candidates": {"deit-a": {"family": "vit", "row": row(0.13, 0.0021), "within_budget": True, "rank": 1},
                             "deit-b": {"family": "vit", "row": row(0.131, 0.0022), "within_budget": True, "rank": 3},
                             "convnext-n": {"family": "convnext", "row": row(0.11, 0.0019), "within_budget": True,
                                            "rank": 2},
                             "swin": {"family": "swin", "row": row(None, 0.002), "within_budget": False, "rank": None}}}
    legends, close = [], plt.close

    def look_then_close(fig: plt.Figure) -> None:
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        close(fig)

    monkeypatch.setattr(plt, "close", look_then_close)
    write_shortlist_plot(result, tmp_path / "shortlist.png")
    labels = legends[0]
    assert labels[:4] == ["convnext-n #2 (convnext)", "swin (swin, failed: not drawn)", "deit-a #1 (vit)",
                          "deit-b #3 (vit)"]
    assert {"teacher", "teacher / 2 (min speed-up)", "shortlist (top 2)"} <= set(labels)
    assert (tmp_path / "shortlist.png").stat().st_size > 1000


def rendered(renderable: object, width: int) -> list[str]:
    """The lines a terminal of that width shows."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


def test_bench_table_fits_120_columns_and_lists_untimed_rows_once_under_it() -> None:
    rows = default_run_rows()
    rows.append(BenchRow("convnext", "openvino", "int8", "onnx-int8-qat-cpu", 1, "ok", p50_ms=0.0876,
                         p50_round_min_ms=0.0854, p50_round_max_ms=0.0924, p99_ms=0.1234, throughput_ips=11415,
                         top1=98.22, max_abs_diff=0.01234, params_m=12.31, file_mb=11.7))  # the widest artefact
    table, lines = bench_table(rows)
    timed = [r for r in rows if r.p50_ms is not None]
    narrow, wide = rendered(table, 120), rendered(table, 1000)
    assert len(narrow) == len(wide) == len(timed) + 4  # blank, header, rule, one line per row, blank: none wraps
    assert max(len(line.rstrip()) for line in wide) <= 120
    assert sum("failed [1]" in line for line in narrow) == 2  # both batch sizes point at one footnote
    assert not any("skipped" in line or "unavailable" in line for line in narrow)
    text = [Text.from_markup(line).plain for line in lines]
    assert text == ["[1] top-1 60.89% is 36.67 points below onnxruntime's 97.56%",
                    f"skipped onnx-int8-qat-cpu on onnxruntime int8 for teacher, deit, convnext: {QAT_SKIPPED}",
                    "unavailable onnx-int8-trt on tensorrt int8 for teacher: TensorRT needs an NVIDIA GPU and the "
                    "tensorrt package (pip install 'cakd[trt]')"]


def test_print_table_prints_what_and_where_then_table_then_lines() -> None:
    console = Console(width=120, record=True, file=io.StringIO())
    result = {"system": {"cpu": "AMD EPYC 7B13 64-Core Processor", "threads": 2}, "settings": {"rounds": 3},
              "notes": ["the same file given twice is reported once"]}
    print_table(result, default_run_rows(), console)
    out = console.export_text()
    assert out.startswith("Latency on AMD EPYC 7B13 64-Core Processor, 2 threads, 3 interleaved rounds.")
    assert out.index("p50 [rounds]") < out.index("[1] top-1 60.89%") < out.index("note: the same file")


def export_report() -> dict:
    """export.json of the default run's deit: FP32 and INT8 passed, QAT's two forms skipped, TensorRT's rejected."""
    parity = {"images": 450, "max_abs_diff": 4.3e-06, "top1_agreement": 1.0}
    gate = {"images": 450, "top1": 97.56, "fp32_top1": 97.56, "drop": 0.0, "agreement": 100.0}
    qat_reason = "post-training INT8 passed (qat.mode: auto)"
    rejected = ("INT8 accuracy gate failed on 450 test images (1 image = 0.22 points): top-1 95.11% vs FP32 97.56% "
                "(drop 2.44 points, allowed 1)")

    def entry(file: str | None, status: str = "ok", reason: str | None = None, **details: dict) -> dict:
        return {"file": file, "status": status, "reason": reason, "size_bytes": file and 912_384, **details}

    return {"source": "artifacts/students/deit/distill/model.pt",
            "artefacts": {"checkpoint": entry("model.pt"), "onnx": entry("model.onnx", parity=parity),
                          "onnx-int8": entry("model.int8.onnx", gate=gate),
                          "onnx-int8-trt": entry(None, "rejected", rejected, gate=gate),
                          "onnx-int8-qat": entry(None, "skipped", qat_reason),
                          "onnx-int8-qat-cpu": entry(None, "skipped", qat_reason)}}


def test_export_table_fits_120_columns_with_rejected_and_skipped_artefacts_under_it() -> None:
    table, lines = export_table(export_report())
    narrow, wide = rendered(table, 120), rendered(table, 1000)
    assert len(narrow) == len(wide) == 3 + 4  # three artefacts made, one line each
    assert max(len(line.rstrip()) for line in wide) <= 120
    assert "top-1 97.56% (FP32 97.56%), agrees 100.0%, 450 images" in "\n".join(narrow)
    assert [Text.from_markup(line).plain for line in lines] == [
        "rejected onnx-int8-trt: INT8 accuracy gate failed on 450 test images (1 image = 0.22 points): top-1 95.11% "
        "vs FP32 97.56% (drop 2.44 points, allowed 1)",
        "skipped onnx-int8-qat, onnx-int8-qat-cpu: post-training INT8 passed (qat.mode: auto)"]
