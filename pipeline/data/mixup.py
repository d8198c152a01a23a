"""Batch-level mixup / cutmix / label smoothing, from timm."""

from __future__ import annotations

from timm.data import Mixup

from ..settings.params import DataParams


def build_mixup(cfg: DataParams, num_classes: int) -> Mixup | None:
    """None when all three are off; otherwise a timm ``Mixup`` returning soft targets.

    With label smoothing alone, mixing probability is 0 (timm's Mixup refuses alpha 0 for both while
    mixing is on) and only the targets are smoothed. Batches must have an even size (timm mixes a batch
    with its reverse), so the train loader should drop its last batch.
    """
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    if not mixing and cfg.label_smoothing == 0:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=1.0 if mixing else 0.0,
                 label_smoothing=cfg.label_smoothing, num_classes=num_classes)
