"""``cakd prepare``: validate the dataset once and write the manifest every later stage reads."""

from __future__ import annotations

from pathlib import Path

from pipeline.data import prepare_data
from pipeline.params import Params
from pipeline.ui import console


def run(params: Params, out_dir: Path) -> dict:
    manifest = prepare_data(params.data, params.seed, out_dir)
    counts = ", ".join(f"{split} {n}" for split, n in manifest["counts"].items())
    console.print(f"{params.data.name}: {manifest['num_classes']} classes, {counts} images "
                  f"-> {out_dir / 'manifest.json'}")
    return manifest
