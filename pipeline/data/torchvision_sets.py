"""CIFAR-10/100 and Fashion-MNIST through torchvision, held in memory; offline, one line saying where to
put which files."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from pipeline.data.pools import Pools
from pipeline.errors import CakdError

DATASETS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100,
            "fashion-mnist": datasets.FashionMNIST}
# A closed network may drop packets instead of refusing: never wait longer than this for one socket operation.
DOWNLOAD_TIMEOUT_S = 20.0


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's downloader opens URLs without a timeout; the process default is the only handle."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def expected_files(name: str, root: Path) -> str:
    """Where torchvision looks, in words: the archive to drop in, or the folder it unpacks to."""
    cls = DATASETS[name]
    if name == "fashion-mnist":
        files = ", ".join(fname for fname, _ in cls.resources)
        return f"{files} (from {cls.mirrors[0]}) into {root / cls.__name__ / 'raw'}/"
    return f"{cls.filename} (from {cls.url}) or its unpacked {cls.base_folder}/ into {root}/"


def open_split(name: str, root: Path, train: bool) -> datasets.VisionDataset:
    """Use the files on disk if they are there; otherwise try one download, bounded in time."""
    cls = DATASETS[name]
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # not on disk yet (torchvision's "Dataset not found" error)
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            return cls(str(root), train=train, download=True)
    except (OSError, RuntimeError) as err:
        reason = " ".join(str(err).split())
        raise CakdError(f"{name} is not in {root} and could not be downloaded ({reason}); "
                        f"put {expected_files(name, root)}") from None


def load_torchvision(name: str, root: str | Path) -> Pools:
    """Both splits as uint8 ``NxCxHxW`` tensors (C = 3 for CIFAR, 1 for Fashion-MNIST)."""
    images, labels = {}, {}
    for split in ("train", "test"):
        ds = open_split(name, Path(root).expanduser(), train=split == "train")
        data = ds.data
        if isinstance(data, np.ndarray):  # CIFAR: NxHxWx3 numpy
            images[split] = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
        else:  # MNIST family: NxHxW tensor
            images[split] = data.unsqueeze(1)
        labels[split] = torch.as_tensor(ds.targets, dtype=torch.int64)
        classes = list(ds.classes)
    return Pools(classes=classes, images=images, labels=labels)
