"""DataLoaders that keep an accelerator fed without changing what it trains on.

Every training item is augmented under its own seed, drawn in the main process from (epoch seed, dataset
index): the images a step sees, and how they are cropped and flipped, do not depend on how many worker
processes decode them, nor on how many training processes share the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import CakdError
from .datasets import TensorImageDataset

MAX_AUTO_WORKERS = 8  # past this, more decoding processes mostly cost memory (one dataset copy each)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, a container's cpuset), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def decodes_per_item(dataset: Dataset) -> bool:
    """True when an item costs a decode or a resize (image files; in-memory images kept at their own size)."""
    return not (isinstance(dataset, TensorImageDataset) and dataset.presized)


def resolve_workers(setting: int | str, dataset: Dataset, processes_per_node: int = 1,
                    cores: int | None = None) -> int:
    """``machine.num_workers``: a number is taken as is. ``auto`` gives 0 where an item is only a crop and a flip
    of an in-memory tensor (worker start-up and inter-process copies cost more than they save: docs/GPU.md),
    else the cores left to each training process after its own, up to ``MAX_AUTO_WORKERS``."""
    if setting != "auto":
        return int(setting)
    if not decodes_per_item(dataset):
        return 0
    per_process = (cores or usable_cores()) // max(1, processes_per_node)
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


class SeededSampler(Sampler):
    """One permutation per epoch shared by all ``world`` processes, cut to whole global batches; process
    ``rank`` takes positions ``rank, rank + world, ...``, so global batch k is the same set of images whatever
    ``world`` is. Each index comes with its item seed (a function of the epoch seed and the index only)."""

    def __init__(self, size: int, global_batch: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.rank, self.world = size, rank, world
        self.used = size // global_batch * global_batch
        self.epoch_seed = 0

    def set_epoch_seed(self, seed: int) -> None:
        self.epoch_seed = seed

    def __len__(self) -> int:
        return self.used // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.epoch_seed)
        order = torch.randperm(self.size, generator=generator)[:self.used]  # RandomSampler's draw, same seed
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator).tolist()
        for index in order[self.rank::self.world].tolist():
            yield index, seeds[index]


class SeededItems(Dataset):
    """Gets ``dataset[index]`` with torch's RNG seeded by the item seed, the caller's RNG state left untouched
    (in the main process, mixup and dropout draw from it)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> object:
        index, seed = key
        cpu = torch.default_generator  # the transforms' RNG; torch.manual_seed would also probe every accelerator
        state = cpu.get_state()  # (~500 us an item); this generator's own seeding costs ~3 us
        try:
            cpu.manual_seed(seed)
            return self.dataset[index]
        finally:
            cpu.set_state(state)


def loader_options(workers: int, device: torch.device) -> dict:
    """Pinned pages for non-blocking copies to a GPU; workers kept alive across epochs (no re-fork, no
    re-copy of an in-memory dataset per epoch)."""
    return {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}


def train_loader(dataset: Dataset, global_batch: int, rank: int, world: int, workers: int,
                 device: torch.device) -> tuple[DataLoader, SeededSampler]:
    """Full per-process batches of ``global_batch / world`` seeded items: the global batch is kept."""
    if global_batch % world:
        raise CakdError(f"train.batch_size {global_batch} does not split evenly over {world} training processes: "
                        f"make it a multiple of {world}")
    if len(dataset) < global_batch:
        raise CakdError(f"training set has {len(dataset)} images, fewer than one batch ({global_batch}): "
                        f"lower train.batch_size")
    sampler = SeededSampler(len(dataset), global_batch, rank, world)
    # Its own generator: the worker base seed it draws each epoch would otherwise come from torch's global RNG,
    # which then differs between 0 workers (a draw every epoch) and persistent workers (one draw).
    loader = DataLoader(SeededItems(dataset), batch_size=global_batch // world, sampler=sampler, drop_last=True,
                        generator=torch.Generator(), **loader_options(workers, device))
    return loader, sampler


def eval_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, **loader_options(workers, device))
