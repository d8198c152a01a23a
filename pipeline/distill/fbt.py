"""FBT (Fuse Before Transfer, the paper): a fused assistant F bridges teacher T and student S.

    L = CE(p_S, y) + CE(p_F, y) + L(T,S) + L(T,F) + L(F,S)
    L(i, j) = w_nce * InfoNCE(f_i, f_j) + w_ofa * OFA(p_j | p_i, y)

f = pooled feature, p = logits. The teacher side i of each pair is detached (T always; F when
``detach_assistant``). Each ordered pair has its own InfoNCE projection heads (or FeatureMSE when
``feature_loss: mse``). Ablations: ``pairs: [ts]`` builds no assistant at all (no L2G, no CE on F: InfoNCE +
OFA between teacher and student only), ``use_tf: false`` drops L(T,F), ``w_nce: 0`` / ``w_ofa: 0`` drop a
term, ``assistant_attention: false`` builds L2G without its Swin block.

F's C-side stem..S3 are exactly the C model's own modules fed the same image, so F continues from that
model's S3 output instead of running them a second time (same values, same gradients, and BatchNorm
statistics are updated once per step).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CakdError
from ..files.checkpoints import load_checkpoint
from ..models.base import ModelOutput, StagedModel
from ..settings.params import DistillParams
from .assistant import FusedAssistant, build_fused_assistant
from .base import Distiller, one_hot
from .losses import FeatureMSE, InfoNCE, ofa_loss


class FBT(Distiller):
    name = "fbt"

    def __init__(self, student: StagedModel, teacher: StagedModel | None, cfg: DistillParams) -> None:
        super().__init__(student, teacher, cfg)
        p = cfg.fbt
        self.pairs = p.active_pairs  # (teacher side i, learner j)
        self.assistant: FusedAssistant | None = None
        if any("f" in pair for pair in self.pairs):
            self.assistant = build_fused_assistant(teacher, student, attention=p.assistant_attention,
                                                   heads=p.l2g_heads, window=p.l2g_window)
        dims = {"t": teacher.num_features, "s": student.num_features,
                "f": self.assistant.num_features if self.assistant is not None else 0}
        self.feature_losses = nn.ModuleDict()
        if p.w_nce > 0:
            for i, j in self.pairs:
                self.feature_losses[i + j] = (
                    InfoNCE(dims[i], dims[j], p.proj_dim, p.nce_tau, p.nce_tau_min, p.nce_tau_max)
                    if p.feature_loss == "infonce" else FeatureMSE(dims[i], dims[j]))

    def extra_modules(self) -> nn.Module:
        """L2G and the loss heads; F's other pieces belong to the student or the (frozen) teacher."""
        extra = nn.ModuleDict({"feature_losses": self.feature_losses})
        if self.assistant is not None:
            extra["l2g"] = self.assistant.l2g
        return extra

    def assistant_outputs(self, image: Tensor, s_out: ModelOutput, t_out: ModelOutput | None = None
                          ) -> tuple[Tensor, Tensor]:
        """F's (feature, logits), continuing from its front model's own S3 output (see the module doc)."""
        if self.assistant.front_role == "student":
            return self.assistant.fuse(s_out.stage_outputs[2])
        t_out = t_out if t_out is not None else self.teacher_outputs(image)
        return self.assistant.fuse(t_out.stage_outputs[2])

    def forward_train(self, image: Tensor, target: Tensor, *, epoch: float = 0.0
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg.fbt
        t_out = self.teacher_outputs(image)  # no grad
        s_out = self.student.forward_all(image)
        knowledge = {"t": (t_out.feature, t_out.logits), "s": (s_out.feature, s_out.logits)}
        losses = {"ce_student": F.cross_entropy(s_out.logits, target)}
        if self.assistant is not None:
            knowledge["f"] = self.assistant_outputs(image, s_out, t_out)
            losses["ce_assistant"] = F.cross_entropy(knowledge["f"][1], target)
        y = one_hot(target, s_out.logits.shape[1])
        feature_name = "nce" if cfg.feature_loss == "infonce" else "mse"
        for i, j in self.pairs:
            f_i, z_i = knowledge[i]  # (feature, logits)
            if i == "t" or (i == "f" and cfg.detach_assistant):
                f_i, z_i = f_i.detach(), z_i.detach()
            f_j, z_j = knowledge[j]
            if cfg.w_nce > 0:
                losses[f"{feature_name}_{i}{j}"] = cfg.w_nce * self.feature_losses[i + j](f_i, f_j)
            if cfg.w_ofa > 0:
                losses[f"ofa_{i}{j}"] = cfg.w_ofa * ofa_loss(z_j, z_i, y, cfg.ofa_eps, cfg.ofa_temperature)
        return s_out.logits, losses

    def eval_logits(self, image: Tensor) -> dict[str, Tensor]:
        s_out = self.student.forward_all(image)
        if self.assistant is None:
            return {"student": s_out.logits}
        return {"student": s_out.logits, "assistant": self.assistant_outputs(image, s_out)[1]}


def load_assistant(extras_path: Path, teacher: StagedModel, student: StagedModel) -> FusedAssistant | None:
    """Rebuild the trained assistant from ``extras.pt`` (its L2G) and the two models; None if the method had
    none (not FBT, or FBT with ``pairs: [ts]``)."""
    extras = load_checkpoint(extras_path, "distillation extras")
    if extras.get("method") != "fbt":
        return None
    p = DistillParams.model_validate(extras["distill"]).fbt
    if not any("f" in pair for pair in p.active_pairs):
        return None
    for role, model in (("teacher", teacher), ("student", student)):
        if extras[role]["name"] != model.spec.name:
            raise CakdError(f"{extras_path} was trained with {role} {extras[role]['name']}, "
                            f"not {model.spec.name}")
    assistant = build_fused_assistant(teacher, student, attention=p.assistant_attention, heads=p.l2g_heads,
                                      window=p.l2g_window)
    prefix = "l2g."
    assistant.l2g.load_state_dict({k[len(prefix):]: v for k, v in extras["state_dict"].items()
                                   if k.startswith(prefix)})
    return assistant.eval()
