"""The data every gate runs on, built once per command from the manifest: ``cakd export`` gates its artefacts
with it and ``cakd bench-latency`` scores each runtime with its test split (a module of its own, so the bench
reads it without loading the exporter)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ...pipeline.data import build_datasets, load_manifest, resolve_workers, spread_sample
from ...pipeline.reporting import profiling
from ...pipeline.settings.params import Params

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]
EVAL_BATCH = 64


@dataclass
class GateData:
    """The images the gates run on: parity (test images), INT8 calibration (training images) and the INT8
    accuracy gate (the test split). Without the last two no INT8 artefact can be made or gated."""

    parity_images: torch.Tensor
    calib_images: torch.Tensor | None = None
    test_loader: Loader | None = None


def gate_data(params: Params, manifest: Path) -> GateData:
    """Test images for parity, training images for INT8 calibration, the test split for the INT8 gate."""
    with profiling.phase("data"):
        train_ds, test_ds = build_datasets(params.data, load_manifest(manifest), params.seed, train_augment=False)
        return GateData(spread_sample(test_ds, params.export.parity_images),
                        spread_sample(train_ds, params.export.calib_images),
                        DataLoader(test_ds, batch_size=EVAL_BATCH,
                                   num_workers=resolve_workers(params.machine.num_workers, test_ds)))
