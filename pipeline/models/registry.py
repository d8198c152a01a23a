"""Name -> builder registry (timm style): each family file registers the timm names it can split."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import timm
import torch
from torch import nn

from ..errors import CakdError
from ..files.fileio import bounded
from .base import ModelSpec, StagedModel
from .weights import WeightsLoad, load_into

# A builder gets the spec and, optionally, a weights file to load into the timm model before splitting it.
Builder = Callable[[ModelSpec, WeightsLoad | None], StagedModel]
_BUILDERS: dict[str, Builder] = {}

SMALL_INPUT_MAX = 64  # at or below this size, models get their small-input recipe (patch 4, CIFAR stems)


def register(*names: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        for name in names:
            _BUILDERS[name] = builder
        return builder

    return add


def builder_for(name: str) -> Builder:
    if name not in _BUILDERS:
        raise CakdError(f"unknown model '{name}'; available: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]


def registered_names() -> list[str]:
    return sorted(_BUILDERS)


def family_of(name: str) -> str:
    """The timm family a registered name belongs to: the file its builder lives in (one family per file), e.g.
    ``resnet`` for resnet18 and resnet10t, ``mlp_mixer`` for resmlp_12_224 and mixer_s16_224."""
    return builder_for(name).__module__.rsplit(".", 1)[-1]


def is_small_input(spec: ModelSpec) -> bool:
    return spec.img_size <= SMALL_INPUT_MAX


# The largest listed model has 49 M parameters; kwargs that ask for more than this (``embed_dim: 100000``) are
# refused before a single weight is allocated: the model is first built on PyTorch's "meta" device (shapes,
# no memory) and counted.
MAX_PARAMETERS = 300_000_000  # 1.2 GB of float32 weights


def create_timm(spec: ModelSpec, weights: WeightsLoad | None, **recipe) -> nn.Module:
    """``timm.create_model`` with the spec's classes/channels (user kwargs win over the recipe's), then
    ``weights`` loaded into it by timm's rules."""
    kwargs = {**recipe, **spec.kwargs}
    build = partial(timm.create_model, spec.name, pretrained=False, num_classes=spec.num_classes,
                    in_chans=spec.in_chans, **kwargs)
    _check_size(spec, build)
    net = build()
    if weights is not None:
        load_into(net, weights)
    return net


def _check_size(spec: ModelSpec, build: Callable[[], nn.Module]) -> None:
    try:
        with torch.device("meta"):
            probe = build()
    except Exception:  # some kwargs only fail (or only work) on real tensors: the real build tells
        return
    count = sum(t.numel() for t in (*probe.parameters(), *probe.buffers()))
    if count > MAX_PARAMETERS:
        raise CakdError(f"model '{spec.name}' with kwargs {bounded(repr(spec.kwargs))} would have {count:,} "
                        f"parameters, more than the {MAX_PARAMETERS:,} allowed")
