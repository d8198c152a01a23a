"""KD (Hinton et al. 2015) as mdistiller/distillers/KD.py:8-39 has it: ce_weight * CE on the labels +
weight * KL(softmax(p_T / t) || softmax(p_S / t)) * t^2, batch mean (the weights: cfg.py:63-64)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import Distiller
from .losses import kd_loss


class KD(Distiller):
    name = "kd"

    def forward_train(self, image: Tensor, target: Tensor, *, epoch: float = 0.0
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.cfg.kd
        logits = self.student(image)
        teacher_logits = self.teacher_outputs(image).logits
        return logits, {
            "ce": p.ce_weight * F.cross_entropy(logits, target),
            "kd": p.weight * kd_loss(logits, teacher_logits, p.temperature),
        }
