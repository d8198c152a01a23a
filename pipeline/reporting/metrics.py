"""Classification metrics: top-1 (``top1_hits``, the one definition training, evaluation, export and bench count
with) and the accuracy-drop gate (``drop_gate``, the one rule the INT8 gate and the bench's runtime check apply),
and for reports top-k, per-class accuracy, calibration (ECE), confusion matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import CakdError


def top1_hits(logits: Any, labels: Any) -> int:
    """How many rows' arg-max is their label (torch tensors or numpy arrays): counts, not rates, so that a drop of
    exactly the allowed points passes a gate and per-batch counts add up exactly."""
    return int((logits.argmax(1) == labels).sum())


def drop_gate(top1: float, reference_top1: float, max_drop: float, against: str) -> str | None:
    """Why ``top1`` falls more than ``max_drop`` points below its reference (``against`` names the reference and
    its top-1 in the message), or None when it does not."""
    drop = reference_top1 - top1
    if drop <= max_drop:
        return None
    return f"top-1 {top1:.2f}% vs {against} (drop {drop:.2f} points, allowed {max_drop:g})"


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Softmax probabilities (N, C) and labels (N,) of ``model`` (logits, or (feature, logits)) over ``loader``."""
    model.eval().to(device)
    probs, labels = [], []
    for images, y in loader:
        out = model(images.to(device))
        logits = out[1] if isinstance(out, tuple) else out
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size (in %)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return 100.0 * float(ece)


def classification_report(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Top-1/top-5 (%), per-class top-1 (%), ECE (%) and the confusion matrix (rows = true class)."""
    from sklearn.metrics import confusion_matrix, top_k_accuracy_score  # evaluation only: 1 s to import

    n = len(classes)
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, labels=list(range(n)))
    per_class = {c: (100.0 * cm[i, i] / cm[i].sum() if cm[i].sum() else None) for i, c in enumerate(classes)}
    return {
        "top1": 100.0 * top1_hits(probs, labels) / len(labels),
        "top5": 100.0 * float(top_k_accuracy_score(labels, probs, k=min(5, n), labels=list(range(n)))),
        "ece": expected_calibration_error(probs, labels),
        "per_class_top1": per_class,
        "confusion": cm.tolist(),
    }


def top1_accuracy(predict: Callable[[torch.Tensor], torch.Tensor],
                  loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy in percent over ``(images, labels)`` batches; ``predict`` maps images to logits, so
    one function serves PyTorch models and every exported runtime alike."""
    correct = total = 0
    for images, labels in loader:
        correct += top1_hits(predict(images), torch.as_tensor(labels))
        total += len(labels)
    if total == 0:
        raise CakdError("the evaluation set is empty")
    return 100.0 * correct / total
