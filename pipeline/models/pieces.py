"""Small glue modules that let a timm model's own parts be called as stem / stage / head pieces."""

from __future__ import annotations

import torch
from timm.layers import global_pool_nlc
from torch import nn


class PreLogits(nn.Module):
    """A timm classifier head (its ``fc`` moved out) used as the pooling step: returns pre-logits."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x, pre_logits=True)


class TokenPool(nn.Module):
    """Pools (B, N, C) tokens the way timm's ViT / Mixer do (class token or average of patch tokens)."""

    def __init__(self, pool_type: str, num_prefix_tokens: int) -> None:
        super().__init__()
        self.pool_type = pool_type
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool_nlc(x, pool_type=self.pool_type, num_prefix_tokens=self.num_prefix_tokens)


def detach_classifier(head: nn.Module, attr: str = "fc") -> nn.Module:
    """Take the final Linear out of a timm head so the head can return pre-logits on its own."""
    classifier = getattr(head, attr)
    setattr(head, attr, nn.Identity())
    return classifier


def split_in_four(blocks: nn.Sequential) -> list[nn.Sequential]:
    """ViT / MLP blocks split into four equal groups, as the paper does for non-hierarchical models."""
    n = len(blocks)
    if n % 4:
        raise ValueError(f"depth {n} cannot be split into 4 equal stages")
    k = n // 4
    return [nn.Sequential(*list(blocks)[i * k:(i + 1) * k]) for i in range(4)]
