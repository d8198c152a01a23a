"""PyTorch eager on the CPU: the reference every exported artefact is checked against."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import Runner, Runtime, Session, Settings


def torch_runner(model: nn.Module, img_size: int, in_chans: int = 3, device: str = "cpu") -> Runner:
    """Eager in inference mode; on CUDA every call ends with a synchronise."""
    model = model.eval().to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    @torch.inference_mode()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).float().cpu()

    def timed_call(batch: int) -> Callable[[], None]:
        x = torch.randn(batch, in_chans, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(device)

        @torch.inference_mode()
        def call() -> None:
            model(x)
            sync()

        return call

    return Runner(predict, timed_call)


def options(settings: Settings) -> dict:
    return {"torch_threads": settings.threads, "mode": "eager, inference_mode"}


def build(session: Session) -> Runner:
    return torch_runner(session.model, session.img_size, session.in_chans)


RUNTIME = Runtime("torch", {"fp32": ("checkpoint",)}, None, lambda: None, options, build)
