"""ResNet (timm ``ResNet``): stem, ``layer1..4``, global pool + fc."""

from __future__ import annotations

from torch import nn

from .base import Head, ModelSpec, StagedModel
from .registry import create_timm, is_small_input, register
from .weights import WeightsLoad


@register("resnet18", "resnet10t", "resnet34", "resnet50")
def build_resnet(spec: ModelSpec, weights: WeightsLoad | None) -> StagedModel:
    net = create_timm(spec, weights)
    if is_small_input(spec):
        # CIFAR-style stem: a 7x7/2 conv + max-pool would shrink a 32 px image to 8 px before layer1.
        net.conv1 = nn.Conv2d(spec.in_chans, net.bn1.num_features, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    stem = nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    head = Head(pool=net.global_pool, classifier=net.fc)
    return StagedModel(spec, "cnn", stem, stages, head, layout="nchw")

