"""OFA (One-for-All KD, Hao et al. 2023): stage-wise projectors from intermediate student features into
the logit space, each trained with the OFA loss against the teacher's logits, plus the OFA loss on the
student's own logits, plus CE.

``ofa.stages`` are 0-based stage indices (as ``fitnet.stage``); the default [1, 2, 3] taps the outputs
of S2, S3 and S4. Each branch: the stage output as an NCHW map, separable convs (stride 2 while the
map is larger than the student's last grid; at least one), global average pool, a Linear to the classes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.distill.base import Distiller, one_hot, to_nchw
from pipeline.distill.losses import ofa_loss
from pipeline.errors import CakdError
from pipeline.models.base import StagedModel, StageShape
from pipeline.params import DistillParams


def sep_conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """DARTS' SepConv, as OFA's CNN branches use it."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_in, 1, bias=False),
        nn.BatchNorm2d(c_in), nn.ReLU(),
        nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(),
    )


def stage_projector(shape: StageShape, final_grid: tuple[int, int], width: int, num_classes: int
                    ) -> nn.Sequential:
    blocks, c, h = [], shape.channels, shape.grid[0]
    while True:
        stride = 2 if h > final_grid[0] else 1
        h = (h + stride - 1) // stride
        last = h <= final_grid[0]
        c_out = width if last else min(2 * c, width)
        blocks.append(sep_conv(c, c_out, stride))
        c = c_out
        if last:
            break
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


class OFA(Distiller):
    name = "ofa"

    def __init__(self, student: StagedModel, teacher: StagedModel | None, cfg: DistillParams) -> None:
        super().__init__(student, teacher, cfg)
        bad = [k for k in cfg.ofa.stages if not 0 <= k <= 3]
        if bad or len(set(cfg.ofa.stages)) != len(cfg.ofa.stages):
            raise CakdError(f"distill.ofa.stages must be distinct 0-based stage indices in 0..3, "
                            f"got {cfg.ofa.stages}")
        width = max(student.num_features, teacher.num_features)
        final = student.stage_shapes[3].grid
        self.projectors = nn.ModuleDict({
            str(k): stage_projector(student.stage_shapes[k], final, width, student.spec.num_classes)
            for k in sorted(cfg.ofa.stages)
        })

    def extra_modules(self) -> nn.Module:
        return self.projectors

    def forward_train(self, image: Tensor, target: Tensor, *, epoch: float = 0.0
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.cfg.ofa
        s_out = self.student.forward_all(image)
        teacher_logits = self.teacher_outputs(image).logits
        y = one_hot(target, s_out.logits.shape[1])  # OFA's target mask: the hard label
        losses = {"ce": F.cross_entropy(s_out.logits, target)}
        for k, projector in self.projectors.items():
            stage_logits = projector(to_nchw(s_out.stage_outputs[int(k)], self.student.stage_shapes[int(k)]))
            losses[f"ofa_stage{k}"] = p.weight * ofa_loss(stage_logits, teacher_logits, y, p.eps, p.temperature)
        losses["ofa_logits"] = p.weight * ofa_loss(s_out.logits, teacher_logits, y, p.eps, p.temperature)
        return s_out.logits, losses
