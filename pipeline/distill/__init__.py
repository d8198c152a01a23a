"""Distillation methods behind one interface (``Distiller``), built by name.

``ce`` trains a model alone (the baseline, and the teacher); ``kd``, ``dkd``, ``fitnet``, ``ofa`` are the
baselines; ``fbt`` is the paper's method (fused assistant + InfoNCE + OFA).
"""

from __future__ import annotations

from ..errors import CakdError
from ..models.base import StagedModel
from ..settings.params import DistillParams
from .assistant import FusedAssistant, build_fused_assistant
from .base import Distiller
from .ce import CE
from .dkd import DKD
from .fbt import FBT, load_assistant
from .fitnet import FitNet
from .kd import KD
from .ofa import OFA

METHODS: dict[str, type[Distiller]] = {cls.name: cls for cls in (CE, KD, DKD, FitNet, OFA, FBT)}

__all__ = ["METHODS", "Distiller", "FusedAssistant", "build_distiller", "build_fused_assistant", "load_assistant"]


def build_distiller(method: str, student: StagedModel, teacher: StagedModel | None,
                    cfg: DistillParams | None = None) -> Distiller:
    if method not in METHODS:
        raise CakdError(f"unknown distillation method '{method}'; available: {', '.join(METHODS)}")
    return METHODS[method](student, teacher, cfg if cfg is not None else DistillParams(method=method))
