"""DKD (Zhao et al. 2022) as mdistiller/distillers/DKD.py:54-84 has it: CE + min(epoch / warmup, 1) *
(alpha * TCKD + beta * NCKD); the loss itself (losses.dkd_loss) is computed in log space."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import Distiller, hard_labels
from .losses import dkd_loss


class DKD(Distiller):
    name = "dkd"

    def warmup_factor(self, epoch: float) -> float:
        warmup = self.cfg.dkd.warmup_epochs
        return 1.0 if warmup <= 0 else min(max(epoch, 0.0) / warmup, 1.0)

    def forward_train(self, image: Tensor, target: Tensor, *, epoch: float = 0.0
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.cfg.dkd
        logits = self.student(image)
        teacher_logits = self.teacher_outputs(image).logits
        # DKD needs the target class: soft targets (mixup / cutmix / smoothing) count as their argmax
        dkd = dkd_loss(logits, teacher_logits, hard_labels(target), p.alpha, p.beta, p.temperature)
        return logits, {"ce": F.cross_entropy(logits, target), "dkd": self.warmup_factor(epoch) * dkd}
