"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, offline on any machine."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.model_selection import train_test_split

from pipeline.data.pools import Pools


def load_digits() -> Pools:
    """One pool (grey ``1x8x8`` uint8) serving both splits; the split itself is stored in the manifest."""
    bunch = sklearn_digits()
    # pixel values are 0..16: stretch to 0..255 so the usual uint8 image pipeline applies
    images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return Pools(classes=[str(c) for c in bunch.target_names], images={"train": images, "test": images},
                 labels={"train": labels, "test": labels})


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Fixed by ``seed``: every class keeps ``test_fraction`` of its images in the test split."""
    positions = np.arange(len(labels))
    train, test = train_test_split(positions, test_size=test_fraction, stratify=labels.numpy(),
                                   random_state=seed)
    return {"train": sorted(train.tolist()), "test": sorted(test.tolist())}
