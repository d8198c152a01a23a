"""INT8 ships only where it pays (issue 33): a deploy pick never names an INT8 row that is not faster than its
FP32 beyond the round spreads, the summary line says so with the numbers, and ``bench.keep_slower_int8`` keeps
it on purpose. Pure functions of the bench's rows, so built by hand."""

from __future__ import annotations

import random

from cakd.export.decide.int8_pays import eligible, pays, unpaid_lines
from cakd.export.decide.picks import picks
from cakd.export.measure.rows import BenchRow


def row(model: str, runtime: str, precision: str, top1: float, p50: float, spread: float = 0.01,
        artefact: str | None = None, batch: int = 1) -> BenchRow:
    return BenchRow(model=model, runtime=runtime, precision=precision,
                    artefact=artefact or ("onnx-int8" if precision == "int8" else "onnx"), batch_size=batch,
                    status="ok", p50_ms=p50, p50_round_min_ms=p50 - spread, p50_round_max_ms=p50 + spread, top1=top1)


# The figures: the convnext student's INT8 1.33x slower than its FP32 on onnxruntime, the teacher's 0.54x;
# on OpenVINO the student's INT8 faster by its median only, inside the spreads.
ROWS = [row("convnext", "onnxruntime", "fp32", 98.9, 0.12), row("convnext", "onnxruntime", "int8", 99.1, 0.16),
        row("convnext", "onnxruntime", "int8", 99.0, 0.20, artefact="onnx-int8-qat-cpu"),
        row("teacher", "onnxruntime", "fp32", 99.3, 0.50), row("teacher", "onnxruntime", "int8", 99.4, 0.27),
        row("convnext", "openvino", "fp32", 98.9, 0.36, spread=0.05), row("convnext", "openvino", "int8", 99.1, 0.34),
        row("convnext", "onnxruntime", "int8", 99.1, 0.30, batch=8), row("convnext", "onnxruntime", "fp32", 98.9, 0.60,
                                                                            batch=8)]


def test_an_int8_row_pays_only_when_faster_than_its_fp32_beyond_both_round_spreads() -> None:
    by = {(r.model, r.runtime, r.artefact, r.batch_size): r for r in ROWS}
    assert not pays(by["convnext", "onnxruntime", "onnx-int8", 1], ROWS)  # 0.16 vs 0.12
    assert pays(by["teacher", "onnxruntime", "onnx-int8", 1], ROWS)  # 0.28 slowest round < 0.49 fastest
    assert not pays(by["convnext", "openvino", "onnx-int8", 1], ROWS)  # 0.35 slowest round > 0.31 fastest
    assert pays(by["convnext", "onnxruntime", "onnx-int8", 8], ROWS)  # at batch 8 it pays (0.31 < 0.59)
    alone = [by["convnext", "onnxruntime", "onnx-int8", 1]]
    assert pays(alone[0], alone)  # no FP32 measured: nothing says it is slower


def test_a_slower_int8_is_never_a_deploy_pick_even_when_the_most_accurate() -> None:
    # a budget picks the most accurate row within it: every student INT8 is more accurate than its FP32
    for rows in (ROWS, list(reversed(ROWS)), random.Random(0).sample(ROWS, len(ROWS))):  # same rows, same picks
        chosen = {p.runtime: p for p in picks(rows, ["onnxruntime", "openvino"], 1.0, 1.0)}
        assert (chosen["onnxruntime"].model, chosen["onnxruntime"].precision) == ("teacher", "int8")
        assert (chosen["openvino"].model, chosen["openvino"].precision) == ("convnext", "fp32")
    without_teacher = [r for r in ROWS if r.model != "teacher"]
    chosen = picks(without_teacher, ["onnxruntime"], 1.0, 1.0)[0]
    assert (chosen.model, chosen.precision, chosen.p50_ms) == ("convnext", "fp32", 0.12)
    assert all(r.precision != "int8" or pays(r, ROWS) for r in eligible(ROWS))


def test_keep_slower_int8_lets_it_be_picked_and_the_summary_line_says_so() -> None:
    chosen = picks(ROWS, ["openvino"], 1.0, 1.0, keep_slower_int8=True)[0]
    assert (chosen.model, chosen.precision) == ("convnext", "int8")
    assert unpaid_lines(ROWS, 1) == [
        "convnext INT8 on onnxruntime: 1.33x slower than FP32 (0.16 vs 0.12 ms, batch 1), not shipped",
        "convnext INT8 on openvino: 1.06x faster than FP32 but within the round spreads (0.34 vs 0.36 ms, batch 1), "
        "not shipped"]
    assert unpaid_lines(ROWS, 1, keep_slower_int8=True)[0].endswith("kept anyway (bench.keep_slower_int8)")

