"""What a person reads of the bench and the shortlist: plots whose every point is named in a legend (names written
beside close points collided), failed results in a note instead of on the accuracy axis, and terminal tables that
fit 120 columns without a wrapped cell."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from cakd.export.decide.report import pareto_figure, write_shortlist_plot
from cakd.export.measure.rows import BenchRow

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
