"""Distillation methods behind one interface (``Distiller``), built by name.

``ce`` trains a model alone (the baseline, and the teacher); ``kd``, ``dkd``, ``fitnet``, ``ofa`` are the
baselines; ``fbt`` is the paper's method (fused assistant + InfoNCE + OFA).
"""

from __future__ import annotations

from cakd.pipeline.distill.assistant import FusedAssistant, build_fused_assistant
from cakd.pipeline.distill.base import Distiller
from cakd.pipeline.distill.ce import CE
from cakd.pipeline.distill.dkd import DKD
from cakd.pipeline.distill.fbt import FBT, load_assistant
from cakd.pipeline.distill.fitnet import FitNet
from cakd.pipeline.distill.kd import KD
from cakd.pipeline.distill.ofa import OFA
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models.base import StagedModel
from cakd.pipeline.params import DistillParams

METHODS: dict[str, type[Distiller]] = {cls.name: cls for cls in (CE, KD, DKD, FitNet, OFA, FBT)}

__all__ = ["METHODS", "Distiller", "FusedAssistant", "build_distiller", "build_fused_assistant", "load_assistant"]


def build_distiller(method: str, student: StagedModel, teacher: StagedModel | None,
                    cfg: DistillParams | None = None) -> Distiller:
    if method not in METHODS:
        raise CakdError(f"unknown distillation method '{method}'; available: {', '.join(METHODS)}")
    return METHODS[method](student, teacher, cfg if cfg is not None else DistillParams(method=method))
