"""Where training runs: seeding, device, and torchrun's DistributedDataParallel set-up."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Placement:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_world: int = 1  # processes on this node (torchrun's --nproc-per-node): they share its cores

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def place(threads: int = 0) -> Placement:
    """One process, or one rank of a ``torchrun --nproc-per-node N`` job (nccl on GPUs, gloo on CPU)."""
    if threads:
        torch.set_num_threads(threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return Placement(device, rank, world_size, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return Placement(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def shutdown(placement: Placement) -> None:
    if placement.distributed and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seeds every RNG an epoch draws from (sampler order, augmentation, mixup, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def weights_digest(model: nn.Module) -> str:
    """A short hash of all parameters and buffers: equal digests mean bitwise-equal replicas."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def gather_strings(placement: Placement, value: str) -> list[str]:
    if not placement.distributed:
        return [value]
    out: list[str] = [""] * placement.world_size
    dist.all_gather_object(out, value)
    return out
