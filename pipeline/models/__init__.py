"""Model zoo over timm: every model is a ``StagedModel`` (family, four stages, pooled feature, logits)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import CakdError
from pipeline.fileio import load_torch, save_torch
from pipeline.models import convnext, mlp_mixer, mobilenet, resnet, swin, vit  # noqa: F401  (registration)
from pipeline.models.base import ModelOutput, ModelSpec, StagedModel, StageShape
from pipeline.models.registry import builder_for, registered_names

if TYPE_CHECKING:
    from pipeline.params import ModelParams

__all__ = ["ModelOutput", "ModelSpec", "StageShape", "StagedModel", "available_models", "create_model",
           "load_model", "load_weights", "model_from_params", "save_model"]


def available_models() -> list[str]:
    return registered_names()


def create_model(spec: ModelSpec, pretrained: bool = False) -> StagedModel:
    return builder_for(spec.name)(spec, pretrained)


def model_from_params(section: ModelParams, num_classes: int, img_size: int) -> StagedModel:
    """A model as ``teacher:`` / ``student:`` in params.yaml describe it (timm hub or local weights)."""
    model = create_model(ModelSpec(section.model, num_classes, img_size, kwargs=dict(section.kwargs)),
                         pretrained=section.pretrained)
    if section.checkpoint:
        load_weights(model, section.checkpoint)
    return model


def save_model(model: StagedModel, path: str | Path, extra: dict | None = None) -> None:
    """A self-describing checkpoint: the spec rebuilds the architecture, no training code needed."""
    save_torch({"spec": model.spec.to_dict(), "state_dict": model.state_dict(), **(extra or {})}, path)


def _state_dict_of(ckpt: object, path: Path) -> tuple[ModelSpec, dict]:
    if not isinstance(ckpt, dict) or "spec" not in ckpt:
        raise CakdError(f"{path} is not a cakd model checkpoint (no 'spec' entry)")
    state = ckpt.get("state_dict", ckpt.get("model"))
    if not isinstance(state, dict):
        raise CakdError(f"{path} holds no model weights")
    return ModelSpec.from_dict(ckpt["spec"]), state


def load_model(path: str | Path) -> StagedModel:
    """Rebuild a model from a checkpoint written by ``save_model`` (or a training checkpoint)."""
    path = Path(path)
    spec, state = _state_dict_of(load_torch(path, "model checkpoint"), path)
    model = create_model(spec)
    _load_state(model, state, path)
    return model


def load_weights(model: StagedModel, path: str | Path) -> None:
    """Initialise ``model`` from a cakd checkpoint of the same architecture (``checkpoint:`` in params)."""
    path = Path(path)
    spec, state = _state_dict_of(load_torch(path, "model checkpoint"), path)
    if (spec.name, spec.num_classes, spec.img_size) != (model.spec.name, model.spec.num_classes,
                                                         model.spec.img_size):
        raise CakdError(f"{path} holds {spec.name} ({spec.num_classes} classes, {spec.img_size} px), "
                        f"not {model.spec.name} ({model.spec.num_classes} classes, {model.spec.img_size} px)")
    _load_state(model, state, path)


def _load_state(model: StagedModel, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CakdError(f"{path} does not fit {model.spec.name}: {str(err).splitlines()[0]}") from None
