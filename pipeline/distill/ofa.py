"""OFA (One-for-All KD, Hao et al. 2023) as OFAKD (github Hao840/OFAKD) defines it.

Stage-wise projectors map intermediate student features into the logit space; each is trained with the
OFA loss against the teacher's logits, the student's own logits get the OFA loss too, plus CE:

    L = gt_w * CE(p_S, y) + logits_weight * OFA(p_S) + weight * sum_k OFA(proj_k(S_k))

References (``ofa.py`` = OFAKD's distillers/ofa.py, ``utils.py`` = its distillers/utils.py):
- stages 1-based, all four by default: train.py:90 ``--ofa-stage 1 2 3 4``; stage k taps the output of
  our stage k (for ViT/MLP students the end of the k-th of four equal block groups; OFAKD taps ViT blocks
  2, 4, 10, 12 of 12, custom_forward/vision_transformer.py:71-81).
- eps 1.0: README's CIFAR-100 example ``--ofa-eps 1.0`` (README.md:85; also train.py:89's default);
  temperature 1: train.py:92; stage weight 1: train.py:91; logit weight 1: train.py:83 (``--kd-loss-weight``,
  ofa.py:133-134); CE weight 1: train.py:82 (``--gt-loss-weight``, ofa.py:132).
- the target mask is the one-hot of the hard label (argmax of soft labels): ofa.py:115-119.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.swin_transformer import PatchMerging
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..errors import CakdError
from ..models.base import StagedModel, StageShape
from ..settings.params import DistillParams
from .base import Distiller, one_hot, to_nchw
from .losses import ofa_loss


def sep_conv(c_in: int, c_out: int) -> nn.Sequential:
    """DARTS' SepConv with stride 2, as OFAKD's utils.py:127-145 builds it."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, 2, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_in, 1, bias=False),
        nn.BatchNorm2d(c_in), nn.ReLU(),
        nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(),
    )


def cnn_projector(shape: StageShape, stage: int, width: int, num_classes: int) -> nn.Sequential:
    """ofa.py:44-65: 4 - stage SepConvs (channels doubling, the last to ``width``); stage 4 a 1x1 conv;
    then global average pool and a Linear. ``width`` = max(student, teacher feature width), ofa.py:52."""
    c = shape.channels
    if stage == 4:
        blocks: list[nn.Module] = [nn.Conv2d(c, width, 1)]  # ofa.py:57-58
    else:
        n, blocks = 4 - stage, []
        for i in range(n):  # ofa.py:48-56
            blocks.append(sep_conv(c, width if i == n - 1 else 2 * c))
            c *= 2
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


class TokenProjector(nn.Module):
    """ofa.py:66-103, for ViT / MLP (and Swin) students: patch merging of the patch tokens (class tokens
    set aside, TokenFnContext), max(4 - stage, 1) ViT blocks of 4 heads, then the class token (ViT,
    TokenFilter) or the mean of the tokens (MLP, GAP1d), and a Linear to the classes.

    OFAKD merges patches until the grid reaches 7 (ofa.py:70), the grid of a CNN's last stage at 224 px;
    here that final grid is scaled with the input (img_size / 32, at least 1), which is 7 at 224 px.
    Each merge is OFAKD's PatchMerging (utils.py:8-42: 2x2 concat, LayerNorm, bias-free Linear; timm's
    Swin PatchMerging is the same op) followed by GELU, except the last of several (ofa.py:74-86).
    """

    def __init__(self, shape: StageShape, stage: int, dim: int, num_classes: int, img_size: int) -> None:
        super().__init__()
        self.shape = shape
        self.num_prefix = shape.num_prefix_tokens
        grid, final = shape.grid[0], max(1, round(img_size / 32))
        merges = max(int(math.log2(grid / final)), 0)
        layers: list[nn.Module] = []
        for i in range(merges):
            act = nn.GELU() if i == 0 or i != merges - 1 else nn.Identity()
            layers += [PatchMerging(shape.channels if i == 0 else dim, out_dim=dim), act]
        self.merge = nn.Sequential(*layers)
        self.blocks = nn.Sequential(*[Block(dim, num_heads=4) for _ in range(max(4 - stage, 1))])
        self.fc = nn.Linear(dim * max(self.num_prefix, 1), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        grid = to_nchw(x, self.shape).permute(0, 2, 3, 1)  # patch tokens as an NHWC map
        tokens = self.merge(grid).flatten(1, 2)
        if self.num_prefix:  # class tokens skip the merging and rejoin in front (TokenFnContext)
            tokens = torch.cat([x[:, :self.num_prefix], tokens], dim=1)
        tokens = self.blocks(tokens)
        feature = tokens[:, :self.num_prefix].flatten(1) if self.num_prefix else tokens.mean(dim=1)
        return self.fc(feature)


def init_weights(module: nn.Module) -> None:
    """utils.py:148-158, applied to every projector (ofa.py:105)."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class OFA(Distiller):
    name = "ofa"

    def __init__(self, student: StagedModel, teacher: StagedModel | None, cfg: DistillParams) -> None:
        super().__init__(student, teacher, cfg)
        stages = cfg.ofa.stages
        if any(not 1 <= k <= 4 for k in stages) or len(set(stages)) != len(stages):
            raise CakdError(f"distill.ofa.stages must be distinct 1-based stage numbers in 1..4 (as OFAKD's "
                            f"--ofa-stage), got {stages}")
        classes = student.spec.num_classes
        self.projectors = nn.ModuleDict()
        for k in sorted(stages):
            shape = student.stage_shapes[k - 1]
            if student.arch == "cnn":  # ofa.py:36, 44
                width = max(student.num_features, teacher.num_features)
                self.projectors[str(k)] = cnn_projector(shape, k, width, classes)
            else:
                self.projectors[str(k)] = TokenProjector(shape, k, student.num_features, classes,
                                                         student.spec.img_size)
        self.projectors.apply(init_weights)

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
            feat = s_out.stage_outputs[int(k) - 1]
            if self.student.arch == "cnn":
                feat = to_nchw(feat, self.student.stage_shapes[int(k) - 1])
            losses[f"ofa_stage{k}"] = p.weight * ofa_loss(projector(feat), teacher_logits, y, p.eps, p.temperature)
        losses["ofa_logits"] = p.logits_weight * ofa_loss(s_out.logits, teacher_logits, y, p.eps, p.temperature)
        return s_out.logits, losses
