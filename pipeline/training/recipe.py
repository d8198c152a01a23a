"""The CUDA recipe: what a training run switches on for speed on a GPU, decided in one place (docs/GPU.md).

``plan_recipe`` only decides (tests check its decisions on any machine); ``apply_recipe`` does it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..distill.base import Distiller
from ..models.base import StagedModel


@dataclass(frozen=True)
class RecipePlan:
    channels_last: tuple[str, ...]  # the distiller's models ("student", "teacher") stored NHWC
    compiled: tuple[str, ...]  # the models whose stem, stages and head torch.compile wraps
    autocast: str  # "bfloat16", "float16" (with a gradient scaler) or "off"

    def as_dict(self) -> dict:
        return {"channels_last": list(self.channels_last), "compiled": list(self.compiled), "autocast": self.autocast}


def models_of(distiller: Distiller) -> dict[str, StagedModel]:
    return {"student": distiller.student, **({"teacher": distiller.teacher} if distiller.teacher is not None else {})}


def autocast_dtype(device_type: str, amp: str, bf16: bool | None = None) -> torch.dtype | None:
    """Autocast on CUDA unless ``amp: off``: bf16 where the GPU has it (``bf16`` None: ask the GPU), else fp16."""
    if device_type != "cuda" or amp == "off":
        return None
    if bf16 is None:
        bf16 = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else torch.float16


def plan_recipe(distiller: Distiller, device_type: str, amp: str, compile_: bool, bf16: bool | None = None
                ) -> RecipePlan:
    """channels_last for convolutional models on CUDA (cuDNN's NHWC kernels, Tensor Cores; a ViT's one patch
    convolution gains nothing); torch.compile where asked, on any device; autocast as ``autocast_dtype``."""
    models = models_of(distiller)
    nhwc = tuple(role for role, model in models.items() if device_type == "cuda" and model.arch == "cnn")
    compiled = tuple(models) if compile_ else ()
    dtype = autocast_dtype(device_type, amp, bf16)
    return RecipePlan(nhwc, compiled, str(dtype).removeprefix("torch.") if dtype is not None else "off")


def pieces(model: StagedModel) -> list[nn.Module]:
    """What ``forward_all`` calls one by one: compiling these covers every way a distiller runs the model."""
    return [model.stem, *model.stages, model.head]


def apply_recipe(distiller: Distiller, plan: RecipePlan) -> None:
    """In place, after the distiller is on its device. ``Module.compile`` wraps a module's call and keeps its
    parameters and state_dict names, so checkpoints and model.pt are the same files as without it."""
    models = models_of(distiller)
    for role in plan.channels_last:
        models[role].to(memory_format=torch.channels_last)
    for role in plan.compiled:
        for piece in pieces(models[role]):
            piece.compile()


def to_input_format(images: torch.Tensor, plan: RecipePlan) -> torch.Tensor:
    """NHWC images when the student is stored NHWC (its first convolution then needs no layout change)."""
    if "student" in plan.channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
