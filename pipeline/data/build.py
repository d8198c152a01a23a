"""Datasets for training and evaluation, rebuilt exactly from the manifest (no re-scan, no re-draw)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import CakdError
from ..settings.params import DataParams
from .datasets import ImageFileDataset, TensorImageDataset
from .manifest import check_manifest
from .pools import Pools
from .sources import load_pools
from .transforms import build_transform, to_size

# In-memory sources are resized once up front when the result stays below this; larger ones (e.g. CIFAR
# at 224 px, ~9 GB) are resized per item instead.
PRESIZE_BYTES = 1 << 30


def pool_dataset(cfg: DataParams, pools: Pools, split: str, indices: list[int], mean: list[float],
                 std: list[float], train: bool) -> TensorImageDataset:
    size = len(pools.images[split])
    if indices and max(indices) >= size:  # the schema checked they are integers >= 0
        raise CakdError(f"the data manifest's '{split}' split has index {max(indices)}, but {cfg.name}'s {split} "
                        f"split has {size} images: re-run `cakd prepare`")
    images, labels = pools.images[split][indices], pools.labels[split][indices]
    sized = len(indices) * 3 * cfg.img_size ** 2 <= PRESIZE_BYTES
    if sized:
        images = to_size(images, cfg.img_size).contiguous()
    return TensorImageDataset(images, labels, build_transform(cfg, mean, std, train, sized=sized), presized=sized)


def build_datasets(cfg: DataParams, manifest: dict, seed: int,
                   train_augment: bool = True) -> tuple[Dataset, Dataset]:
    """(train, test); items are ``(normalised float 3xHxW tensor, int label)``.

    The split and subset are fixed by the manifest, whatever ``seed`` a training run uses: runs with
    different seeds compare on the same images. ``train_augment=False`` gives the training split the
    eval transform (e.g. for calibration or feature statistics).
    """
    check_manifest(manifest, cfg)
    mean, std, splits = manifest["mean"], manifest["std"], manifest["splits"]
    augment = {"train": train_augment, "test": False}
    if cfg.name == "imagefolder":
        root = Path(cfg.root).expanduser()
        return tuple(ImageFileDataset(root, [(rel, label) for rel, label in splits[s]["files"]],
                                      build_transform(cfg, mean, std, augment[s])) for s in ("train", "test"))
    pools = load_pools(cfg)
    return tuple(pool_dataset(cfg, pools, s, splits[s]["indices"], mean, std, augment[s])
                 for s in ("train", "test"))


def spread_sample(dataset: Dataset, count: int) -> torch.Tensor:
    """``count`` images at evenly spaced indices: deterministic, and covering every class even when the split
    is stored class by class (parity and calibration images)."""
    n = len(dataset)
    if n == 0:
        raise CakdError("the dataset split is empty")
    indices = torch.linspace(0, n - 1, min(count, n)).round().long().unique()
    return torch.stack([dataset[int(i)][0] for i in indices])
