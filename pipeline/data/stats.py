"""Per-channel mean/std of the training split, summed exactly in integers one image or chunk at a time."""

from __future__ import annotations

import math

import torch

from ..errors import CakdError


class ChannelStats:
    """Running sums over uint8 channels-last pixels (``...xC``); nothing is kept but six integers."""

    def __init__(self, channels: int = 3) -> None:
        self.total = torch.zeros(channels, dtype=torch.int64)
        self.squares = torch.zeros(channels, dtype=torch.int64)
        self.pixels = 0

    def add(self, pixels: torch.Tensor) -> None:
        x = pixels.reshape(-1, pixels.shape[-1]).to(torch.int64)
        self.total += x.sum(dim=0)
        self.squares += (x * x).sum(dim=0)
        self.pixels += x.shape[0]

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Mean and std in the [0, 1] scale that ``ToDtype(scale=True)`` produces."""
        if self.pixels == 0:
            raise CakdError("no training images to compute the mean/std from")
        n = self.pixels * 255.0
        mean = [t / n for t in self.total.tolist()]
        var = [s / (n * 255.0) - m * m for s, m in zip(self.squares.tolist(), mean, strict=True)]
        std = [math.sqrt(max(v, 0.0)) for v in var]
        if min(std) == 0.0:
            raise CakdError("the training images are constant in at least one channel (std 0)")
        return mean, std
