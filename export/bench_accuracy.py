"""Accuracy of every artefact on every runtime it is timed on, and the rule that marks a result failed.

A fast runtime that computes something else is worse than a slow one: OpenVINO once read an INT8 ONNX
with a dynamic batch axis and returned 26% top-1 where onnxruntime gave 80.7%. So each result is
compared with its reference - the same artefact on onnxruntime; onnxruntime itself against PyTorch
FP32 (or, for INT8 without a checkpoint, against the FP32 ONNX) - and fails when it is more than
``max_drop`` top-1 points below it, or when its reference failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from cakd.pipeline.metrics import top1_accuracy

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]
Key = tuple[str, str, str]  # (model label, runtime, precision)


@dataclass
class Accuracy:
    top1: float
    logits: torch.Tensor


def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], loader: Loader) -> Accuracy:
    """Top-1 (the one accuracy function) and the logits it was computed from."""
    kept: list[torch.Tensor] = []

    def recording(images: torch.Tensor) -> torch.Tensor:
        kept.append(predict(images).float())
        return kept[-1]

    return Accuracy(top1_accuracy(recording, loader), torch.cat(kept))


def reference_of(key: Key, measured: set[Key]) -> Key | None:
    """What a result is checked against (see the module docstring), if it was measured."""
    model, runtime, precision = key
    if runtime in ("torch", "torch-cuda"):
        return None
    chain = [(model, "onnxruntime", precision)] if runtime != "onnxruntime" else []
    chain.append((model, "torch", "fp32"))
    if precision == "int8":
        chain.append((model, "onnxruntime", "fp32"))
    return next((ref for ref in chain if ref in measured and ref != key), None)


def check(results: dict[Key, Accuracy], max_drop: float) -> dict[Key, tuple[str, str | None]]:
    """(status, reason) per result: "ok", or "failed" with the comparison that failed."""
    verdict: dict[Key, tuple[str, str | None]] = {}

    def judge(key: Key) -> tuple[str, str | None]:
        if key not in verdict:
            ref = reference_of(key, set(results))
            verdict[key] = ("ok", None)
            if ref is not None:
                ref_status, _ = judge(ref)
                top1, ref_top1 = results[key].top1, results[ref].top1
                drop = ref_top1 - top1
                where = f"{ref[1]} {ref[2]}"
                if ref_status == "failed":
                    verdict[key] = ("failed", f"its reference ({where}) failed")
                elif drop > max_drop:
                    verdict[key] = ("failed", f"top-1 {top1:.2f}% vs {ref_top1:.2f}% on {where} "
                                              f"(drop {drop:.2f} points, allowed {max_drop:g})")
        return verdict[key]

    for key in results:
        judge(key)
    return verdict


def max_abs_diff(results: dict[Key, Accuracy], key: Key) -> float | None:
    """Largest |logit difference| against the same model's PyTorch FP32 logits, when measured."""
    reference = results.get((key[0], "torch", "fp32"))
    if reference is None:
        return None
    return float((results[key].logits - reference.logits).abs().max())
