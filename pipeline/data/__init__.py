"""Data: one interface over digits (bundled), an image folder and torchvision sets, chosen by ``data.name``.

``prepare_data`` selects, validates and measures the data once and writes manifest.json;
``build_datasets`` rebuilds the train/test datasets from it; ``build_mixup`` gives timm's Mixup or None.
"""

from .build import build_datasets, spread_sample
from .loading import resolve_workers
from .manifest import load_manifest
from .mixup import build_mixup
from .prepare import prepare_data
from .sources import available_sources

__all__ = ["available_sources", "build_datasets", "build_mixup", "load_manifest", "prepare_data", "resolve_workers",
           "spread_sample"]
