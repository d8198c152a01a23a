"""ConvNeXt (timm ``ConvNeXt``): patchify stem, four stages, norm + MLP head."""

from __future__ import annotations

from .base import Head, ModelSpec, StagedModel
from .pieces import PreLogits, detach_classifier
from .registry import create_timm, is_small_input, register
from .weights import WeightsLoad


@register("convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny")
def build_convnext(spec: ModelSpec, weights: WeightsLoad | None) -> StagedModel:
    recipe = {}
    if is_small_input(spec):
        recipe["patch_size"] = 2 if spec.img_size > 16 else 1  # a 4x4 patchify stem leaves 1 px at stage 4
    net = create_timm(spec, weights, **recipe)
    classifier = detach_classifier(net.head)
    head = Head(pool=PreLogits(net.head), classifier=classifier, norm=net.norm_pre)
    return StagedModel(spec, "cnn", net.stem, list(net.stages), head, layout="nchw")
