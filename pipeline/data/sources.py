"""The data sources by name: digits (bundled), an image folder, and the torchvision sets."""

from __future__ import annotations

from ..settings.params import DataParams
from .digits import load_digits
from .pools import Pools
from .torchvision_sets import DATASETS, load_torchvision


def available_sources() -> list[str]:
    """Every ``data.name`` cakd can read (params.yaml is validated against this list)."""
    return ["digits", "imagefolder", *DATASETS]


def load_pools(cfg: DataParams) -> Pools:
    return load_digits() if cfg.name == "digits" else load_torchvision(cfg.name, cfg.root)
