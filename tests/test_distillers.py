"""Every method behind the one interface: finite named losses, a working backward, the right parameters
to train, the frozen teacher, and FBT's ablation switches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cakd.pipeline.distill import METHODS, build_distiller
from cakd.pipeline.distill.base import to_nchw
from cakd.pipeline.distill.fbt import FBT
from cakd.pipeline.distill.losses import dkd_loss, kd_loss, ofa_loss
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model
from cakd.pipeline.models.base import ModelOutput, StagedModel
from cakd.pipeline.settings.params import DistillParams, FBTParams

torch.set_num_threads(1)

TINY = {
    "mobilenetv2_050": {},
    "convnext_atto": {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)},
    "vit_tiny_patch16_224": {"embed_dim": 64, "depth": 4, "num_heads": 2},
    "deit_tiny_patch16_224": {"embed_dim": 48, "depth": 4, "num_heads": 2},
    "swin_tiny_patch4_window7_224": {"embed_dim": 32, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 4, 8)},
    "resmlp_12_224": {"embed_dim": 64, "num_blocks": 4},
}
CLASSES, IMG = 5, 16
# a CNN student under an attention teacher, an attention student under a CNN teacher, attention -> MLP
PAIRS = [("vit_tiny_patch16_224", "mobilenetv2_050"), ("convnext_atto", "deit_tiny_patch16_224"),
         ("swin_tiny_patch4_window7_224", "resmlp_12_224")]
EXPECTED_LOSSES = {
    "ce": {"ce"}, "kd": {"ce", "kd"}, "dkd": {"ce", "dkd"}, "fitnet": {"ce", "fitnet"},
    "ofa": {"ce", "ofa_stage1", "ofa_stage2", "ofa_stage3", "ofa_stage4", "ofa_logits"},
    "fbt": {"ce_student", "ce_assistant", "nce_ts", "ofa_ts", "nce_tf", "ofa_tf", "nce_fs", "ofa_fs"},
}


def tiny(name: str, classes: int = CLASSES, img: int = IMG) -> StagedModel:
    return create_model(ModelSpec(name, classes, img, kwargs=TINY[name]))


def batch(soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.randn(6, 3, IMG, IMG), torch.randint(0, CLASSES, (6,))
    if soft:  # a mixup-like target: two classes blended
        y = 0.7 * F.one_hot(y, CLASSES).float() + 0.3 * F.one_hot(y.roll(1), CLASSES).float()
    return x, y


@pytest.mark.parametrize("soft", [False, True], ids=["hard-labels", "soft-targets"])
@pytest.mark.parametrize(("t_name", "s_name"), PAIRS)
@pytest.mark.parametrize("method", list(METHODS))
def test_method_returns_finite_named_losses_and_backpropagates(method: str, t_name: str, s_name: str,
                                                               soft: bool) -> None:
    torch.manual_seed(0)
    student, teacher = tiny(s_name), tiny(t_name)
    distiller = build_distiller(method, student, teacher, DistillParams(method=method))
    distiller.train()
    x, y = batch(soft)
    logits, losses = distiller.forward_train(x, y, epoch=0.5)
    assert logits.shape == (6, CLASSES) and set(losses) == EXPECTED_LOSSES[method]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    params = distiller.trainable_parameters()
    assert sum(p.grad is not None for p in params) > len(params) // 2
    assert all(p.grad is None for p in teacher.parameters())
    distiller.eval()
    with torch.no_grad():
        reported = distiller.eval_logits(x)
        assert torch.allclose(reported["student"], distiller(x)) and torch.allclose(distiller(x), student(x))
    assert set(reported) == ({"student", "assistant"} if method == "fbt" else {"student"})


@pytest.mark.parametrize("method", list(METHODS))
def test_trainable_parameters_are_student_plus_extras_once_and_never_the_teacher(method: str) -> None:
    student, teacher = tiny("deit_tiny_patch16_224"), tiny("convnext_atto")
    distiller = build_distiller(method, student, teacher, DistillParams(method=method))
    params = distiller.trainable_parameters()
    ids = [id(p) for p in params]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {id(p) for p in teacher.parameters()}
    extra = distiller.extra_modules()
    expected = {id(p) for p in student.parameters()} | ({id(p) for p in extra.parameters()} if extra else set())
    assert set(ids) == expected
    assert distiller.num_extra_parameters() == (sum(p.numel() for p in extra.parameters()) if extra else 0)
    distiller.train()
    assert student.training
    if method == "ce":  # the student alone: a teacher passed in is not held (nor frozen)
        assert distiller.teacher is None
        return
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("method", ["ce", "kd", "ofa", "fbt"])
def test_the_training_state_leaves_out_the_frozen_teacher_and_restores_everything_else(method: str) -> None:
    torch.manual_seed(0)
    teacher = tiny("vit_tiny_patch16_224")
    trained = build_distiller(method, tiny("mobilenetv2_050"), teacher, DistillParams(method=method))
    fresh = build_distiller(method, tiny("mobilenetv2_050"), teacher, DistillParams(method=method))
    state = trained.training_state()
    teacher_storage = {t.data_ptr() for t in teacher.state_dict().values()}
    assert not any(name.startswith("teacher.") for name in state)
    assert not any(t.data_ptr() in teacher_storage for t in state.values())  # nor under an assistant's name
    kept, whole = (sum(t.numel() for t in d.values()) for d in (state, trained.state_dict()))
    assert kept == whole if trained.teacher is None else kept < whole  # ce trains alone: nothing to leave out
    fresh.load_training_state(state)
    restored, original = fresh.state_dict(), trained.state_dict()
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[name], original[name]) for name in original)
    with pytest.raises(CakdError, match="does not fit"):
        fresh.load_training_state({**state, "student.extra_head.weight": torch.zeros(1)})
    if state:
        dropped = dict(state)
        dropped.pop(next(iter(dropped)))
        with pytest.raises(CakdError, match="does not fit"):
            fresh.load_training_state(dropped)


def test_ce_needs_no_teacher_and_every_other_method_does() -> None:
    distiller = build_distiller("ce", tiny("mobilenetv2_050"), None)
    _, losses = distiller(*batch())  # with a target, forward is the training step (what DDP wraps)
    assert set(losses) == {"ce"}
    for method in set(METHODS) - {"ce"}:
        with pytest.raises(CakdError, match=f"'{method}' needs a teacher"):
            build_distiller(method, tiny("mobilenetv2_050"), None)
    with pytest.raises(CakdError, match="unknown distillation method 'crd'"):
        build_distiller("crd", tiny("mobilenetv2_050"), None)
    with pytest.raises(CakdError, match="predicts 10 classes"):
        build_distiller("kd", tiny("mobilenetv2_050"), tiny("convnext_atto", classes=10))


def test_kd_and_dkd_are_their_loss_functions_with_dkd_warming_up() -> None:
    torch.manual_seed(0)
    student, teacher = tiny("mobilenetv2_050"), tiny("vit_tiny_patch16_224")
    x, y = batch()
    kd = build_distiller("kd", student, teacher, DistillParams(method="kd"))
    kd.eval()  # deterministic student logits
    with torch.no_grad():
        s, t = student(x), teacher(x)
        losses = kd.forward_train(x, y)[1]  # mdistiller's weights: 0.1 CE, 0.9 KD
        assert torch.allclose(losses["kd"], 0.9 * kd_loss(s, t, 4.0))
        assert torch.allclose(losses["ce"], 0.1 * F.cross_entropy(s, y))
        cfg = DistillParams(method="dkd", dkd={"warmup_epochs": 4})
        dkd = build_distiller("dkd", student, teacher, cfg).eval()
        full = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
        for epoch, factor in ((0.0, 0.0), (1.0, 0.25), (3.0, 0.75), (9.5, 1.0)):
            assert torch.allclose(dkd.forward_train(x, y, epoch=epoch)[1]["dkd"], factor * full)


def test_fitnet_matches_resized_projected_student_map_to_teacher_map() -> None:
    torch.manual_seed(0)
    student, teacher = tiny("mobilenetv2_050"), tiny("swin_tiny_patch4_window7_224")
    cfg = DistillParams(method="fitnet", fitnet={"stage": 1, "weight": 2.0})
    distiller = build_distiller("fitnet", student, teacher, cfg).eval()
    x, y = batch()
    with torch.no_grad():
        hint = to_nchw(teacher.forward_all(x).stage_outputs[1], teacher.stage_shapes[1])  # NHWC -> NCHW
        s_map = to_nchw(student.forward_all(x).stage_outputs[1], student.stage_shapes[1])
        s_map = F.interpolate(s_map, size=hint.shape[-2:], mode="bilinear", align_corners=False)
        expected = 2.0 * F.mse_loss(distiller.regressor(s_map), hint)
        assert torch.allclose(distiller.forward_train(x, y)[1]["fitnet"], expected, atol=1e-6)


def test_ofa_stages_are_validated() -> None:
    cfg = DistillParams(method="ofa", ofa={"stages": [0, 4]})
    with pytest.raises(CakdError, match="1-based stage numbers in 1..4"):
        build_distiller("ofa", tiny("mobilenetv2_050"), tiny("vit_tiny_patch16_224"), cfg)


def test_ofa_defaults_and_projectors_are_ofakd() -> None:
    """OFAKD (Hao840/OFAKD): stages 1-4, eps 1, t 1; CNN students get 4 - k stride-2 SepConvs (a 1x1 conv
    at stage 4) to max(student, teacher) width; ViT students patch merging + max(4 - k, 1) ViT blocks and
    the class token; every projector ends in a Linear to the classes."""
    p = DistillParams(method="ofa").ofa
    assert (p.stages, p.eps, p.temperature, p.weight, p.logits_weight) == ([1, 2, 3, 4], 1.0, 1.0, 1.0, 1.0)
    cnn = build_distiller("ofa", tiny("mobilenetv2_050"), tiny("vit_tiny_patch16_224"), DistillParams(method="ofa"))
    width = max(cnn.student.num_features, 64)
    for k in (1, 2, 3):
        convs = [m for m in cnn.projectors[str(k)] if isinstance(m, torch.nn.Sequential)]
        assert len(convs) == 4 - k and all(c[0].stride == (2, 2) for c in convs)
        assert convs[-1][5].out_channels == width
    last = cnn.projectors["4"][0]
    assert isinstance(last, torch.nn.Conv2d) and last.kernel_size == (1, 1) and last.out_channels == width
    vit = build_distiller("ofa", tiny("deit_tiny_patch16_224"), tiny("convnext_atto"), DistillParams(method="ofa"))
    for k in (1, 2, 3, 4):
        proj = vit.projectors[str(k)]
        assert len(proj.blocks) == max(4 - k, 1) and proj.num_prefix == 1 and len(proj.merge) > 0
    x, y = batch()
    vit.eval()
    with torch.no_grad():
        s_out = vit.student.forward_all(x)
        tokens = s_out.stage_outputs[0].clone()
        tokens[:, 1:] = tokens[:, 1:].flip(1)  # the patch tokens matter ...
        assert not torch.allclose(vit.projectors["1"](tokens), vit.projectors["1"](s_out.stage_outputs[0]))
        tokens = s_out.stage_outputs[0].clone()
        tokens[:, 0] += 1.0  # ... and so does the class token the head reads
        assert not torch.allclose(vit.projectors["1"](tokens), vit.projectors["1"](s_out.stage_outputs[0]))


def test_teacher_at_another_resolution_sees_a_resized_batch() -> None:
    """A 32 px teacher is given the 16 px batch resized to 32 px (its own input size), and its logits are the
    ones it gives on that resized batch."""
    student, teacher = tiny("mobilenetv2_050"), tiny("convnext_atto", img=32)
    distiller = build_distiller("kd", student, teacher, DistillParams(method="kd"))
    seen: list[tuple[int, ...]] = []
    teacher.stem.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    x, _ = batch()

    logits = distiller.teacher_outputs(x).logits

    assert seen == [(6, 3, 32, 32)]
    resized = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(logits, teacher(resized))


def fbt(**switches) -> tuple:
    torch.manual_seed(0)
    student, teacher = tiny("mobilenetv2_050"), tiny("vit_tiny_patch16_224")
    distiller = build_distiller("fbt", student, teacher, DistillParams(method="fbt", fbt=FBTParams(**switches)))
    distiller.train()
    return distiller, distiller.forward_train(*batch())[1]


NO_ASSISTANT = {"ce_assistant", "nce_tf", "ofa_tf", "nce_fs", "ofa_fs"}


@pytest.mark.parametrize(("switches", "dropped", "added"), [
    ({}, set(), set()),
    ({"pairs": ["ts"]}, NO_ASSISTANT, set()),
    ({"pairs": ["ts", "fs"]}, {"nce_tf", "ofa_tf"}, set()),
    ({"use_tf": False}, {"nce_tf", "ofa_tf"}, set()),
    ({"w_nce": 0.0}, {"nce_ts", "nce_tf", "nce_fs"}, set()),
    ({"w_ofa": 0.0}, {"ofa_ts", "ofa_tf", "ofa_fs"}, set()),
    ({"feature_loss": "mse"}, {"nce_ts", "nce_tf", "nce_fs"}, {"mse_ts", "mse_tf", "mse_fs"}),
    ({"assistant_attention": False}, set(), set()),
])
def test_fbt_ablation_switches(switches: dict, dropped: set, added: set) -> None:
    """Every variant's losses are exactly the terms its switches name, and it builds only what they need."""
    distiller, losses = fbt(**switches)
    assert set(losses) == (EXPECTED_LOSSES["fbt"] - dropped) | added
    assert set(distiller.feature_losses) == ({k.split("_")[1] for k in losses if k[:3] in ("nce", "mse")})
    if "ce_assistant" in dropped:  # no assistant: no L2G built, none trained, none evaluated
        assert distiller.assistant is None and "l2g" not in distiller.extra_modules()
        assert not any(name.startswith("assistant.") for name, _ in distiller.named_parameters())
        assert set(distiller.eval_logits(batch()[0])) == {"student"}
    else:
        assert (distiller.assistant.l2g.block is None) == (switches.get("assistant_attention") is False)
        trained = {id(p) for p in distiller.trainable_parameters()}
        assert all(id(p) in trained for p in distiller.assistant.l2g.parameters())
    sum(losses.values()).backward()


def test_fbt_pairs_are_named_once_each() -> None:
    with pytest.raises(ValueError, match="pairs must name at least one of ts, tf, fs"):
        FBTParams(pairs=[])
    with pytest.raises(ValueError, match="pairs must name at least one"):
        FBTParams(pairs=["ts", "ts"])


@pytest.mark.parametrize("detach", [True, False])
def test_fbt_detach_assistant_decides_whether_f_learns_from_s(detach: bool) -> None:
    distiller, losses = fbt(detach_assistant=detach)
    (losses["nce_fs"] + losses["ofa_fs"]).backward()
    l2g_grads = [p.grad for p in distiller.assistant.l2g.parameters()]
    assert all(g is None for g in l2g_grads) if detach else any(g is not None for g in l2g_grads)
    student_grads = [p.grad for p in distiller.student.stages[3].parameters()]
    assert any(g is not None for g in student_grads)  # S always learns from F


WIRING_PAIRS = [("vit_tiny_patch16_224", "mobilenetv2_050"), ("convnext_atto", "deit_tiny_patch16_224")]
WIRING = {"w_nce": 0.7, "w_ofa": 1.3, "ofa_eps": 1.5, "ofa_temperature": 2.0}  # no weight is 1: a lost one shows


@pytest.mark.parametrize(("t_name", "s_name"), WIRING_PAIRS)
def test_fbt_losses_are_the_method_term_by_term(t_name: str, s_name: str) -> None:
    """Each named loss against METHOD.md's formula built from the three models run on their own:
    L = CE(p_S) + CE(p_F) + sum over (i, j) in (T,S), (T,F), (F,S) of
    w_nce * InfoNCE(f_i, f_j) + w_ofa * OFA(p_j | p_i, y), i the teacher side (heads: head_i for i)."""
    torch.manual_seed(0)
    cfg = DistillParams(method="fbt", fbt=FBTParams(**WIRING))
    distiller = build_distiller("fbt", tiny(s_name), tiny(t_name), cfg).eval()
    x, y = batch()
    with torch.no_grad():
        _, losses = distiller.forward_train(x, y)
        t, s = distiller.teacher.forward_all(x), distiller.student.forward_all(x)
        knowledge = {"t": (t.feature, t.logits), "s": (s.feature, s.logits), "f": distiller.assistant(x)}
        y_hot = F.one_hot(y, CLASSES).float()
        expected = {"ce_student": F.cross_entropy(s.logits, y),
                    "ce_assistant": F.cross_entropy(knowledge["f"][1], y)}
        for i, j in (("t", "s"), ("t", "f"), ("f", "s")):
            (f_i, p_i), (f_j, p_j) = knowledge[i], knowledge[j]
            nce = distiller.feature_losses[i + j]
            z_i = F.normalize(nce.head_i(f_i), dim=1)
            z_j = F.normalize(nce.head_j(f_j), dim=1)
            sim = z_j @ z_i.t() / nce.log_tau.exp()
            target = torch.arange(len(x))
            expected[f"nce_{i}{j}"] = 0.7 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2
            expected[f"ofa_{i}{j}"] = 1.3 * ofa_loss(p_j, p_i, y_hot, 1.5, 2.0)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-4, atol=1e-6, msg=name)


class TeacherSideProbe(FBT):
    """FBT whose teacher outputs are leaves asking for a gradient: shows whether forward_train itself
    detaches the teacher side (the teacher's no_grad forward would otherwise hide a missing detach)."""

    def teacher_outputs(self, image: torch.Tensor) -> ModelOutput:
        out = super().teacher_outputs(image)
        self.leaves = (out.feature.requires_grad_(), out.logits.requires_grad_())
        return out


@pytest.mark.parametrize(("t_name", "s_name"), WIRING_PAIRS)
def test_fbt_never_sends_a_gradient_into_the_teacher_side(t_name: str, s_name: str) -> None:
    torch.manual_seed(0)
    distiller = TeacherSideProbe(tiny(s_name), tiny(t_name), DistillParams(method="fbt")).train()
    _, losses = distiller.forward_train(*batch())
    sum(losses.values()).backward()
    assert all(leaf.grad is None for leaf in distiller.leaves)


def _reached(module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("t_name", "s_name"), WIRING_PAIRS)
def test_each_fbt_term_reaches_exactly_the_parameters_it_should(t_name: str, s_name: str) -> None:
    """The student's CE trains the whole student and nothing else; the assistant's CE trains L2G and the
    student's own pieces inside F (its stem..S3 under an attention teacher, its S4 + head under a CNN teacher),
    never the student's other pieces; nothing ever reaches the teacher."""
    for term in ("ce_student", "ce_assistant"):
        torch.manual_seed(0)
        distiller = build_distiller("fbt", tiny(s_name), tiny(t_name), DistillParams(method="fbt")).train()
        _, losses = distiller.forward_train(*batch())
        losses[term].backward()
        student = {name for name, p in distiller.student.named_parameters() if p.requires_grad}
        inside_f = ("stem.", "stages.0.", "stages.1.", "stages.2.") if distiller.assistant.front_role == "student" \
            else ("stages.3.", "head.")
        wanted = student if term == "ce_student" else {n for n in student if n.startswith(inside_f)}
        assert _reached(distiller.student) == wanted, term
        l2g = {name for name, _ in distiller.assistant.l2g.named_parameters()}
        assert _reached(distiller.assistant.l2g) == (set() if term == "ce_student" else l2g), term
        assert _reached(distiller.teacher) == set(), term
