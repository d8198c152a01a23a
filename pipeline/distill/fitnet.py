"""FitNet (Romero et al. 2015): CE + weight * pixel-wise MSE between a projected student stage output
and the teacher's output of the same stage (the "hint").

Any layout is turned into an NCHW map, the student map is resized to the teacher's grid and a 1x1 conv
maps its channels to the teacher's. Across architectures this pixel-wise match is exactly what the FBT
paper says breaks down; it is implemented faithfully as the baseline.

Against mdistiller/distillers/FitNet.py:9-48: same loss (CE + weight * MSE(regressor(S_k), T_k)), same
weight (100, mdistiller/engine/cfg.py:90), hint at the third of four stages (mdistiller's HINT_LAYER 2,
cfg.py:86, is the second of a CIFAR ResNet's three stages). The regressor differs: mdistiller's ConvReg
(_common.py:6-30) is a conv chosen by the grid ratio + BatchNorm + ReLU and raises on other ratios; here
any ratio is resized bilinearly and a 1x1 conv maps the channels (no ReLU, since ViT/Swin hints are signed).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import StagedModel
from ..settings.params import DistillParams
from .base import Distiller, to_nchw


class FitNet(Distiller):
    name = "fitnet"

    def __init__(self, student: StagedModel, teacher: StagedModel | None, cfg: DistillParams) -> None:
        super().__init__(student, teacher, cfg)
        k = cfg.fitnet.stage
        self.s_shape, self.t_shape = student.stage_shapes[k], teacher.stage_shapes[k]
        self.regressor = nn.Conv2d(self.s_shape.channels, self.t_shape.channels, kernel_size=1)

    def extra_modules(self) -> nn.Module:
        return self.regressor

    def forward_train(self, image: Tensor, target: Tensor, *, epoch: float = 0.0
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.cfg.fitnet.stage
        s_out = self.student.forward_all(image)
        hint = to_nchw(self.teacher_outputs(image).stage_outputs[k], self.t_shape)
        guided = to_nchw(s_out.stage_outputs[k], self.s_shape)
        if guided.shape[-2:] != hint.shape[-2:]:
            guided = F.interpolate(guided, size=hint.shape[-2:], mode="bilinear", align_corners=False)
        guided = self.regressor(guided)
        return s_out.logits, {
            "ce": F.cross_entropy(s_out.logits, target),
            "fitnet": self.cfg.fitnet.weight * F.mse_loss(guided.float(), hint.float()),
        }
