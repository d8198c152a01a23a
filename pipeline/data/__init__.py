"""Data: one interface over digits (bundled), an image folder and torchvision sets, chosen by ``data.name``.

``prepare_data`` selects, validates and measures the data once and writes manifest.json;
``build_datasets`` rebuilds the train/test datasets from it; ``build_mixup`` gives timm's Mixup or None.
"""

from pipeline.data.build import build_datasets
from pipeline.data.manifest import load_manifest
from pipeline.data.mixup import build_mixup
from pipeline.data.prepare import prepare_data
from pipeline.data.sources import available_sources

__all__ = ["available_sources", "build_datasets", "build_mixup", "load_manifest", "prepare_data"]
