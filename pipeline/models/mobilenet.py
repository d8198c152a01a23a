"""MobileNetV2 (timm ``EfficientNet``): its blocks grouped into four stages by ``feature_info``."""

from __future__ import annotations

from torch import nn

from .base import Head, ModelSpec, StagedModel
from .registry import create_timm, is_small_input, register
from .weights import WeightsLoad


@register("mobilenetv2_100", "mobilenetv2_050", "mobilenetv2_140")
def build_mobilenetv2(spec: ModelSpec, weights: WeightsLoad | None) -> StagedModel:
    net = create_timm(spec, weights)
    if weights is None:
        # timm's TF-style init draws the classifier from U(+-1/sqrt(num_classes)), sized for 1,000 classes: at
        # 10 the untrained logits have a std of ~5 (loss ~6.8 instead of ln 10) and a short from-scratch run
        # spends its budget undoing that. A fresh classifier (PyTorch's init) starts near uniform.
        net.reset_classifier(spec.num_classes)
    if is_small_input(spec):
        net.conv_stem.stride = (1, 1)  # keep resolution for 32 px inputs (CIFAR-style)
    # feature_info names the block that ends each resolution; the last four are the four stages.
    ends = [int(info["module"].split(".")[1]) + 1 for info in net.feature_info[-4:]]
    starts = [0] + ends[:-1]
    stages = [nn.Sequential(*list(net.blocks)[a:b]) for a, b in zip(starts, ends, strict=True)]
    stem = nn.Sequential(net.conv_stem, net.bn1)
    head = Head(pool=net.global_pool, classifier=net.classifier, norm=nn.Sequential(net.conv_head, net.bn2))
    return StagedModel(spec, "cnn", stem, stages, head, layout="nchw")
