"""The user's own images: ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``root/test/``).

Scanning uses torchvision's ImageFolder helpers; every selected file is fully decoded once here, so a
corrupt one is reported (or skipped and counted) before training, never deep in a DataLoader worker.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

from ..errors import CakdError
from ..settings.params import DataParams
from .datasets import read_image
from .stats import ChannelStats
from .subset import class_orders
from .transforms import eval_geometry

EVAL_DIRS = ("val", "test")  # first one present is the test split


def split_dirs(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise CakdError(f"data.root {root} is not a folder")
    train = root / "train"
    if not train.is_dir():
        raise CakdError(f"no train/ folder in {root} (expected {root}/train/<class>/<image>)")
    for name in EVAL_DIRS:
        if (root / name).is_dir():
            return {"train": train, "test": root / name}
    raise CakdError(f"{root} has train/ but neither val/ nor test/ (expected {root}/val/<class>/<image>)")


def class_folders(directory: Path) -> list[str]:
    try:
        classes = find_classes(directory)[0]
    except FileNotFoundError:
        raise CakdError(f"no class folders in {directory} (expected {directory}/<class>/<image>)") from None
    for name in classes:
        utf8_name(directory / name, "class folder")
    return classes


def utf8_name(path: Path, what: str) -> str:
    """``path`` as text; a name that is not UTF-8 would fail deep in hashing or JSON: one line naming it."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise CakdError(f"{what} {path} has a name that is not UTF-8 text: rename it") from None
    return str(path)


def image_files(directory: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """torchvision's ``make_dataset`` order (classes sorted, then folders, then files), following symlinked
    folders but entering each real folder once: a symlink to a parent folder would make the walk endless."""
    items = []
    for name in sorted(class_to_idx):
        seen: set[tuple[int, int]] = set()
        walked = []
        for root, dirs, files in os.walk(directory / name, followlinks=True):
            info = os.stat(root)
            if (info.st_dev, info.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((info.st_dev, info.st_ino))
            walked.append((root, files))
        for root, files in sorted(walked):
            items += [(utf8_name(Path(root) / f, "image file"), class_to_idx[name]) for f in sorted(files)
                      if has_file_allowed_extension(f, IMG_EXTENSIONS)]
    return items


def scan(root: Path) -> tuple[list[str], dict[str, Path], dict[str, list[tuple[str, int]]]]:
    """Classes (from train/), the split folders, and every image file per split.

    Both splits must have the same class folders, none of them without images.
    """
    dirs = split_dirs(root)
    classes = class_folders(dirs["train"])
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples = {}
    for split, directory in dirs.items():
        found = class_folders(directory)
        if found != classes:
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise CakdError(f"{directory} and {dirs['train']} must have the same class folders "
                            f"(missing: {', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'})")
        items = image_files(directory, class_to_idx)
        counts = Counter(label for _, label in items)
        empty = [name for name in classes if counts[class_to_idx[name]] == 0]
        if empty:
            raise CakdError(f"class folder {directory / empty[0]} has no images ({' '.join(IMG_EXTENSIONS)})")
        samples[split] = items
    return classes, dirs, samples


def select(cfg: DataParams, split: str, directory: Path, classes: list[str], items: list[tuple[str, int]],
           seed: int, stats: ChannelStats | None) -> tuple[list[list], list[str], list[str]]:
    """Walk each class in subset order, decoding files until it has ``per_class`` readable ones (or all).

    Returns the kept ``[relative path, label]`` pairs in scan order with their sha256 digests, and the
    skipped relative paths. Kept training images are also measured into ``stats`` at ``img_size``.
    """
    root = directory.parent
    per_class = cfg.train_per_class if split == "train" else cfg.test_per_class
    geometry = eval_geometry(cfg.img_size)
    kept: dict[int, tuple[str, str]] = {}  # position in items -> (relative path, digest)
    skipped = []
    orders = class_orders([label for _, label in items], len(classes), per_class, seed, split)
    for name, order in zip(classes, orders, strict=True):
        taken = 0
        for pos in order:
            if per_class and taken == per_class:
                break
            path = Path(items[pos][0])
            rel = path.relative_to(root).as_posix()
            try:
                image, data = read_image(path)
            except CakdError:
                if cfg.on_corrupt == "error":
                    raise
                skipped.append(rel)
                continue
            if stats is not None:
                if image.size != (cfg.img_size, cfg.img_size):  # the geometry would only copy it
                    image = geometry(image)
                stats.add(torch.from_numpy(np.array(image)))
            kept[pos] = rel, hashlib.sha256(data).hexdigest()
            taken += 1
        if taken == 0:
            raise CakdError(f"class folder {directory / name} has no readable images")
    positions = sorted(kept)
    return [[kept[p][0], items[p][1]] for p in positions], [kept[p][1] for p in positions], skipped


def prepare_imagefolder(cfg: DataParams, seed: int) -> tuple[dict, dict[str, list[int]]]:
    """The manifest body (classes, selected files with labels, mean/std, skipped files, content hash)
    and the labels per split."""
    root = Path(cfg.root).expanduser()
    classes, dirs, samples = scan(root)
    stats = ChannelStats()
    digest = hashlib.sha256()
    splits, skipped = {}, []
    for split, items in samples.items():
        files, digests, split_skipped = select(cfg, split, dirs[split], classes, items, seed,
                                               stats if split == "train" else None)
        for (rel, label), file_digest in zip(files, digests, strict=True):
            digest.update(f"{split}\t{rel}\t{label}\t{file_digest}\n".encode())
        splits[split] = {"files": files}
        skipped += split_skipped
    mean, std = stats.mean_std()
    body = {"classes": classes, "splits": splits, "mean": mean, "std": std,
            "content_hash": "sha256:" + digest.hexdigest(),
            "skipped": {"count": len(skipped), "files": skipped}}
    return body, {split: [label for _, label in part["files"]] for split, part in splits.items()}
