"""Each distillation loss against a hand computation on small fixed tensors (plain Python math)."""

from __future__ import annotations

import math

import pytest
import torch

from cakd.pipeline.distill.losses import FeatureMSE, InfoNCE, dkd_loss, info_nce, kd_loss, ofa_loss

S = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]  # student logits, 2 samples x 3 classes
T = [[2.0, 0.0, 1.0], [-0.5, 0.5, 2.5]]  # teacher logits
LABELS = [1, 2]


def softmax(row: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_kd_matches_hand_computation() -> None:
    t = 4.0
    expected = sum(kl(softmax(tr, t), softmax(sr, t)) for sr, tr in zip(S, T, strict=True)) / 2 * t * t
    assert kd_loss(torch.tensor(S), torch.tensor(T), t).item() == pytest.approx(expected, rel=1e-5)
    assert kd_loss(torch.tensor(T), torch.tensor(T), t).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_matches_hand_computation() -> None:
    alpha, beta, t = 1.0, 8.0, 2.0
    expected = 0.0
    for sr, tr, k in zip(S, T, LABELS, strict=True):
        ps, pt = softmax(sr, t), softmax(tr, t)
        tckd = kl([pt[k], 1 - pt[k]], [ps[k], 1 - ps[k]])
        qs = softmax([v for c, v in enumerate(sr) if c != k], t)  # distribution over non-target classes
        qt = softmax([v for c, v in enumerate(tr) if c != k], t)
        expected += (alpha * tckd + beta * kl(qt, qs)) * t * t / 2
    got = dkd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(LABELS), alpha, beta, t)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def mdistiller_dkd_float64(s: torch.Tensor, t_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
                           beta: float, t: float) -> torch.Tensor:
    """mdistiller/distillers/DKD.py:8-32 verbatim in float64 (there its sums of small probabilities do not
    underflow): the reference the log-space DKD must equal on saturated logits."""
    gt = torch.nn.functional.one_hot(labels, s.shape[1]).double()
    ps, pt = (s / t).softmax(1), (t_logits / t).softmax(1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum() * t * t / s.shape[0]
    qt = (t_logits / t - 1000.0 * gt).softmax(1)
    log_qs = (s / t - 1000.0 * gt).log_softmax(1)
    nckd = torch.nn.functional.kl_div(log_qs, qt, reduction="sum") * t * t / s.shape[0]
    return alpha * tckd + beta * nckd


def test_dkd_on_saturated_logits_matches_a_float64_reference_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    s64, t64 = torch.randn(16, 10, dtype=torch.float64) * 30, torch.randn(16, 10, dtype=torch.float64) * 30
    labels = torch.randint(0, 10, (16,))
    s64[0, labels[0]] = s64[0].min() - 30 * 4  # a target probability far below float32's old 1e-12 clamp
    s64.requires_grad_(True)
    ref = mdistiller_dkd_float64(s64, t64, labels, 1.0, 8.0, 4.0)
    (ref_grad,) = torch.autograd.grad(ref, s64)
    s32 = s64.detach().float().requires_grad_(True)
    got = dkd_loss(s32, t64.float(), labels, 1.0, 8.0, 4.0)
    (grad,) = torch.autograd.grad(got, s32)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)
    p_target = (s64.detach() / 4).softmax(1).gather(1, labels[:, None]).min().item()
    assert p_target < 1e-12 and grad.abs().sum() > 0


def test_ofa_matches_hand_computation() -> None:
    eps, t = 1.5, 2.0
    expected = 0.0
    for sr, tr, k in zip(S, T, LABELS, strict=True):
        qs, qt = softmax(sr, t), softmax(tr, t)
        y = [1.0 if c == k else 0.0 for c in range(3)]
        expected += sum(-((qt[c] + y[c]) ** eps - y[c]) * math.log(qs[c]) for c in range(3)) / 2
    y_onehot = torch.nn.functional.one_hot(torch.tensor(LABELS), 3)
    got = ofa_loss(torch.tensor(S), torch.tensor(T), y_onehot, eps, t)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # eps = 1 is plain cross-entropy against the teacher's soft labels
    soft_ce = -(torch.tensor(T).softmax(1) * torch.tensor(S).log_softmax(1)).sum(1).mean()
    assert ofa_loss(torch.tensor(S), torch.tensor(T), y_onehot, 1.0).item() == pytest.approx(soft_ce.item())


Z_I = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]  # unit rows: teacher-side embeddings
Z_J = [[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]  # learner embeddings


def hand_info_nce(z_i: list[list[float]], z_j: list[list[float]], tau: float) -> float:
    n = len(z_i)
    sim = [[sum(a * b for a, b in zip(z_j[r], z_i[c], strict=True)) / tau for c in range(n)] for r in range(n)]
    j_to_i = sum(-sim[k][k] + math.log(sum(math.exp(v) for v in sim[k])) for k in range(n)) / n
    i_to_j = sum(-sim[k][k] + math.log(sum(math.exp(sim[r][k]) for r in range(n))) for k in range(n)) / n
    return (j_to_i + i_to_j) / 2


def test_info_nce_matches_hand_computation() -> None:
    got = info_nce(torch.tensor(Z_I), torch.tensor(Z_J), 0.5)
    assert got.item() == pytest.approx(hand_info_nce(Z_I, Z_J, 0.5), rel=1e-5)


def test_info_nce_module_is_heads_then_normalise_then_symmetric_loss() -> None:
    nce = InfoNCE(2, 2, proj_dim=2, tau=0.5, tau_min=0.1, tau_max=1.0)
    with torch.no_grad():  # identity heads: the module reduces to the functional form on L2-normalised input
        for head in (nce.head_i, nce.head_j):
            head.weight.copy_(torch.eye(2))
            head.bias.zero_()
    scaled_i = torch.tensor(Z_I) * torch.tensor([[2.0], [3.0], [0.5]])  # scale must not matter
    got = nce(scaled_i, torch.tensor(Z_J))
    assert got.item() == pytest.approx(hand_info_nce(Z_I, Z_J, 0.5), rel=1e-5)
    got.backward()
    assert nce.log_tau.grad is not None and nce.head_j.weight.grad is not None


def pool_features(x: torch.Tensor, layout: str = "nchw", num_prefix_tokens: int = 0) -> torch.Tensor:
    """Global average over spatial positions, as the models' heads pool their features (the "spatial
    smoothing" before InfoNCE) in each stage layout: any order of the positions gives the same vector."""
    if layout == "nchw":
        return x.flatten(2).mean(dim=2)
    if layout == "nhwc":
        return x.flatten(1, 2).mean(dim=1)
    return x[:, num_prefix_tokens:].mean(dim=1)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "tokens"])
def test_info_nce_is_invariant_to_permuting_spatial_positions(layout: str) -> None:
    torch.manual_seed(0)
    nce = InfoNCE(8, 6, proj_dim=16)
    maps_i, maps_j = torch.randn(5, 8, 4, 4), torch.randn(5, 6, 4, 4)

    def as_layout(m: torch.Tensor) -> torch.Tensor:
        if layout == "nhwc":
            return m.permute(0, 2, 3, 1)
        if layout == "tokens":  # one class token in front of the patch tokens
            return torch.cat([torch.randn(m.shape[0], 1, m.shape[1]), m.flatten(2).transpose(1, 2)], 1)
        return m

    def shuffled(m: torch.Tensor) -> torch.Tensor:  # a different permutation of the 16 positions per image
        flat = m.flatten(2)
        return torch.stack([f[:, torch.randperm(16)] for f in flat]).reshape(m.shape)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        prefix = 1 if layout == "tokens" else 0
        return nce(pool_features(as_layout(a), layout, prefix), pool_features(as_layout(b), layout, prefix))

    base = loss(maps_i, maps_j)
    assert torch.allclose(loss(shuffled(maps_i), shuffled(maps_j)), base, atol=1e-6)
    # ... while matching the wrong images changes it: the loss does look at the content
    assert not torch.allclose(loss(maps_i, maps_j.roll(1, 0)), base, atol=1e-3)


def test_info_nce_temperature_stays_clamped() -> None:
    nce = InfoNCE(4, 4, proj_dim=8, tau=0.07, tau_min=0.05, tau_max=0.5)
    f_i, f_j = torch.randn(6, 4), torch.randn(6, 4)
    assert nce.tau.item() == pytest.approx(0.07)
    for wild, bound in ((10.0, 0.5), (-10.0, 0.05)):
        with torch.no_grad():
            nce.log_tau.fill_(wild)  # as a too-large optimiser step would leave it
        loss = nce(f_i, f_j)
        assert nce.tau.item() == pytest.approx(bound)
        assert nce.log_tau.item() == pytest.approx(math.log(bound))  # the parameter itself is back in range
        z_i, z_j = nce.embed(f_i, f_j)
        assert loss.item() == pytest.approx(info_nce(z_i, z_j, bound).item(), rel=1e-5)
    opt = torch.optim.SGD(nce.parameters(), lr=1e3)  # a huge step pushes log tau far out of range ...
    for _ in range(3):
        opt.zero_grad()
        nce(f_i, f_j).backward()
        opt.step()
        nce(f_i, f_j)
        assert 0.05 - 1e-6 <= nce.tau.item() <= 0.5 + 1e-6  # ... and the next use brings it back
    with pytest.raises(ValueError):
        InfoNCE(4, 4, tau=2.0, tau_min=0.01, tau_max=1.0)


def test_feature_mse_regresses_projected_learner_feature_onto_teacher_side() -> None:
    torch.manual_seed(0)
    mse = FeatureMSE(dim_i=3, dim_j=5)
    f_i, f_j = torch.randn(4, 3), torch.randn(4, 5)
    expected = ((mse.proj(f_j) - f_i) ** 2).mean()
    assert mse(f_i, f_j).item() == pytest.approx(expected.item())
