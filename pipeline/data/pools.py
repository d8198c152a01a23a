"""Sources small enough to hold in memory as uint8 tensors (digits, CIFAR, Fashion-MNIST)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .stats import ChannelStats
from .transforms import to_size


@dataclass
class Pools:
    """Per split, every image of the source (uint8 ``NxCxHxW``, C = 1 or 3) and its label.

    The manifest's indices say which of them a split uses, so later stages rebuild exactly what
    ``prepare`` selected without any random state.
    """

    classes: list[str]
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]

    def content_hash(self, indices: dict[str, list[int]]) -> str:
        digest = hashlib.sha256()
        for split in ("train", "test"):
            idx = torch.tensor(indices[split], dtype=torch.int64)
            digest.update(self.images[split][idx].contiguous().numpy().tobytes())
            digest.update(self.labels[split][idx].numpy().tobytes())
        return "sha256:" + digest.hexdigest()

    def channel_stats(self, indices: list[int], img_size: int,
                      chunk: int = 512) -> tuple[list[float], list[float]]:
        """Mean/std of the selected training images at ``img_size``, as the eval transform sees them."""
        stats = ChannelStats()
        images = self.images["train"]
        for start in range(0, len(indices), chunk):
            stats.add(to_size(images[indices[start:start + chunk]], img_size).movedim(1, -1))
        return stats.mean_std()
