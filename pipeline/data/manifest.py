"""manifest.json: what ``prepare`` selected, so later stages neither re-scan nor re-draw the split."""

from __future__ import annotations

from pathlib import Path

from ..errors import CakdError
from ..files.reports import read_manifest
from ..settings.params import DataParams

# The data params that change which images are selected or how they are measured, per source; a manifest
# made under other values is stale. Augmentation and mixup are applied later and are not listed.
SELECTION_KEYS = {
    "digits": ("name", "img_size", "test_fraction", "train_per_class", "test_per_class"),
    "imagefolder": ("name", "root", "img_size", "train_per_class", "test_per_class", "on_corrupt"),
}
TORCHVISION_KEYS = ("name", "root", "img_size", "train_per_class", "test_per_class")


def selection_params(cfg: DataParams) -> dict:
    return cfg.model_dump(include=set(SELECTION_KEYS.get(cfg.name, TORCHVISION_KEYS)))


def load_manifest(path: Path) -> dict:
    """Read and shape-check a manifest (``files.reports.Manifest``); anything missing or malformed is one line
    asking to re-prepare."""
    return read_manifest(Path(path))


def check_manifest(manifest: dict, cfg: DataParams) -> None:
    """A manifest prepared under other data params would silently train on the wrong images."""
    for key, value in selection_params(cfg).items():
        old = manifest["params"].get(key)
        if old != value:
            raise CakdError(f"the data manifest was prepared with data.{key}={old!r}, "
                            f"params now say {value!r}: re-run `cakd prepare`")
