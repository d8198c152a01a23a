"""The fused assistant F of Fuse-Before-Transfer: "convolution first, attention/MLP last".

    F = head_A . S4_A . L2G . S3_C . S2_C . S1_C . stem_C

C is the convolutional model of the pair, A the attention/MLP one; the code calls them by their place in F,
``front`` (stem..S3) and ``back`` (S4 and head), because a homogeneous pair (below) has two of one kind.
Every piece of F except L2G is the *same module object* as in its source model: pieces from the student are
trained through F as well as through S, pieces from the teacher stay frozen (requires_grad False, always in
eval mode).

L2G (local-to-global projector) turns C's S3 output into exactly what A's S4 expects (A's
``stage_shapes[2]``: width, token grid, layout): a patch embedding (a strided depthwise conv when the grid
ratio is an integer, otherwise the map is first resampled to a multiple of A's grid, then a 1x1 conv), a
norm, one Swin block (windowed self-attention, MLP ratio 1; left out for the "without attention stage"
ablation), a linear map to A's width when it differs, then A's layout (class tokens are learnable).
The embedding and the Swin block work at the *student's* S3 width, not the teacher's stage width: L2G's
cost follows the model being trained (<= 10% of its parameters), whatever the size of the teacher.

Homogeneous pairs (both convolutional, or both attention/MLP) are fused as student's stem+S1..S3, a
projector (L2G without the Swin block) and the teacher's S4 + head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.swin_transformer import SwinTransformerBlock
from torch import Tensor, nn

from ..errors import CakdError
from ..models.base import StagedModel, StageShape
from .base import to_nchw

ARCHS = {"cnn": "convolutional (resnet, mobilenetv2, convnext)",
            "attention": "attention (vit, deit, swin)",
            "mlp": "MLP (resmlp, mixer)"}


class L2G(nn.Module):
    """Local-to-global projector: a stage output of layout ``src`` -> the input ``dst`` describes, through
    a Swin block of width ``width`` (the student's S3 width)."""

    def __init__(self, src: StageShape, dst: StageShape, width: int, attention: bool = True, heads: int = 4,
                 window: int = 4, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        self.src, self.dst = src, dst
        (hc, wc), (ha, wa), c_in = src.grid, dst.grid, src.channels
        # a strided patch embedding when each grid ratio is an integer, else resample to a multiple first
        integer = hc % ha == 0 and wc % wa == 0
        rh, rw = (hc // ha, wc // wa) if integer else (max(1, round(hc / ha)), max(1, round(wc / wa)))
        self.resample = None if (ha * rh, wa * rw) == (hc, wc) else (ha * rh, wa * rw)
        # depthwise strided conv + pointwise conv: a patch embedding at a fraction of a dense one's params
        strided = [nn.Conv2d(c_in, c_in, (rh, rw), (rh, rw), groups=c_in)] if (rh, rw) != (1, 1) else []
        self.embed = nn.Sequential(*strided, nn.Conv2d(c_in, width, 1))
        self.norm = nn.BatchNorm2d(width) if dst.layout == "nchw" and not attention else LayerNorm2d(width)
        self.block = None
        if attention:
            self.block = SwinTransformerBlock(
                width, input_resolution=(ha, wa), num_heads=math.gcd(width, heads),
                window_size=(min(window, ha), min(window, wa)), shift_size=0, mlp_ratio=mlp_ratio)
        self.out = nn.Linear(width, dst.channels) if width != dst.channels else nn.Identity()
        self.prefix = None
        if dst.layout == "tokens" and dst.num_prefix_tokens:
            self.prefix = nn.Parameter(torch.zeros(1, dst.num_prefix_tokens, dst.channels))
            nn.init.trunc_normal_(self.prefix, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = to_nchw(x, self.src)
        if self.resample is not None:
            x = F.interpolate(x, size=self.resample, mode="bilinear", align_corners=False)
        x = self.norm(self.embed(x)).permute(0, 2, 3, 1)  # NHWC (B, H_A, W_A, width): what Swin takes
        if self.block is not None:
            x = self.block(x)
        x = self.out(x)
        if self.dst.layout == "nchw":
            return x.permute(0, 3, 1, 2).contiguous()
        if self.dst.layout == "nhwc":
            return x
        x = x.flatten(1, 2)
        if self.prefix is not None:
            x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], dim=1)
        return x


class FusedAssistant(nn.Module):
    """F(x) = head_back(S4_back(L2G(S3_front(S2_front(S1_front(stem_front(x))))))) -> (pooled feature, logits)."""

    def __init__(self, front: StagedModel, back: StagedModel, l2g: L2G, front_role: str, back_role: str
                 ) -> None:
        super().__init__()
        self.stem = front.stem  # the very modules, not copies
        self.stages = nn.ModuleList(list(front.stages)[:3])
        self.l2g = l2g
        self.stage4 = back.stages[3]
        self.head = back.head
        self.front_role, self.back_role = front_role, back_role  # "student" / "teacher": who each part comes from
        self.input_size = front.spec.img_size
        self.num_features = back.num_features
        self.frozen_pieces = ("stem", "stages") if front_role == "teacher" else ("stage4", "head")
        self.description = (f"{front.spec.name} ({front_role}) stem+S1..S3 -> L2G("
                            f"{'Swin block' if l2g.block is not None else 'no attention'}) -> "
                            f"{back.spec.name} ({back_role}) S4+head")

    @property
    def num_new_parameters(self) -> int:
        """Parameters F adds to the pair: L2G's only (everything else is shared)."""
        return sum(p.numel() for p in self.l2g.parameters())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fuse(x)

    def fuse(self, front_s3: Tensor) -> tuple[Tensor, Tensor]:
        """The part after S3_front: lets a distiller reuse the front model's own S3 output (same modules, same
        input, so the same value) instead of running stem..S3 twice."""
        return self.head(self.stage4(self.l2g(front_s3)))

    def train(self, mode: bool = True) -> FusedAssistant:
        super().train(mode)
        for name in self.frozen_pieces:  # the teacher's pieces never leave eval mode
            getattr(self, name).eval()
        return self


def build_fused_assistant(teacher: StagedModel, student: StagedModel, attention: bool = True, heads: int = 4,
                          window: int = 4, mlp_ratio: float = 1.0) -> FusedAssistant:
    """Build F for a (teacher, student) pair following "convolution first, attention/MLP last".

    - CNN student, attention/MLP teacher: student's stem+S1..S3, L2G, teacher's S4 + head.
    - CNN teacher, attention/MLP student: teacher's stem+S1..S3, L2G, student's S4 + head.
    - Homogeneous (CNN-CNN, or attention/MLP on both sides): student's stem+S1..S3, a projector
      (L2G without the Swin block), teacher's S4 + head.
    """
    for role, model in (("teacher", teacher), ("student", student)):
        if model.arch not in ARCHS:
            raise _unfusable(teacher, student, f"the {role} {model.spec.name} is of architecture '{model.arch}'")
    if teacher.spec.num_classes != student.spec.num_classes:
        raise _unfusable(teacher, student, f"F puts one model's head on the other's features, but they predict "
                                           f"{teacher.spec.num_classes} and {student.spec.num_classes} classes")
    t_conv, s_conv = teacher.arch == "cnn", student.arch == "cnn"
    if t_conv == s_conv:  # homogeneous: student first, teacher last, a plain projector between
        front, back, front_role, attention = student, teacher, "student", False
    elif s_conv:
        front, back, front_role = student, teacher, "student"
    else:
        front, back, front_role = teacher, student, "teacher"
    back_role = "teacher" if front_role == "student" else "student"
    l2g = L2G(front.stage_shapes[2], back.stage_shapes[2], student.stage_shapes[2].channels, attention, heads, window,
              mlp_ratio)
    fused = FusedAssistant(front, back, l2g, front_role, back_role)
    _probe(fused, front, teacher, student)
    return fused


def _probe(fused: FusedAssistant, front: StagedModel, teacher: StagedModel, student: StagedModel) -> None:
    """One dummy image through F: a shape mismatch becomes a CakdError now, not mid-training."""
    modes = {m: m.training for m in fused.modules()}
    fused.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, front.spec.in_chans, front.spec.img_size, front.spec.img_size)
            feature, logits = fused(x.to(next(fused.parameters()).device))
    except RuntimeError as err:
        raise _unfusable(teacher, student, f"{fused.description} fails: {str(err).splitlines()[0]}") from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    if logits.shape[-1] != student.spec.num_classes or feature.shape[-1] != fused.num_features:
        raise _unfusable(teacher, student, f"{fused.description} returns feature {tuple(feature.shape)} and "
                                           f"logits {tuple(logits.shape)}")


def _unfusable(teacher: StagedModel, student: StagedModel, why: str) -> CakdError:
    return CakdError(f"cannot fuse teacher {teacher.spec.name} -> student {student.spec.name}: {why}; "
                     f"supported architectures: {'; '.join(ARCHS.values())}")
