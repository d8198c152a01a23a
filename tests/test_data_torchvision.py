"""torchvision sets: Fashion-MNIST files written from real digits in the IDX format (compressed in several ways,
not as torchvision's archives), what is said when they are wrong, and the offline message."""

from __future__ import annotations

import bz2
import gzip
import lzma
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision import datasets

from cakd.pipeline.data import build_datasets, prepare_data
from cakd.pipeline.data.torchvision_sets import load_torchvision
from cakd.pipeline.errors import CakdError
from cakd.pipeline.settings.params import DataParams

torch.set_num_threads(2)


def idx_bytes(array: np.ndarray) -> bytes:
    """The MNIST file format: magic (0, 0, ubyte, ndim), big-endian dims, then the raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """Real handwritten digits (scikit-learn's bundled set) at Fashion-MNIST's 28x28, uint8."""
    bunch = load_digits()
    images = [np.asarray(Image.fromarray(np.uint8(img * 255 / 16)).resize((28, 28), Image.BILINEAR))
              for img in bunch.images]
    return np.stack(images), bunch.target.astype(np.uint8)


# How each of the four files is stored: re-compressed gzip (another level than torchvision's), bzip2, xz, plain.
COMPRESSION = {"train-images-idx3-ubyte": (".gz", lambda b: gzip.compress(b, compresslevel=1)),
               "train-labels-idx1-ubyte": (".bz2", bz2.compress),
               "t10k-images-idx3-ubyte": (".xz", lzma.compress),
               "t10k-labels-idx1-ubyte": ("", lambda b: b)}


def write_fashion_files(root: Path, n_train: int = 300, n_test: int = 100,
                        arrays: dict[str, np.ndarray] | None = None, raw: Path | None = None) -> dict[str, Path]:
    """The four IDX files from real digits into ``raw`` (default ``root/FashionMNIST/raw``); ``arrays``
    replaces some contents."""
    images, labels = digits_28()
    contents = {"train-images-idx3-ubyte": images[:n_train], "train-labels-idx1-ubyte": labels[:n_train],
                "t10k-images-idx3-ubyte": images[n_train:n_train + n_test],
                "t10k-labels-idx1-ubyte": labels[n_train:n_train + n_test], **(arrays or {})}
    raw = raw or root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, array in contents.items():
        suffix, compress = COMPRESSION[stem]
        paths[stem] = raw / f"{stem}{suffix}"
        paths[stem].write_bytes(compress(idx_bytes(array)))
    return paths


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def host_resolves(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, 443)
    except OSError:
        return False
    return True


def test_fashion_mnist_files_in_any_compression_are_read_by_content(tmp_path: Path) -> None:
    paths = write_fashion_files(tmp_path)
    assert paths["train-images-idx3-ubyte"].read_bytes()[:2] == b"\x1f\x8b"  # really gzipped
    cfg = DataParams(name="fashion-mnist", root=str(tmp_path), img_size=16, train_per_class=3)
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path / "out")

    assert manifest["classes"] == datasets.FashionMNIST.classes
    images, labels = digits_28()
    assert manifest["counts"] == {"train": 30, "test": 100}
    assert manifest["class_counts"]["test"] == np.bincount(labels[300:400], minlength=10).tolist()
    pools = load_torchvision("fashion-mnist", tmp_path)
    assert torch.equal(pools.images["test"][:, 0], torch.from_numpy(images[300:400]))
    assert pools.labels["train"].tolist() == labels[:300].tolist()
    train, test = build_datasets(cfg, manifest, seed=0)
    image, label = test[13]
    assert (len(train), len(test)) == (30, 100) and image.shape == (3, 16, 16) and label == labels[313]


def test_fashion_mnist_files_directly_in_the_root_are_used_as_they_are(tmp_path: Path) -> None:
    root = tmp_path / "fashion-mnist"  # like Debian's /usr/share/datasets/fashion-mnist
    write_fashion_files(root, raw=root)
    before = tree(root)
    manifest = prepare_data(DataParams(name="fashion-mnist", root=str(root)), seed=0, out_dir=tmp_path / "out")
    assert manifest["counts"] == {"train": 300, "test": 100}
    assert tree(root) == before


@pytest.mark.parametrize(("damage", "wanted"), [
    ("truncated", r"t10k-images-idx3-ubyte\.xz is truncated: its header announces 100x28x28 = 78400 bytes "
                  r"of data, it holds 78399$"),
    ("text", r"train-images-idx3-ubyte\.gz: damaged gzip data \("),
    ("not-idx", r"t10k-labels-idx1-ubyte is not an IDX file \(it starts with 89504e47, expected 00000801\)$"),
    ("size", r"train-images-idx3-ubyte\.gz holds 32x32 images, expected 28x28$"),
    ("count", r"t10k-images-idx3-ubyte\.xz holds 100 images but .*t10k-labels-idx1-ubyte 99 labels$"),
    ("label", r"train-labels-idx1-ubyte\.bz2 has label 10; the set has 10 classes$"),
    ("missing", r"FashionMNIST/raw: missing t10k-labels-idx1-ubyte \(plain, \.gz, \.bz2 or \.xz\)$"),
])
def test_wrong_fashion_mnist_files_say_exactly_what_is_wrong(tmp_path: Path, damage: str, wanted: str) -> None:
    images, labels = digits_28()
    arrays = {"size": {"train-images-idx3-ubyte": np.zeros((300, 32, 32))},
              "count": {"t10k-labels-idx1-ubyte": labels[300:399]},
              "label": {"train-labels-idx1-ubyte": np.full(300, 10)}}.get(damage)
    paths = write_fashion_files(tmp_path, arrays=arrays)
    if damage == "truncated":
        data = lzma.decompress(paths["t10k-images-idx3-ubyte"].read_bytes())
        paths["t10k-images-idx3-ubyte"].write_bytes(lzma.compress(data[:-1]))
    elif damage == "text":
        paths["train-images-idx3-ubyte"].write_bytes(b"\x1f\x8b" + b"<html>Not Found</html>")
    elif damage == "not-idx":
        paths["t10k-labels-idx1-ubyte"].write_bytes(b"\x89PNG\r\n\x1a\n")
    elif damage == "missing":
        paths["t10k-labels-idx1-ubyte"].unlink()
    before = tree(tmp_path)
    with pytest.raises(CakdError, match=wanted) as err:
        prepare_data(DataParams(name="fashion-mnist", root=str(tmp_path)), seed=0, out_dir=tmp_path / "out")
    assert "\n" not in str(err.value)
    assert tree(tmp_path) == before  # nothing downloaded or created next to the user's files


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_a_failed_download_creates_nothing_in_the_data_root(tmp_path: Path, name: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    closed = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused at once
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [closed])
    monkeypatch.setattr(datasets.CIFAR10, "url", closed + datasets.CIFAR10.filename)
    root = tmp_path / "data"
    with pytest.raises(CakdError, match=rf"{name} is not in {root} and could not be downloaded .*; put "):
        prepare_data(DataParams(name=name, root=str(root)), seed=0, out_dir=tmp_path / "out")
    assert not root.exists()


@pytest.mark.skipif(host_resolves(datasets.CIFAR10.url) or host_resolves(datasets.FashionMNIST.mirrors[0]),
                    reason="the dataset hosts are reachable here: this test is about a machine without network")
@pytest.mark.parametrize(("name", "wanted"), [
    ("cifar10", r"put cifar-10-python\.tar\.gz \(from http\S+\) or its unpacked cifar-10-batches-py/ into "),
    ("cifar100", r"put cifar-100-python\.tar\.gz \(from http\S+\) or its unpacked cifar-100-python/ into "),
    ("fashion-mnist", r"put train-images-idx3-ubyte\.gz, .*t10k-labels-idx1-ubyte\.gz \(from http\S+; gzipped, "
                      r"bzip2, xz or plain\) into \S+/FashionMNIST/raw/ or \S+/$"),
])
def test_offline_the_message_says_where_to_put_which_files(tmp_path: Path, name: str, wanted: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CakdError, match=rf"{name} is not in {tmp_path} and could not be downloaded .*{wanted}") as err:
        prepare_data(DataParams(name=name, root=str(tmp_path)), seed=0, out_dir=tmp_path / "out")
    assert time.perf_counter() - start < 10
    assert "\n" not in str(err.value)
    assert socket.getdefaulttimeout() is None  # the download timeout does not leak into the process


def cifar_files(folder: Path, monkeypatch: pytest.MonkeyPatch, per_batch: int = 20) -> np.ndarray:
    """CIFAR-10's python layout (five train batches, one test batch, batches.meta) holding real digits; the
    checksums torchvision checks the unpacked files against are set to these files' own (the real ones
    hold the real CIFAR bytes, which a test cannot ship)."""
    import hashlib
    import pickle

    images, labels = digits_28()
    rgb = np.repeat(np.stack([np.pad(im, 2) for im in images])[:, None], 3, axis=1)  # 32x32, 3 channels
    base = folder / datasets.CIFAR10.base_folder
    base.mkdir(parents=True)
    names = [name for name, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list]
    for i, name in enumerate(names):
        chunk = slice(i * per_batch, (i + 1) * per_batch)
        batch = {"data": rgb[chunk].reshape(per_batch, -1), "labels": labels[chunk].tolist()}
        (base / name).write_bytes(pickle.dumps(batch))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(c) for c in range(10)]}))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in base.iterdir()}
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[n, md5[n]] for n, _ in datasets.CIFAR10.train_list])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [[n, md5[n]] for n, _ in datasets.CIFAR10.test_list])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": md5["batches.meta"]})
    return rgb[: len(names) * per_batch]


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.xz", ".tar"])
def test_a_cifar_archive_in_any_tar_compression_is_unpacked_and_checked_by_content(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    import tarfile

    rgb = cifar_files(tmp_path / "made", monkeypatch)
    root = tmp_path / "data"
    root.mkdir()
    mode = "w" + {".tar.gz": ":gz", ".tar.xz": ":xz", ".tar": ""}[suffix]
    with tarfile.open(root / f"cifar-10-python{suffix}", mode) as tar:
        tar.add(tmp_path / "made" / datasets.CIFAR10.base_folder, arcname=datasets.CIFAR10.base_folder)

    pools = load_torchvision("cifar10", root)

    assert pools.images["train"].shape == (100, 3, 32, 32) and pools.images["test"].shape == (20, 3, 32, 32)
    assert torch.equal(pools.images["train"], torch.from_numpy(rgb[:100]))
    assert sorted(p.name for p in root.iterdir()) == [datasets.CIFAR10.base_folder, f"cifar-10-python{suffix}"]


def test_an_archive_with_other_files_is_refused_in_one_line_leaving_the_root_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tarfile

    cifar_files(tmp_path / "made", monkeypatch)
    (tmp_path / "made" / datasets.CIFAR10.base_folder / "data_batch_3").write_bytes(b"not the batch")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "made" / datasets.CIFAR10.base_folder, arcname=datasets.CIFAR10.base_folder)

    with pytest.raises(CakdError, match=r"cifar-10-python\.tar\.gz unpacks, but not into cifar10's files") as err:
        load_torchvision("cifar10", root)
    assert "\n" not in str(err.value)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]
