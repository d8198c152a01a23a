"""torchvision sets: a tiny Fashion-MNIST in the real IDX format read by torchvision, and the offline message."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from torchvision import datasets

from pipeline.data import build_datasets, prepare_data
from pipeline.errors import CakdError
from pipeline.params import DataParams

torch.set_num_threads(2)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST file format: magic (ubyte, ndim), big-endian dims, then the raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_fashion_mnist(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def host_resolves(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, 443)
    except OSError:
        return False
    return True


def test_fashion_mnist_files_on_disk_are_prepared_and_loaded(tmp_path: Path) -> None:
    tiny_fashion_mnist(tmp_path)
    cfg = DataParams(name="fashion-mnist", root=str(tmp_path), img_size=16, train_per_class=3)
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path / "out")

    assert manifest["classes"] == datasets.FashionMNIST.classes
    assert manifest["class_counts"] == {"train": [3] * 10, "test": [2] * 10}
    assert 0.4 < manifest["mean"][0] < 0.6 and manifest["mean"][0] == manifest["mean"][2]
    train, test = build_datasets(cfg, manifest, seed=0)
    assert (len(train), len(test)) == (30, 20)
    image, label = test[13]
    assert image.shape == (3, 16, 16) and label == 3


@pytest.mark.skipif(host_resolves(datasets.CIFAR10.url) or host_resolves(datasets.FashionMNIST.mirrors[0]),
                    reason="the dataset hosts are reachable here: this test is about a machine without network")
@pytest.mark.parametrize(("name", "wanted"), [
    ("cifar10", r"put cifar-10-python\.tar\.gz \(from http\S+\) or its unpacked cifar-10-batches-py/ into "),
    ("cifar100", r"put cifar-100-python\.tar\.gz \(from http\S+\) or its unpacked cifar-100-python/ into "),
    ("fashion-mnist", r"put train-images-idx3-ubyte\.gz, .*t10k-labels-idx1-ubyte\.gz \(from http\S+\) into "
                      r".*FashionMNIST/raw/"),
])
def test_offline_the_message_says_where_to_put_which_files(tmp_path: Path, name: str, wanted: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CakdError, match=rf"{name} is not in {tmp_path} and could not be downloaded .*{wanted}") as err:
        prepare_data(DataParams(name=name, root=str(tmp_path)), seed=0, out_dir=tmp_path / "out")
    assert time.perf_counter() - start < 10
    assert "\n" not in str(err.value)
    assert socket.getdefaulttimeout() is None  # the download timeout does not leak into the process
