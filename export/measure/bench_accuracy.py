"""Accuracy of every artefact on every runtime it is timed on, and the rule that marks a result failed.

A fast runtime that computes something else is worse than a slow one: OpenVINO once read an INT8 ONNX with
a dynamic batch axis and returned 26% top-1 where onnxruntime gave 80.7%. So each result is compared with
its reference: the same model, precision and artefact on the runtime its row in the runtime table names
(OpenVINO -> onnxruntime -> PyTorch), or, for a precision the reference runtimes do not run, the model in
FP32 on the deepest reference measured. It fails when it is more than ``max_drop`` top-1 points below it,
or when its reference failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ...pipeline.errors import CakdError
from ...pipeline.reporting.metrics import drop_gate, top1_accuracy
from ..runtimes import RUNTIMES

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]
Key = tuple[str, str, str, str]  # (model label, runtime, precision, artefact)


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


def rebatched(loader: Loader, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's images and labels, in order, in batches of ``batch_size``: a runtime's answers can depend on
    the batch (OpenVINO scored one INT8 file 97.33% at batch 8 and 60.89% at 64), so each batch size a row or a
    gate speaks for is scored at that batch size."""
    pairs = [(x, torch.as_tensor(y)) for x, y in loader]
    if not pairs:
        raise CakdError("the evaluation set is empty")
    images, labels = zip(*pairs, strict=True)
    return list(zip(torch.cat(images).split(batch_size), torch.cat(labels).split(batch_size), strict=True))


def reference_chain(runtime: str) -> list[str]:
    chain, ref = [], RUNTIMES[runtime].reference
    while ref is not None:
        chain.append(ref)
        ref = RUNTIMES[ref].reference
    return chain


def _result_on(measured: set[Key], label: str, runtime: str, precision: str, artefact: str | None) -> Key | None:
    """``label`` on ``runtime`` in ``precision``: the same artefact if that runtime runs it, else the only
    artefact it runs in that precision (PyTorch's checkpoint for an FP32 ONNX)."""
    kinds = RUNTIMES[runtime].consumes.get(precision, ())
    same = artefact if artefact in kinds else (kinds[0] if len(kinds) == 1 else None)
    key = (label, runtime, precision, same)
    return key if same is not None and key in measured else None


def reference_of(key: Key, measured: set[Key]) -> Key | None:
    """What a result is checked against (see the module docstring), if it was measured."""
    label, runtime, precision, artefact = key
    chain = reference_chain(runtime)
    for ref in chain:
        found = _result_on(measured, label, ref, precision, artefact)
        if found is not None:
            return found
    if precision != "fp32":
        for ref in [*reversed(chain), runtime]:
            found = _result_on(measured, label, ref, "fp32", None)
            if found is not None:
                return found
    return None


def check(results: dict[Key, Accuracy], max_drop: float) -> dict[Key, tuple[str, str | None]]:
    """(status, reason) per result: "ok", or "failed" with the comparison that failed."""
    verdict: dict[Key, tuple[str, str | None]] = {}

    def judge(key: Key) -> tuple[str, str | None]:
        if key not in verdict:
            ref = reference_of(key, set(results))
            verdict[key] = ("ok", None)
            if ref is not None:
                ref_status, _ = judge(ref)
                ref_top1, where = results[ref].top1, f"{ref[1]} {ref[2]}"
                why = drop_gate(results[key].top1, ref_top1, max_drop, f"{ref_top1:.2f}% on {where}")
                if ref_status == "failed":
                    verdict[key] = ("failed", f"its reference ({where}) failed")
                elif why is not None:
                    verdict[key] = ("failed", why)
        return verdict[key]

    for key in results:
        judge(key)
    return verdict


def max_abs_diff(results: dict[Key, Accuracy], key: Key) -> float | None:
    """Largest |logit difference| against the same model's FP32 logits on the root reference runtime (the one
    whose row names no reference: PyTorch), when measured."""
    root = reference_chain(key[1])[-1] if RUNTIMES[key[1]].reference else key[1]
    reference = next((acc for k, acc in results.items() if k[:3] == (key[0], root, "fp32")), None)
    if reference is None:
        return None
    return float((results[key].logits - reference.logits).abs().max())
