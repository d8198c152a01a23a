"""``cakd prepare``: select and validate the data once, measure it, and record it in manifest.json."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import CakdError
from ..files.fileio import remove_outputs, write_json
from ..settings.params import DataParams
from .digits import stratified_split
from .imagefolder import prepare_imagefolder
from .manifest import selection_params
from .sources import load_pools
from .subset import per_class_subset


def prepare_pools(cfg: DataParams, seed: int) -> tuple[dict, dict[str, list[int]]]:
    """Digits and torchvision sets: the manifest stores indices into the source's own splits."""
    pools = load_pools(cfg)
    if cfg.name == "digits":
        candidates = stratified_split(pools.labels["train"], cfg.test_fraction, seed)
    else:
        candidates = {split: list(range(len(labels))) for split, labels in pools.labels.items()}
    indices = {}
    for split, cand in candidates.items():
        per_class = cfg.train_per_class if split == "train" else cfg.test_per_class
        labels = pools.labels[split][cand].tolist()
        chosen = per_class_subset(labels, len(pools.classes), per_class, seed, split)
        indices[split] = [cand[p] for p in chosen]
    mean, std = pools.channel_stats(indices["train"], cfg.img_size)
    body = {"classes": pools.classes, "mean": mean, "std": std, "content_hash": pools.content_hash(indices),
            "splits": {split: {"indices": idx} for split, idx in indices.items()}}
    return body, {split: pools.labels[split][idx].tolist() for split, idx in indices.items()}


def prepare_data(cfg: DataParams, seed: int, out_dir: Path) -> dict:
    """Scan and validate the source, write ``out_dir/manifest.json`` atomically, and return it.

    An old manifest is removed first: if this run fails, no stale one is left looking fresh.
    """
    path = Path(out_dir) / "manifest.json"
    remove_outputs([path])
    body, labels = prepare_imagefolder(cfg, seed) if cfg.name == "imagefolder" else prepare_pools(cfg, seed)
    num_classes = len(body["classes"])
    if num_classes < 2:  # a model of one class "reaches 100%" by always answering it
        raise CakdError(f"the dataset has {num_classes} class ({', '.join(map(str, body['classes'])) or 'none'}): "
                        "classification needs at least 2")
    manifest = {
        "source": cfg.name,
        "params": selection_params(cfg),
        "seed": seed,
        "img_size": cfg.img_size,
        "classes": body.pop("classes"),
        "num_classes": num_classes,
        "counts": {split: len(lbls) for split, lbls in labels.items()},
        "class_counts": {split: [Counter(lbls)[c] for c in range(num_classes)]
                         for split, lbls in labels.items()},
        **body,
    }
    write_json(path, manifest)
    return manifest
