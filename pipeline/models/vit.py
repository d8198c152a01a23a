"""ViT / DeiT (timm ``VisionTransformer``): 12 blocks split into four groups of three; the pooled feature
is the mean of the patch tokens (no class / distillation token), the logits timm's own."""

from __future__ import annotations

import torch
from torch import nn

from .base import Head, ModelSpec, StagedModel
from .pieces import TokenPool, split_in_four
from .registry import create_timm, is_small_input, register
from .weights import WeightsLoad


class ViTEmbed(nn.Module):
    """The ViT with its blocks and head taken out: timm's own patch + position embedding path."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)


@register("vit_tiny_patch16_224", "vit_small_patch16_224", "deit_tiny_patch16_224", "deit_small_patch16_224")
def build_vit(spec: ModelSpec, weights: WeightsLoad | None) -> StagedModel:
    recipe = {"img_size": spec.img_size}
    if is_small_input(spec):
        recipe["patch_size"] = 4
    net = create_timm(spec, weights, **recipe)
    if net.attn_pool is not None:
        raise ValueError(f"{spec.name}: attention pooling is not supported")
    stages = split_in_four(net.blocks)
    pool = nn.Sequential(TokenPool(net.global_pool, net.num_prefix_tokens), net.fc_norm, net.head_drop)
    # the classifier reads the class token as timm does; the feature is the mean of the patch tokens
    head = Head(pool=pool, classifier=net.head, norm=net.norm,
                feature_pool=TokenPool("avg", net.num_prefix_tokens))
    # What is left of the timm model is exactly its embedding path (blocks/norm/head now live elsewhere).
    net.blocks, net.norm, net.fc_norm, net.head_drop, net.head = (nn.Identity() for _ in range(5))
    return StagedModel(spec, "attention", ViTEmbed(net), stages, head, layout="tokens",
                       num_prefix_tokens=net.num_prefix_tokens)
