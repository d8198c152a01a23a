"""What every runtime module declares and builds: the ``Runtime`` row, the ``Session`` it is given and the
``Runner`` it returns.

A runner turns a float image batch into logits (``predict``, for accuracy) and prepares a fixed input once
so that the timed call measures inference only (``timed_call``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..artefacts import Artefact, Precision

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class Runner:
    """One model on one runtime. ``timed_call(batch)`` returns a zero-argument call that runs one batch
    and returns only when the device is done (so wall-clock timing around it is honest)."""

    predict: Callable[[torch.Tensor], torch.Tensor]
    timed_call: Callable[[int], Callable[[], None]]


@dataclass(frozen=True)
class Settings:
    """How every session of one bench is set up (the same for all models, recorded with the results)."""

    threads: int
    work_dir: Path  # engines and other files a runtime compiles
    batch_sizes: tuple[int, ...] = (1,)
    workspace_mb: int = 1024
    openvino_hint: str = "f32"  # OpenVINO's INFERENCE_PRECISION_HINT


@dataclass(frozen=True)
class Session:
    """What a runtime builds a runner from: the artefact file, the PyTorch model (PyTorch runtimes only)
    and the input shape."""

    path: Path
    precision: Precision
    model: nn.Module | None
    img_size: int
    in_chans: int
    settings: Settings


@dataclass(frozen=True)
class Runtime:
    """One row of the runtime table (``RUNTIMES``), declared by the runtime's own module."""

    name: str
    consumes: dict[Precision, tuple[Artefact, ...]]  # per precision, the artefacts it runs (each a bench row)
    reference: str | None  # the runtime its accuracy is checked against (None: it is the reference)
    unavailable: Callable[[], str | None]  # why it cannot run here, or None
    options: Callable[[Settings], dict]  # session options: what ``build`` applies and the bench records
    build: Callable[[Session], Runner]


def predict_batched(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    batch_size: int = 64) -> torch.Tensor:
    return torch.cat([predict(chunk) for chunk in images.split(batch_size)])
