"""torchvision v2 pipelines: one geometry shared by eval and the mean/std pass, augmentation on top."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from ..settings.params import DataParams


def eval_geometry(img_size: int) -> v2.Compose:
    """Shorter side to ``img_size`` then a centre square; the manifest's mean/std are measured after it."""
    return v2.Compose([v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size)])


def to_size(images: torch.Tensor, img_size: int) -> torch.Tensor:
    """A uint8 ``NxCxHxW`` batch (C = 1 or 3) through the eval geometry, as ``Nx3xSxS`` uint8."""
    return eval_geometry(img_size)(images).expand(-1, 3, -1, -1)


def build_transform(cfg: DataParams, mean: Sequence[float], std: Sequence[float], train: bool,
                    sized: bool = False) -> v2.Compose:
    """A uint8 ``CxHxW`` tensor (C = 1 or 3, any size) -> normalised float ``3xSxS`` tensor.

    With ``sized`` the input is already ``3xSxS`` (in-memory sources resized once by ``to_size``), and
    per-item work shrinks to the random augmentation plus scaling. Inputs stay plain tensors: v2 ops on
    ``tv_tensors.Image`` cost several times more per call, which a per-item pipeline pays 50k times.
    """
    size = cfg.img_size
    ops: list[v2.Transform] = [] if sized else [v2.RGB()]
    if train and cfg.augment == "random-resized-crop":
        ops.append(v2.RandomResizedCrop(size, antialias=True))
    elif not sized:
        ops.append(eval_geometry(size))
    if train and cfg.augment == "pad-crop":
        ops.append(v2.RandomCrop(size, padding=size // 8))
    if train and cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)
