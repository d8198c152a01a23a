"""Does the bundle's runner (numpy + Pillow, no torch) feed the model what cakd's torchvision path does? (issue 31)

    tar xzf ../shared/data/cifar10-jpg.tar.gz -C /tmp
    python benchmarks/bundle_preprocessing.py --data-root /tmp/cifar10-jpg --size 24 \\
        --out benchmarks/results/bundle_preprocessing.json

For every test image of the image folder at ``--size`` px (CIFAR-10 is 32 px: 24 shrinks it, antialiased) and
every test image of the digits (8 px, upscaled to ``--digits-size``), it compares ``run.py``'s input tensor
with the one ``cakd evaluate`` builds, in the [0, 255] scale: the runner passes when no value differs by more
than 1 (a rounding step).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cakd.export.bundle import run as runner
from cakd.pipeline.data import build_datasets, prepare_data
from cakd.pipeline.data.digits import load_digits
from cakd.pipeline.settings.params import DataParams


def pre(size: int, manifest: dict) -> dict:
    return {"resize": {"shorter_side": size, "interpolation": "bilinear"}, "crop": {"size": size}, "scale": 1 / 255,
            "mean": manifest["mean"], "std": manifest["std"], "colour_order": "RGB"}


def compare(ours: np.ndarray, theirs: np.ndarray, std: list[float]) -> dict:
    """Differences in the [0, 255] scale (the normalised values times std times 255)."""
    diff = np.abs(ours - theirs) * np.asarray(std, np.float32).reshape(1, -1, 1, 1) * 255
    per_image = diff.reshape(len(diff), -1).max(1)
    return {"images": len(diff), "max_diff_255": float(diff.max()), "mean_diff_255": float(diff.mean()),
            "values_off_by_more_than_0.5": int((diff > 0.5).sum()), "values": int(diff.size),
            "images_within_1_255": int((per_image <= 1 + 1e-3).sum()), "passed": bool(diff.max() <= 1 + 1e-3)}


def folder_case(root: Path, size: int, work: Path, batch: int = 500) -> dict:
    cfg = DataParams(name="imagefolder", root=str(root), img_size=size, train_per_class=10)
    manifest = prepare_data(cfg, 0, work / "folder")
    _, test_ds = build_datasets(cfg, manifest, 0, train_augment=False)
    worst: list[dict] = []
    for start in range(0, len(test_ds), batch):
        idx = range(start, min(start + batch, len(test_ds)))
        ours = runner.preprocess_files([test_ds.root / test_ds.paths[i] for i in idx], pre(size, manifest))
        theirs = torch.stack([test_ds[i][0] for i in idx]).numpy()
        worst.append(compare(ours, theirs, manifest["std"]))
    total = {key: sum(w[key] for w in worst) for key in ("images", "values_off_by_more_than_0.5", "values",
                                                          "images_within_1_255")}
    return {"source": str(root), "size": size, **total, "max_diff_255": max(w["max_diff_255"] for w in worst),
            "passed": all(w["passed"] for w in worst)}


def digits_case(size: int, work: Path) -> dict:
    cfg = DataParams(name="digits", img_size=size)
    manifest = prepare_data(cfg, 0, work / "digits")
    _, test_ds = build_datasets(cfg, manifest, 0, train_augment=False)
    files = []
    for i, image in enumerate(load_digits().images["test"][manifest["splits"]["test"]["indices"]]):
        files.append(work / f"digit{i}.png")
        Image.fromarray(image[0].numpy(), mode="L").save(files[-1])
    ours = runner.preprocess_files(files, pre(size, manifest))
    theirs = torch.stack([test_ds[i][0] for i in range(len(test_ds))]).numpy()
    return {"source": "digits", "size": size, **compare(ours, theirs, manifest["std"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="an image folder (train/, test/ or val/)")
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--digits-size", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bundle_preprocessing.json"))
    args = parser.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory() as work:
        cases = [folder_case(args.data_root.expanduser(), args.size, Path(work)),
                 digits_case(args.digits_size, Path(work))]
    result = {"cases": cases, "seconds": round(time.time() - start, 1), "interpolation": "bilinear (antialiased)"}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if all(c["passed"] for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
