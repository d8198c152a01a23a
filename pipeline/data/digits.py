"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, offline on any machine."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import CakdError
from .pools import Pools


def bundled_digits_file() -> Path:
    """The CSV that ``sklearn.datasets.load_digits`` reads, found without importing scikit-learn: every
    stage loads the digits, and importing scikit-learn costs each of them about a second."""
    spec = importlib.util.find_spec("sklearn")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def load_digits() -> Pools:
    """One pool (grey ``1x8x8`` uint8) serving both splits; the split itself is stored in the manifest."""
    try:
        with gzip.open(bundled_digits_file(), "rt") as rows:
            table = np.loadtxt(rows, delimiter=",")  # 64 pixel columns (0..16), then the label
    except (OSError, ValueError) as err:
        raise CakdError(f"scikit-learn's bundled digits cannot be read ({err}); reinstall scikit-learn") from None
    # pixel values are 0..16: stretch to 0..255 so the usual uint8 image pipeline applies
    pixels = np.rint(table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return Pools(classes=[str(c) for c in range(10)], images={"train": images, "test": images},
                 labels={"train": labels, "test": labels})


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Fixed by ``seed``: every class keeps ``test_fraction`` of its images in the test split."""
    from sklearn.model_selection import train_test_split  # only `cakd prepare` splits

    positions = np.arange(len(labels))
    train, test = train_test_split(positions, test_size=test_fraction, stratify=labels.numpy(),
                                   random_state=seed)
    return {"train": sorted(train.tolist()), "test": sorted(test.tolist())}
