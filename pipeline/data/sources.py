"""The in-memory sources by name: digits (bundled) and the torchvision sets."""

from __future__ import annotations

from pipeline.data.digits import load_digits
from pipeline.data.pools import Pools
from pipeline.data.torchvision_sets import load_torchvision
from pipeline.params import DataParams


def load_pools(cfg: DataParams) -> Pools:
    return load_digits() if cfg.name == "digits" else load_torchvision(cfg.name, cfg.root)
