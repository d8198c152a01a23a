"""PyTorch eager on a CUDA GPU (checked against PyTorch on the CPU)."""

from __future__ import annotations

import torch

from .base import Runner, Runtime, Session, Settings
from .torch_cpu import torch_runner


def unavailable() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device is visible to PyTorch"


def options(settings: Settings) -> dict:
    return {"mode": "eager, inference_mode", "device": "cuda"}


def build(session: Session) -> Runner:
    return torch_runner(session.model, session.img_size, session.in_chans, "cuda")


RUNTIME = Runtime("torch-cuda", {"fp32": ("checkpoint",)}, "torch", unavailable, options, build)
