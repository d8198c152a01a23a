"""CIFAR-10/100 and Fashion-MNIST through torchvision, held in memory; offline, one line saying where to
put which files."""

from __future__ import annotations

import shutil
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from ..errors import CakdError
from .idx import find_idx, read_idx_split
from .pools import Pools

DATASETS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100,
            "fashion-mnist": datasets.FashionMNIST}
# The IDX files of each split (images, labels), as torchvision names them once unpacked.
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
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
        return f"{files} (from {cls.mirrors[0]}; gzipped, bzip2, xz or plain) into {fashion_raw(root)}/ or {root}/"
    return f"{cls.filename} (from {cls.url}) or its unpacked {cls.base_folder}/ into {root}/"


def fashion_raw(root: Path) -> Path:
    return root / datasets.FashionMNIST.__name__ / "raw"


def download(name: str, root: Path) -> None:
    """One bounded download through torchvision into a temporary folder, moved into ``root`` only when
    complete: a failed attempt leaves nothing inside ``root``."""
    cls = DATASETS[name]
    with tempfile.TemporaryDirectory(prefix="cakd-download-") as tmp:
        try:
            with socket_timeout(DOWNLOAD_TIMEOUT_S):
                for train in (True, False):
                    cls(tmp, train=train, download=True)
        except (OSError, RuntimeError) as err:
            reason = " ".join(str(err).split())
            raise CakdError(f"{name} is not in {root} and could not be downloaded ({reason}); "
                            f"put {expected_files(name, root)}") from None
        try:
            root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(tmp, root, dirs_exist_ok=True)
        except OSError as err:
            raise CakdError(f"{name} was downloaded but cannot be stored in {root} ({err.strerror}); "
                            "set data.root to a folder you can write") from None


def local_archives(name: str, root: Path) -> list[Path]:
    """``cifar-10-python.tar.gz`` and its re-compressed forms (``.tar``, ``.tar.xz``, ``.tar.bz2``, ``.tgz``...)."""
    stem = DATASETS[name].filename.split(".tar")[0]
    return sorted(p for p in root.glob(f"{stem}.t*") if p.is_file())


def unpack_archive(name: str, root: Path, archive: Path) -> None:
    """The archive a user has, in any tar compression, judged by its content, not its own checksum (which
    re-compression changes): unpacked into a temporary folder, kept only if every unpacked file matches
    torchvision's checksum for it, then moved into ``root`` in one rename."""
    cls = DATASETS[name]
    expected = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    try:
        with tempfile.TemporaryDirectory(prefix=".cakd-unpack-", dir=root) as tmp:
            with tarfile.open(archive) as tar:  # detects gzip, bzip2, xz or none
                tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            unpacked = Path(tmp) / cls.base_folder
            if not all(check_integrity(str(unpacked / fname), md5) for fname, md5 in expected):
                raise CakdError(f"{archive} unpacks, but not into {name}'s files: {cls.base_folder}/ is missing "
                                f"or its files differ from torchvision's checksums")
            unpacked.rename(root / cls.base_folder)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CakdError(f"{archive} cannot be unpacked into {root} ({type(err).__name__}: {err})") from None


def open_split(name: str, root: Path, train: bool) -> datasets.VisionDataset:
    """CIFAR: the unpacked files if torchvision accepts them; else an archive of them the user has; else one
    download, bounded in time."""
    cls = DATASETS[name]
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # not on disk yet (torchvision's "Dataset not found" error)
    archives = local_archives(name, root) if root.is_dir() and not (root / cls.base_folder).exists() else []
    if archives:
        unpack_archive(name, root, archives[0])
    else:
        download(name, root)
    return cls(str(root), train=train, download=False)


def fashion_folder(root: Path) -> Path | None:
    """torchvision's place for the files (``root/FashionMNIST/raw``), or ``root`` itself if they are there
    (e.g. ``data.root: /usr/share/datasets/fashion-mnist`` from Debian's package)."""
    for folder in (fashion_raw(root), root):
        if any(find_idx(folder, stem) for pair in FASHION_FILES.values() for stem in pair):
            return folder
    return None


def load_fashion_mnist(root: Path) -> Pools:
    """The four IDX files, in any compression, checked by content; downloaded only if none is there."""
    folder = fashion_folder(root)
    if folder is None:
        download("fashion-mnist", root)
        folder = fashion_raw(root)
    classes = list(datasets.FashionMNIST.classes)
    images, labels = {}, {}
    for split, (images_stem, labels_stem) in FASHION_FILES.items():
        images[split], labels[split] = read_idx_split(folder, images_stem, labels_stem, 28, len(classes))
    return Pools(classes=classes, images=images, labels=labels)


def load_torchvision(name: str, root: str | Path) -> Pools:
    """Both splits as uint8 ``NxCxHxW`` tensors (C = 3 for CIFAR, 1 for Fashion-MNIST)."""
    root = Path(root).expanduser()
    if name == "fashion-mnist":
        return load_fashion_mnist(root)
    images, labels = {}, {}
    for split in ("train", "test"):
        ds = open_split(name, root, train=split == "train")
        images[split] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NxHxWx3 numpy
        labels[split] = torch.as_tensor(ds.targets, dtype=torch.int64)
        classes = list(ds.classes)
    return Pools(classes=classes, images=images, labels=labels)
