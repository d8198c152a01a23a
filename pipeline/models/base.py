"""A timm classifier seen as ``stem -> 4 stages -> head``: the view the fused assistant is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import ValidationError
from torch import nn

from ..errors import CakdError
from ..settings.params import SpecSchema, validation_line

# How a model mixes information, which decides how the fused assistant joins two models; not the timm family
# (``registry.family_of``: the file a builder lives in, e.g. resnet or mlp_mixer).
Arch = Literal["cnn", "attention", "mlp"]
# How a stage's output tensor is laid out:
#   "nchw"   CNN feature map (B, C, H, W)
#   "nhwc"   Swin feature map (B, H, W, C)
#   "tokens" ViT / MLP tokens (B, prefix + H*W, C); ``num_prefix_tokens`` leading class/register tokens
Layout = Literal["nchw", "nhwc", "tokens"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model without its training code (saved inside checkpoints)."""

    name: str  # registry name, e.g. "resnet18", "vit_tiny_patch16_224"
    num_classes: int
    img_size: int
    in_chans: int = 3
    kwargs: dict = field(default_factory=dict)  # extra timm kwargs (drop_path_rate, embed_dim, ...)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "kwargs": dict(self.kwargs),
        }

    @classmethod
    def from_dict(cls, d: object) -> ModelSpec:
        """A spec read back from a file, checked by the same bounds as params.yaml (``SpecSchema``): a 1.5 KB
        checkpoint saying ``img_size: 60000`` must not allocate until the machine gives up."""
        try:
            checked = SpecSchema.model_validate(d)
        except ValidationError as err:
            raise CakdError(f"its model spec is invalid: {validation_line(err)}") from None
        return cls(checked.name, checked.num_classes, checked.img_size, checked.in_chans, dict(checked.kwargs))



@dataclass(frozen=True)
class StageShape:
    """Shape of one stage's output for a single image: layout, channels/width and spatial grid."""

    layout: Layout
    channels: int
    grid: tuple[int, int]
    num_prefix_tokens: int = 0


class Head(nn.Module):
    """Turns the last stage's output into ``(pooled feature, logits)``; ``pool`` is family specific.

    The classifier keeps its family's own pooling (a ViT's class token). ``feature_pool``, when given,
    pools the feature differently: the method aligns globally averaged, spatially agnostic features, so a
    ViT's feature is the mean of its patch tokens, not its class token.
    """

    def __init__(self, pool: nn.Module, classifier: nn.Module, norm: nn.Module | None = None,
                 feature_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.norm = norm if norm is not None else nn.Identity()
        self.pool = pool
        self.classifier = classifier
        self.feature_pool = feature_pool

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(x)
        pooled = self.pool(x)
        feature = pooled if self.feature_pool is None else self.feature_pool(x)
        return feature, self.classifier(pooled)


@dataclass
class ModelOutput:
    logits: torch.Tensor
    feature: torch.Tensor  # globally averaged pre-logit feature (B, D): spatially agnostic
    stage_outputs: list[torch.Tensor]  # the four stage outputs, in order


class StagedModel(nn.Module):
    """A classifier made of named pieces that other models can share: ``stem``, ``stages[0..3]``, ``head``.

    Pieces are the very modules of the timm model they came from (no copies), so a fused assistant
    that reuses ``stages[3]`` trains (or leaves frozen) the same parameters as this model.
    ``forward`` returns logits, identical to the timm model's own forward.
    """

    def __init__(self, spec: ModelSpec, arch: Arch, stem: nn.Module, stages: list[nn.Module],
                 head: Head, layout: Layout, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if len(stages) != 4:
            raise ValueError(f"{spec.name}: expected 4 stages, got {len(stages)}")
        self.spec = spec
        self.arch: Arch = arch
        self.layout: Layout = layout
        self.num_prefix_tokens = num_prefix_tokens
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.stage_shapes: list[StageShape] = self._probe_stage_shapes()

    @property
    def num_features(self) -> int:
        return self.head.classifier.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).logits

    def forward_all(self, x: torch.Tensor) -> ModelOutput:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        feature, logits = self.head(x)
        return ModelOutput(logits=logits, feature=feature, stage_outputs=outputs)

    def _probe_stage_shapes(self) -> list[StageShape]:
        """Run one dummy image through the stages to learn each output's layout and grid."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            x = torch.zeros(1, self.spec.in_chans, self.spec.img_size, self.spec.img_size)
            outs = self.forward_all(x).stage_outputs
        self.train(was_training)
        return [describe_stage_output(o, self.layout, self.num_prefix_tokens) for o in outs]


def describe_stage_output(t: torch.Tensor, layout: Layout, num_prefix_tokens: int) -> StageShape:
    if layout == "nchw":
        return StageShape(layout, t.shape[1], (t.shape[2], t.shape[3]))
    if layout == "nhwc":
        return StageShape(layout, t.shape[3], (t.shape[1], t.shape[2]))
    n = t.shape[1] - num_prefix_tokens
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"token count {n} is not a square grid")
    return StageShape(layout, t.shape[2], (side, side), num_prefix_tokens)
