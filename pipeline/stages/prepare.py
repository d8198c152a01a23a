"""``cakd prepare``: validate the dataset once and write the manifest every later stage reads."""

from __future__ import annotations

from pathlib import Path

from ..data import prepare_data
from ..reporting import profiling
from ..reporting.ui import console
from ..settings.params import Params


def run(params: Params, out_dir: Path) -> dict:
    profiling.mark_ready()
    with profiling.phase("data"):
        manifest = prepare_data(params.data, params.seed, out_dir)
    counts = ", ".join(f"{split} {n}" for split, n in manifest["counts"].items())
    console.print(f"{params.data.name}: {manifest['num_classes']} classes, {counts} images "
                  f"-> {out_dir / 'manifest.json'}")
    skipped = manifest.get("skipped", {}).get("files", [])
    if skipped:  # on_corrupt: skip must not hide how much data was left out
        shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        console.print(f"skipped {len(skipped)} unreadable image file{'s' if len(skipped) > 1 else ''} "
                      f"(on_corrupt: skip): {shown}; all are listed in the manifest", markup=False)
    return manifest
