"""CE: the student alone on the labels (the baseline, and how the teacher itself is trained)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..models.base import StagedModel
from ..settings.params import DistillParams
from .base import Distiller


class CE(Distiller):
    name = "ce"
    needs_teacher = False

    def __init__(self, student: StagedModel, teacher: StagedModel | None, cfg: DistillParams) -> None:
        super().__init__(student, None, cfg)  # a teacher, if given, is not used: never hold it

    def forward_train(self, image: Tensor, target: Tensor, *, epoch: float = 0.0
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(image)
        return logits, {"ce": F.cross_entropy(logits, target)}
