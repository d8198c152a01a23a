"""MLP-Mixer and ResMLP (timm ``MlpMixer``): patch embedding, blocks split into four groups."""

from __future__ import annotations

from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock
from torch import nn

from ..errors import CakdError
from .base import Head, ModelSpec, StagedModel
from .pieces import TokenPool, split_in_four
from .registry import create_timm, is_small_input, register
from .weights import WeightsLoad, load_into

# timm registers these with patch 16 fixed; small inputs need patch 4, so the same
# architectures are built from timm's MlpMixer class directly.
_ARCHS = {
    "resmlp_12_224": {"num_blocks": 12, "embed_dim": 384, "mlp_ratio": 4, "block_layer": ResBlock,
                      "norm_layer": Affine},
    "mixer_s16_224": {"num_blocks": 8, "embed_dim": 512},
}


@register(*_ARCHS)
def build_mlp_mixer(spec: ModelSpec, weights: WeightsLoad | None) -> StagedModel:
    if is_small_input(spec):
        args = {"patch_size": 4, **_ARCHS[spec.name], **spec.kwargs}
        try:
            net = MlpMixer(num_classes=spec.num_classes, img_size=spec.img_size, in_chans=spec.in_chans, **args)
        except TypeError as err:
            raise CakdError(f"model '{spec.name}' does not accept these kwargs {spec.kwargs}: {err}") from None
        if weights is not None:  # patch-16 weights: what keeps its shape at patch 4 loads, the rest is reported
            load_into(net, weights)
    else:
        net = create_timm(spec, weights)
    pool = nn.Sequential(TokenPool(net.global_pool, 0), net.head_drop)
    head = Head(pool=pool, classifier=net.head, norm=net.norm)
    return StagedModel(spec, "mlp", net.stem, split_in_four(net.blocks), head, layout="tokens")
