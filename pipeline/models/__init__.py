"""Model zoo over timm: every model is a ``StagedModel`` (family, four stages, pooled feature, logits)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CakdError
from ..files.checkpoints import load_checkpoint, save_checkpoint
from ..files.fileio import bounded, file_sha256
from . import convnext, mlp_mixer, mobilenet, resnet, swin, vit  # noqa: F401  (registration)
from .base import ModelOutput, ModelSpec, StagedModel, StageShape
from .registry import builder_for, family_of, registered_names
from .weights import WeightsLoad, hub_weights_file, resolve_weights_file

if TYPE_CHECKING:
    from ..settings.params import ModelParams

__all__ = ["ModelOutput", "ModelSource", "ModelSpec", "StageShape", "StagedModel", "WeightsLoad", "available_models",
           "create_model", "family_of",
           "load_model", "load_weights", "model_from_params", "save_model"]


def available_models() -> list[str]:
    return registered_names()


@dataclass(frozen=True)
class ModelSource:
    """Where a model's starting weights came from: recorded with the teacher, reported in one line."""

    file: str | None  # weights file, hub cache file or cakd checkpoint; None = trained from scratch
    sha256: str | None
    report: str | None  # which tensors were loaded, left out, new (timm / Hugging Face weights only)


def create_model(spec: ModelSpec, weights: WeightsLoad | None = None) -> StagedModel:
    """The spec's model; kwargs the architecture rejects (timm raises TypeError, ValueError, AssertionError,
    RuntimeError for sizes it cannot allocate, ...) are one line naming the model and the kwargs."""
    builder = builder_for(spec.name)
    try:
        return builder(spec, weights)
    except CakdError:
        raise
    except Exception as err:  # MemoryError included
        raise CakdError(f"model '{spec.name}' cannot be built at {spec.img_size} px with kwargs "
                        f"{bounded(repr(spec.kwargs))}: {type(err).__name__}: "
                        f"{bounded(' '.join(str(err).split()))}") from None


def model_from_params(section: ModelParams, num_classes: int, img_size: int) -> tuple[StagedModel, ModelSource]:
    """A model as ``teacher:`` / ``student:`` in params.yaml describe it: from scratch, timm's hub weights
    (``pretrained``), a local timm / Hugging Face file (``weights``) or a cakd ``checkpoint``."""
    spec = ModelSpec(section.model, num_classes, img_size, kwargs=dict(section.kwargs))
    file = (hub_weights_file(section.model) if section.pretrained
            else resolve_weights_file(section.weights) if section.weights else None)
    load = WeightsLoad(file) if file is not None else None
    model = create_model(spec, load)
    if section.checkpoint:
        load_weights(model, section.checkpoint)
        file = Path(section.checkpoint)
    return model, ModelSource(str(file) if file is not None else None,
                              file_sha256(file) if file is not None else None,
                              load.report(model) if load is not None else None)


def save_model(model: StagedModel, path: str | Path, extra: dict | None = None,
               state_dict: dict | None = None) -> None:
    """A self-describing checkpoint: the spec rebuilds the architecture, no training code needed.
    ``state_dict`` saves other weights of the same architecture (an earlier epoch's) instead of the model's."""
    weights = model.state_dict() if state_dict is None else state_dict
    save_checkpoint({"spec": model.spec.to_dict(), "state_dict": weights, **(extra or {})}, path)


def _state_dict_of(ckpt: object, path: Path) -> tuple[ModelSpec, dict]:
    if not isinstance(ckpt, dict) or "spec" not in ckpt:
        raise CakdError(f"{path} is not a cakd model checkpoint (no 'spec' entry)")
    state = ckpt.get("state_dict", ckpt.get("model"))
    if not isinstance(state, dict):
        raise CakdError(f"{path} holds no model weights")
    try:
        return ModelSpec.from_dict(ckpt["spec"]), state
    except CakdError as err:
        raise CakdError(f"{path}: {err}") from None


def load_model(path: str | Path) -> StagedModel:
    """Rebuild a model from a checkpoint written by ``save_model`` (or a training checkpoint)."""
    path = Path(path)
    spec, state = _state_dict_of(load_checkpoint(path, "model checkpoint"), path)
    model = create_model(spec)
    _load_state(model, state, path)
    return model


def load_weights(model: StagedModel, path: str | Path) -> None:
    """Initialise ``model`` from a cakd checkpoint of the same architecture (``checkpoint:`` in params)."""
    path = Path(path)
    spec, state = _state_dict_of(load_checkpoint(path, "model checkpoint"), path)
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
