"""The distiller interface (mdistiller style): a student, a frozen teacher and the method's new modules.

The training loop only sees this interface: ``forward_train`` returns the student's logits and a dict of
named losses (the loop sums them), ``eval_logits`` the logits to report accuracy for, and
``trainable_parameters`` what the optimiser may update (never the teacher's).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CakdError
from ..files.checkpoints import save_checkpoint
from ..models.base import ModelOutput, StagedModel, StageShape
from ..settings.params import DistillParams


class Distiller(nn.Module, metaclass=ABCMeta):
    """Student (+ frozen teacher) + the method's extra trainable modules."""

    name = "base"
    needs_teacher = True

    def __init__(self, student: StagedModel, teacher: StagedModel | None, cfg: DistillParams) -> None:
        super().__init__()
        if teacher is None and self.needs_teacher:
            raise CakdError(f"distillation method '{self.name}' needs a teacher model; only 'ce' trains "
                            f"without one")
        if teacher is not None:
            check_pair(teacher, student)
            freeze(teacher)
        self.student = student
        self.teacher = teacher
        self.cfg = cfg

    # ---- what the training loop calls -------------------------------------------------------------
    @abstractmethod
    def forward_train(self, image: Tensor, target: Tensor, *, epoch: float = 0.0
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        """Student logits and the method's named losses for one batch (the loop sums them)."""

    def forward(self, image: Tensor, target: Tensor | None = None, *, epoch: float = 0.0
                ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Student logits; given a target, the training step: a DistributedDataParallel wrapper only
        synchronises gradients of what runs through ``forward``, so ``ddp(image, target)`` must work."""
        if target is None:
            return self.student(image)
        return self.forward_train(image, target, epoch=epoch)

    def eval_logits(self, image: Tensor) -> dict[str, Tensor]:
        return {"student": self.student(image)}

    def extra_modules(self) -> nn.Module | None:
        """The method's new trainable modules (not the student's, not the teacher's); None if none."""
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student + extra modules, each parameter once, never a teacher parameter."""
        frozen = {id(p) for p in self.teacher.parameters()} if self.teacher is not None else set()
        extra = self.extra_modules()
        modules = [self.student] + ([extra] if extra is not None else [])
        seen: set[int] = set()
        params = []
        for module in modules:
            for p in module.parameters():
                if id(p) in seen or id(p) in frozen or not p.requires_grad:
                    continue
                seen.add(id(p))
                params.append(p)
        return params

    def training_state(self) -> dict[str, Tensor]:
        """The state a resumed run needs: everything but the frozen teacher's tensors, under whatever name they
        appear (an assistant reuses teacher stages). The run reloads the teacher from its file, whose hash is
        in the checkpoint's fingerprint; left in, it made each epoch's checkpoint several times larger."""
        frozen = {t.data_ptr() for t in self.teacher.state_dict().values()} if self.teacher is not None else set()
        return {name: t for name, t in self.state_dict().items() if t.data_ptr() not in frozen}

    def load_training_state(self, state: dict[str, Tensor]) -> None:
        """Inverse of ``training_state``: only the frozen teacher's entries may be absent."""
        frozen = set(self.state_dict()) - set(self.training_state())
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or set(missing) - frozen:
            names = sorted(unexpected) + sorted(set(missing) - frozen)
            raise CakdError(f"the training checkpoint does not fit this {self.name} run ({len(names)} tensors "
                            f"differ, e.g. {names[0]})")

    def save_extras(self, path: Path) -> None:
        """What the method learnt besides the student (projectors, L2G, loss heads) and how it was set,
        kept apart from the deployable student so the assistant can be rebuilt and evaluated."""
        extra = self.extra_modules()
        save_checkpoint({
            "method": self.name,
            "student": self.student.spec.to_dict(),
            "teacher": self.teacher.spec.to_dict() if self.teacher is not None else None,
            "distill": self.cfg.model_dump(mode="json"),
            "state_dict": extra.state_dict() if extra is not None else {},
        }, path)

    def num_extra_parameters(self) -> int:
        extra = self.extra_modules()
        return sum(p.numel() for p in extra.parameters()) if extra is not None else 0

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # after the recursive call: shared teacher pieces stay in eval mode too
        return self

    # ---- helpers for the methods ------------------------------------------------------------------
    @torch.no_grad()
    def teacher_outputs(self, image: Tensor) -> ModelOutput:
        assert self.teacher is not None
        return self.teacher.forward_all(resize_for(self.teacher, image))


def freeze(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def check_pair(teacher: StagedModel, student: StagedModel) -> None:
    if teacher.spec.num_classes != student.spec.num_classes:
        raise CakdError(f"teacher {teacher.spec.name} predicts {teacher.spec.num_classes} classes but student "
                        f"{student.spec.name} predicts {student.spec.num_classes}; they must match")
    if teacher.spec.in_chans != student.spec.in_chans:
        raise CakdError(f"teacher {teacher.spec.name} takes {teacher.spec.in_chans} input channels but student "
                        f"{student.spec.name} takes {student.spec.in_chans}; they must match")
    if teacher is student:
        raise CakdError("teacher and student must be two different model objects")


def resize_for(model: StagedModel, image: Tensor) -> Tensor:
    """The batch at the model's own input size (a teacher trained at another resolution)."""
    size = model.spec.img_size
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


def hard_labels(target: Tensor) -> Tensor:
    """Class indices (B,) from int labels or soft (B, C) targets (mixup / cutmix / smoothing: argmax)."""
    return target.argmax(dim=1) if target.ndim == 2 else target


def one_hot(target: Tensor, num_classes: int) -> Tensor:
    """Float one-hot (B, C) of the hard label, as OFA builds its target mask."""
    return F.one_hot(hard_labels(target), num_classes).float()


def to_nchw(x: Tensor, shape: StageShape) -> Tensor:
    """Any stage output as a (B, C, H, W) map: NHWC is permuted, tokens lose their prefix and are folded."""
    if shape.layout == "nchw":
        return x
    if shape.layout == "nhwc":
        return x.permute(0, 3, 1, 2)
    h, w = shape.grid
    patches = x[:, shape.num_prefix_tokens:]
    return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
