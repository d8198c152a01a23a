"""Swin (timm ``SwinTransformer``): patch embedding, four hierarchical NHWC stages, norm + head."""

from __future__ import annotations

from .base import Head, ModelSpec, StagedModel
from .pieces import PreLogits, detach_classifier
from .registry import create_timm, is_small_input, register
from .weights import WeightsLoad


@register("swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224")
def build_swin(spec: ModelSpec, weights: WeightsLoad | None) -> StagedModel:
    recipe = {"img_size": spec.img_size}
    if is_small_input(spec):
        recipe.update(patch_size=2, window_size=4)  # 32 px -> 16, 8, 4, 2 token grids
    net = create_timm(spec, weights, **recipe)
    classifier = detach_classifier(net.head)
    head = Head(pool=PreLogits(net.head), classifier=classifier, norm=net.norm)
    return StagedModel(spec, "attention", net.patch_embed, list(net.layers), head, layout="nhwc")
