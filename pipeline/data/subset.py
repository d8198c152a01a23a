"""Which items of each class a split keeps: all, or a fixed seeded sample (same seed, same subset)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLIT_IDS = {"train": 0, "test": 1}


def class_orders(labels: Sequence[int], num_classes: int, per_class: int, seed: int,
                 split: str) -> list[list[int]]:
    """For each class, the positions of its items in the order they are taken.

    ``per_class == 0`` keeps the original order (everything is taken); otherwise each class is shuffled
    by a generator seeded with ``(seed, split)``, so train and test subsets are drawn independently.
    Callers take items from the front until they have ``per_class`` usable ones.
    """
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    labels = np.asarray(labels)
    orders = []
    for c in range(num_classes):
        positions = np.flatnonzero(labels == c)
        orders.append((rng.permutation(positions) if per_class else positions).tolist())
    return orders


def per_class_subset(labels: Sequence[int], num_classes: int, per_class: int, seed: int,
                     split: str) -> list[int]:
    """Sorted positions of at most ``per_class`` items per class (all items when ``per_class == 0``)."""
    orders = class_orders(labels, num_classes, per_class, seed, split)
    return sorted(p for order in orders for p in (order[:per_class] if per_class else order))
