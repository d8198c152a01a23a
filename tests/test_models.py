"""The model zoo's fresh models: what a from-scratch run starts from."""

from __future__ import annotations

import math

import pytest
import torch

from cakd.pipeline.models import ModelSpec, create_model
from cakd.pipeline.models.registry import registered_names

torch.set_num_threads(1)

SLIM = {  # the families' own default widths, narrowed only where the full model is slow on a CPU
    "convnext_tiny": {"dims": (32, 64, 128, 256)}, "swin_small_patch4_window7_224": {"embed_dim": 48},
    "vit_small_patch16_224": {"embed_dim": 96, "num_heads": 3},
    "deit_small_patch16_224": {"embed_dim": 96, "num_heads": 3},
    "resnet50": {}, "resnet34": {},
}


@pytest.mark.parametrize("name", registered_names())
def test_a_fresh_model_starts_near_uniform_on_ten_classes(name: str) -> None:
    """Initial cross-entropy close to ln(10): a classifier initialised for 1,000 classes (timm's TF-style init
    of MobileNetV2) starts with logits of std ~5 and a short run from scratch never recovers (13% on digits)."""
    torch.manual_seed(0)
    model = create_model(ModelSpec(name, 10, 16, kwargs=SLIM.get(name, {}))).eval()
    images, labels = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(images), labels).item()
    assert loss < math.log(10) + 0.5, f"{name}: initial loss {loss:.2f}"
