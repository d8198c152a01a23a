"""Top-1 is counted one way and the accuracy-drop gate is one rule: the INT8 gate and the bench's runtime check
reach the same verdict on the same numbers, a drop of exactly the allowed points included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cakd.export.make.int8 import int8_gate
from cakd.export.measure.bench_accuracy import Accuracy, check
from cakd.pipeline.reporting.metrics import classification_report, drop_gate, top1_accuracy, top1_hits


def _logits(correct: int, n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Six-class logits right on the first ``correct`` of ``n`` images."""
    labels = torch.zeros(n, dtype=torch.long)
    logits = torch.zeros(n, 6)
    logits[:correct, 0], logits[correct:, 1] = 1.0, 1.0
    return logits, labels


def test_top1_is_one_count_for_tensors_arrays_and_loaders() -> None:
    logits, labels = _logits(83)
    assert top1_hits(logits, labels) == top1_hits(logits.numpy(), labels.numpy()) == 83
    assert top1_accuracy(lambda x: x, [(logits[:50], labels[:50]), (logits[50:], labels[50:])]) == 83.0
    assert classification_report(torch.softmax(logits, 1).numpy(), labels.numpy(), list("abcdef"))["top1"] == 83.0


@pytest.mark.parametrize(("int8_correct", "fails"), [(82, False), (81, False), (80, True)])
def test_the_int8_gate_and_the_bench_check_agree(int8_correct: int, fails: bool) -> None:
    (fp32, labels), (int8, _) = _logits(83), _logits(int8_correct)
    gate = int8_gate(fp32, int8, labels, max_drop=2.0, min_agreement=0.0)
    results = {("m", "onnxruntime", "int8", "onnx-int8"): Accuracy(float(int8_correct), int8),
               ("m", "torch", "fp32", "checkpoint"): Accuracy(83.0, fp32)}
    status, reason = check(results, max_drop=2.0)[("m", "onnxruntime", "int8", "onnx-int8")]
    assert (gate["reason"] is not None) == (status == "failed") == fails
    assert (drop_gate(float(int8_correct), 83.0, 2.0, "x") is not None) == fails
    if fails:
        assert reason == "top-1 80.00% vs 83.00% on torch fp32 (drop 3.00 points, allowed 2)"
        assert "top-1 80.00% vs FP32 83.00% (drop 3.00 points, allowed 2)" in gate["reason"]
    assert np.isclose(gate["top1"], int8_correct)
