"""The distillation losses, as plain functions and small modules (all computed in float32).

``kd_loss`` (Hinton), ``dkd_loss`` (decoupled KD), ``ofa_loss`` (One-for-All's adaptive target
enhancement), ``InfoNCE`` (batch-wise, spatially agnostic feature alignment with a learnable temperature)
and ``FeatureMSE`` (the paper's "MSE instead of InfoNCE" ablation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(p_T / t) || softmax(p_S / t)) * t^2, averaged over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float, beta: float,
             temperature: float) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): alpha * TCKD + beta * NCKD, each a KL times t^2, batch mean.

    As mdistiller/distillers/DKD.py:8-32 defines it, but in log space throughout: TCKD compares the binary
    (target, all others) probabilities, whose logs are log-sum-exps of the logits (mdistiller takes the log
    of summed probabilities, which underflows to log 0 on confident logits); NCKD the distributions over
    the non-target classes, which are selected instead of masked with mdistiller's -1000 offset (same value
    whenever that offset masks fully). ``labels`` are class indices (B,).
    """
    t = temperature
    s, te = student_logits.float() / t, teacher_logits.float() / t
    gt = F.one_hot(labels, s.shape[1]).bool()
    tckd = F.kl_div(_log_binary(s, gt), _log_binary(te, gt), reduction="batchmean", log_target=True) * t * t
    rows, others = s.shape[0], s.shape[1] - 1
    log_q_s = F.log_softmax(s[~gt].view(rows, others), dim=1)
    log_q_t = F.log_softmax(te[~gt].view(rows, others), dim=1)
    nckd = F.kl_div(log_q_s, log_q_t, reduction="batchmean", log_target=True) * t * t
    return alpha * tckd + beta * nckd


def _log_binary(logits: Tensor, gt: Tensor) -> Tensor:
    """log (p_target, p_others) (B, 2) from logits, without forming 1 - p_target."""
    lse = logits.logsumexp(dim=1, keepdim=True)
    log_target = logits[gt].unsqueeze(1) - lse
    log_others = logits.masked_fill(gt, float("-inf")).logsumexp(dim=1, keepdim=True) - lse
    return torch.cat([log_target, log_others], dim=1)


def ofa_loss(student_logits: Tensor, teacher_logits: Tensor, y_onehot: Tensor, eps: float,
             temperature: float = 1.0) -> Tensor:
    """OFA (Hao et al. 2023): mean over batch of sum_c -((q_T + y)^eps - y) * log q_S."""
    log_q_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    q_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    y = y_onehot.float()
    weight = (q_t + y).pow(eps) - y
    return (-weight * log_q_s).sum(dim=1).mean()


def info_nce(z_i: Tensor, z_j: Tensor, tau: Tensor | float) -> Tensor:
    """Symmetric InfoNCE between two batches of L2-normalised embeddings: row k of each is a positive
    pair, the other rows of the batch are negatives; both directions averaged."""
    logits = z_j @ z_i.t() / tau  # (B_j, B_i): learner sample k against every teacher-side sample
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


class InfoNCE(nn.Module):
    """InfoNCE between pooled features f_i (teacher side) and f_j (learner): each side gets its own
    linear projection head to ``proj_dim``, then L2 normalisation; similarities / tau.

    tau is learnable in log space and kept in [tau_min, tau_max]: the parameter itself is clamped
    before each use (as CLIP does with its logit scale), so it never drifts out of range.
    """

    def __init__(self, dim_i: int, dim_j: int, proj_dim: int = 128, tau: float = 0.07,
                 tau_min: float = 0.01, tau_max: float = 1.0) -> None:
        super().__init__()
        if not 0 < tau_min <= tau <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau <= tau_max, got {tau_min}, {tau}, {tau_max}")
        self.head_i = nn.Linear(dim_i, proj_dim)
        self.head_j = nn.Linear(dim_j, proj_dim)
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        self.log_tau_min, self.log_tau_max = math.log(tau_min), math.log(tau_max)

    @property
    def tau(self) -> Tensor:
        return self.log_tau.detach().clamp(self.log_tau_min, self.log_tau_max).exp()

    def embed(self, f_i: Tensor, f_j: Tensor) -> tuple[Tensor, Tensor]:
        z_i = F.normalize(self.head_i(f_i).float(), dim=1)
        z_j = F.normalize(self.head_j(f_j).float(), dim=1)
        return z_i, z_j

    def forward(self, f_i: Tensor, f_j: Tensor) -> Tensor:
        with torch.no_grad():
            self.log_tau.clamp_(self.log_tau_min, self.log_tau_max)
        z_i, z_j = self.embed(f_i, f_j)
        return info_nce(z_i, z_j, self.log_tau.exp())


class FeatureMSE(nn.Module):
    """The ablation "MSE instead of InfoNCE": the learner's pooled feature, linearly projected to the
    teacher side's width, regressed onto it (the teacher side is detached by the caller)."""

    def __init__(self, dim_i: int, dim_j: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_j, dim_i)

    def forward(self, f_i: Tensor, f_j: Tensor) -> Tensor:
        return F.mse_loss(self.proj(f_j).float(), f_i.float())
