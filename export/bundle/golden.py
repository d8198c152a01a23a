"""Golden vectors: real test images, spread over the classes, stored as the uint8 image after resizing (so the
target runs its own normalisation), with each artefact's expected logits from its reference runtime and the
tolerance it is held to. ``run.py --self-test`` checks them on the target."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...pipeline.data.datasets import ImageFileDataset
from ...pipeline.files.fileio import file_sha256, write_json
from ...pipeline.settings.params import ExportParams
from ..runtimes.ort_cpu import options, ort_runner
from .run import GOLDEN, normalise

IMAGES, LOGITS, INDEX = "images.npz", "logits.npz", "golden.json"


def spread_over_classes(targets: list[int], count: int) -> list[int]:
    """Up to ``count`` indices taking each class in turn (its first image, then its second...): every class
    appears before any appears twice, whatever order the split is stored in."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(label, []).append(index)
    picked: list[int] = []
    depth = 0
    while len(picked) < min(count, len(targets)):
        picked += [idx[depth] for _, idx in sorted(by_class.items()) if depth < len(idx)][:count - len(picked)]
        depth += 1
    return picked


def as_uint8(dataset: Dataset, indices: list[int], mean: list[float], std: list[float]) -> np.ndarray:
    """The dataset's normalised items back to the uint8 HxWx3 image after resizing (the eval transform is
    ``ToDtype(scale) + Normalize`` after the geometry: affine, so it inverts exactly once rounded)."""
    x = torch.stack([dataset[i][0] for i in indices])
    x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def tolerance(kind: str, cfg: ExportParams, expected: np.ndarray) -> dict:
    """fp32/fp16: the export's parity tolerance on these logits (atol x max(1, max |logit|)); INT8: its
    top-1 agreement threshold."""
    if kind in ("onnx", "onnx-fp16"):
        atol = cfg.atol if kind == "onnx" else cfg.fp16_atol
        return {"kind": "atol", "atol": atol, "allowed": atol * max(1.0, float(np.abs(expected).max()))}
    return {"kind": "agreement", "min_percent": cfg.int8_min_agreement}


def write_golden(folder: Path, doc: dict, dataset: Dataset, count: int, cfg: ExportParams,
                 batch_sizes: list[int]) -> dict:
    """golden/: the images, the originals (image-folder sources), each artefact's expected logits (onnxruntime,
    the reference runtime, on what run.py's normalisation makes of the stored images) and golden.json."""
    out = folder / GOLDEN
    out.mkdir()
    pre = doc["preprocessing"]
    indices = spread_over_classes([int(t) for t in dataset.targets], count)
    images = as_uint8(dataset, indices, pre["mean"], pre["std"])
    labels = [int(dataset.targets[i]) for i in indices]
    x = normalise(images, pre)
    logits, artefacts = {}, {}
    for kind, entry in doc["artefacts"].items():
        logits[kind] = ort_runner(folder / entry["file"], options()).predict(torch.from_numpy(x)).numpy()
        artefacts[kind] = {"file": entry["file"], "sha256": file_sha256(folder / entry["file"]),
                           "tolerance": tolerance(kind, cfg, logits[kind]), "reference_runtime": "onnxruntime",
                           "top1": logits[kind].argmax(1).tolist()}
    _save_npz(out / IMAGES, images=images, labels=np.asarray(labels))
    _save_npz(out / LOGITS, **logits)
    index = {"version": doc["version"], "count": len(images), "images": IMAGES, "logits": LOGITS, "labels": labels,
             "batch_sizes": sorted({1, *batch_sizes}), "preprocessing": pre, "artefacts": artefacts,
             "originals": _copy_originals(dataset, indices, out, doc["classes"])}
    write_json(out / INDEX, index)
    return index


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _copy_originals(dataset: Dataset, indices: list[int], out: Path, classes: list[str]) -> list[str] | None:
    """The source files of the golden images when the dataset is an image folder (None for in-memory sources)."""
    if not isinstance(dataset, ImageFileDataset):
        return None
    (out / "originals").mkdir()
    names = []
    for n, i in enumerate(indices):
        source = dataset.root / dataset.paths[i]
        name = f"originals/{n:02d}_{classes[dataset.targets[i]]}{source.suffix.lower()}"
        shutil.copyfile(source, out / name)
        names.append(name)
    return names
