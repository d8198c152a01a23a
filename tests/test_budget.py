"""The latency budget is one rule: the bench's deploy pick and the shortlist's verdict agree on the same numbers,
the limit itself included (a p50 exactly at the limit fits)."""

from __future__ import annotations

import pytest

from cakd.export.decide.budget import TEACHER, limit_ms, over_budget
from cakd.export.decide.picks import pick_for
from cakd.export.decide.profile import Profiled, judge
from cakd.export.measure.rows import BenchRow
from cakd.pipeline.models import ModelSpec


def _row(model: str, p50: float) -> BenchRow:
    return BenchRow(model=model, runtime="onnxruntime", precision="fp32", artefact="onnx", batch_size=1,
                    status="ok", p50_ms=p50, p50_round_min_ms=p50 * 0.99, p50_round_max_ms=p50 * 1.01, top1=90.0)


@pytest.mark.parametrize(("budget_ms", "min_speedup"), [(5.0, None), (None, 2.0), (4.0, 2.0), (6.0, 2.0)])
@pytest.mark.parametrize("p50", [3.0, 4.0, 5.0, 5.5])
def test_the_pick_and_the_shortlist_judge_a_p50_alike(budget_ms: float | None, min_speedup: float | None,
                                                      p50: float) -> None:
    teacher = _row(TEACHER, 10.0)
    item = Profiled("s", ModelSpec("resnet18", 10, 16), "resnet", None, 1, 1.0, row=_row("s", p50))
    verdict = judge(item, teacher, budget_ms, min_speedup)
    picked = pick_for([teacher, item.row], "onnxruntime", budget_ms, 1.0, min_speedup).model == "s"
    assert verdict.within_budget == picked == (p50 <= limit_ms(budget_ms, min_speedup, 10.0))


def test_the_reason_names_each_broken_condition() -> None:
    assert limit_ms(None, None, None) is None and limit_ms(4.0, 2.0, 10.0) == 4.0
    assert over_budget(5.0, 4.0, 2.0, 10.0) == "p50 5.000 ms > budget 4 ms"
    assert over_budget(6.0, 4.0, 2.0, 10.0) == "p50 6.000 ms > budget 4 ms; 1.67x the teacher's speed < 2x"
    assert over_budget(5.0, None, 2.0, 10.0) is None
