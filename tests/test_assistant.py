"""The fused assistant: which pieces it takes from whom, that they are shared (not copied), that
gradients reach the student through it while the teacher stays untouched, and L2G's size and shapes."""

from __future__ import annotations

import pytest
import torch

from cakd.pipeline.distill import build_distiller
from cakd.pipeline.distill.assistant import build_fused_assistant
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model
from cakd.pipeline.models.base import StagedModel, StageShape
from cakd.pipeline.settings.params import DistillParams

torch.set_num_threads(1)

TINY = {  # small widths/depths so that every pair runs in well under a second on a CPU
    "resnet18": {}, "resnet10t": {}, "mobilenetv2_050": {},
    "convnext_atto": {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)},
    "vit_tiny_patch16_224": {"embed_dim": 64, "depth": 4, "num_heads": 2},
    "deit_tiny_patch16_224": {"embed_dim": 48, "depth": 4, "num_heads": 2},
    "swin_tiny_patch4_window7_224": {"embed_dim": 32, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 4, 8)},
    "resmlp_12_224": {"embed_dim": 64, "num_blocks": 4},
    "mixer_s16_224": {"embed_dim": 64, "num_blocks": 4},
}
IMG = 16


def tiny(name: str, classes: int = 5, img: int = IMG) -> StagedModel:
    return create_model(ModelSpec(name, classes, img, kwargs=TINY[name]))


# (teacher, student, who gives stem+S1..S3, who gives S4+head)
PAIRS = [
    ("vit_tiny_patch16_224", "resnet18", "student", "teacher"),
    ("swin_tiny_patch4_window7_224", "resnet18", "student", "teacher"),
    ("vit_tiny_patch16_224", "mobilenetv2_050", "student", "teacher"),
    ("convnext_atto", "deit_tiny_patch16_224", "teacher", "student"),
    ("convnext_atto", "resmlp_12_224", "teacher", "student"),
    ("convnext_atto", "mixer_s16_224", "teacher", "student"),
    ("resnet18", "resnet10t", "student", "teacher"),  # homogeneous CNN pair
    ("swin_tiny_patch4_window7_224", "vit_tiny_patch16_224", "student", "teacher"),  # both attention
]
F_LOSSES = ("ce_assistant", "nce_tf", "ofa_tf")  # the losses that only reach the student through F


@pytest.mark.parametrize(("t_name", "s_name", "front_role", "back_role"), PAIRS)
def test_assistant_is_built_from_the_pair_own_modules(t_name: str, s_name: str, front_role: str, back_role: str
                                                      ) -> None:
    torch.manual_seed(0)
    teacher, student = tiny(t_name), tiny(s_name)
    fused = build_fused_assistant(teacher, student)
    pair = {"teacher": teacher, "student": student}
    front, back = pair[front_role], pair[back_role]
    assert (fused.front_role, fused.back_role) == (front_role, back_role)
    assert fused.stem is front.stem and fused.head is back.head and fused.stage4 is back.stages[3]
    assert all(fused.stages[k] is front.stages[k] for k in range(3))
    homogeneous = (teacher.arch == "cnn") == (student.arch == "cnn")
    assert (fused.l2g.block is None) == homogeneous  # a plain projector between models of one kind

    # L2G hands the back model's S4 exactly the tensor shape it gets inside it (token grid, width, prefix tokens)
    x = torch.randn(4, 3, IMG, IMG)
    fused.eval()
    front_out = front.forward_all(x)
    with torch.no_grad():
        back_in = back.stem(x)
        for stage in back.stages[:3]:
            back_in = stage(back_in)
        assert fused.l2g(front_out.stage_outputs[2]).shape == back_in.shape
        # F continues from the front model's own S3 output: the distillers' shortcut gives F's full forward exactly
        feature, logits = fused(x)
        assert torch.allclose(fused.fuse(front_out.stage_outputs[2])[1], logits, atol=1e-5)
    assert feature.shape == (4, back.num_features) and logits.shape == (4, 5)

    fused.train()
    _, logits = fused(x)
    logits.sum().backward()
    assert all(p.grad is not None for p in fused.l2g.parameters())


@pytest.mark.parametrize(("t_name", "s_name"), [(t, s) for t, s, *_ in PAIRS[:7]])
def test_fbt_step_trains_student_through_the_assistant_and_never_touches_the_teacher(t_name: str,
                                                                                    s_name: str) -> None:
    torch.manual_seed(0)
    teacher, student = tiny(t_name), tiny(s_name)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = build_distiller("fbt", student, teacher, DistillParams(method="fbt"))
    distiller.train()
    fused = distiller.assistant
    x, y = torch.randn(6, 3, IMG, IMG), torch.randint(0, 5, (6,))

    # the F-path losses alone: the student's pieces inside F get a gradient, its other pieces none
    _, losses = distiller.forward_train(x, y)
    sum(losses[k] for k in F_LOSSES).backward()
    in_f = fused.stages if fused.front_role == "student" else torch.nn.ModuleList([fused.stage4, fused.head])
    not_in_f = student.stages[3] if fused.front_role == "student" else student.stages[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in in_f.parameters())
    assert all(p.grad is None for p in not_in_f.parameters())
    assert all(p.grad is None for p in teacher.parameters())

    # one optimiser step on the whole FBT loss
    student_before = [p.detach().clone() for p in in_f.parameters()]
    opt = torch.optim.SGD(distiller.trainable_parameters(), lr=0.1)
    opt.zero_grad()
    _, losses = distiller.forward_train(x, y)
    sum(losses.values()).backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(v, teacher_before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(in_f.parameters(), student_before, strict=True))
    assert not teacher.training and not any(m.training for m in teacher.modules())


def test_teacher_pieces_stay_in_eval_mode_inside_the_assistant() -> None:
    teacher, student = tiny("vit_tiny_patch16_224"), tiny("resnet18")
    fused = build_fused_assistant(teacher, student)
    fused.train()
    assert not fused.head.training and not any(m.training for m in fused.stage4.modules())
    assert fused.l2g.training and all(s.training for s in fused.stages)


def test_without_attention_stage_is_the_same_l2g_minus_the_swin_block() -> None:
    teacher, student = tiny("swin_tiny_patch4_window7_224"), tiny("resnet18")
    with_block = build_fused_assistant(teacher, student, attention=True)
    without = build_fused_assistant(teacher, student, attention=False)
    assert with_block.l2g.block is not None and without.l2g.block is None
    block_params = sum(p.numel() for p in with_block.l2g.block.parameters())
    assert with_block.num_new_parameters - without.num_new_parameters == block_params
    assert without(torch.randn(2, 3, IMG, IMG))[1].shape == (2, 5)


def test_non_integer_grid_ratio_is_resampled() -> None:
    teacher, student = tiny("vit_tiny_patch16_224", img=24), tiny("mobilenetv2_050", img=24)
    fused = build_fused_assistant(teacher, student)  # MobileNetV2 S3 is 3x3, the ViT grid 6x6
    assert student.stage_shapes[2].grid == (3, 3) and teacher.stage_shapes[2].grid == (6, 6)
    assert fused.l2g.resample == (6, 6)
    assert fused(torch.randn(2, 3, 24, 24))[1].shape == (2, 5)


@pytest.mark.parametrize(("t_name", "t_kwargs", "s_name", "s_kwargs"), [
    ("vit_small_patch16_224", {}, "resnet18", {}),  # the paper's pairs
    ("swin_tiny_patch4_window7_224", {}, "resnet18", {}),
    ("swin_tiny_patch4_window7_224", {"patch_size": 4}, "convnext_atto", {}),  # compare_methods' pair A
    ("convnext_atto", {}, "deit_tiny_patch16_224", {"patch_size": 8, "depth": 8}),  # and its pair B
])
def test_l2g_adds_at_most_ten_percent_of_the_student(t_name: str, t_kwargs: dict, s_name: str, s_kwargs: dict
                                                     ) -> None:
    """L2G's Swin block runs at the student's S3 width, so a large teacher does not make it large."""
    student = create_model(ModelSpec(s_name, 100, 32, kwargs=s_kwargs))
    teacher = create_model(ModelSpec(t_name, 100, 32, kwargs=t_kwargs))
    fused = build_fused_assistant(teacher, student)
    ratio = fused.num_new_parameters / sum(p.numel() for p in student.parameters())
    print(f"L2G {t_name} -> {s_name} at 32 px: {fused.num_new_parameters} params, {ratio:.1%}")
    assert fused.l2g.block is not None and fused.l2g.block.norm1.normalized_shape[0] == \
        student.stage_shapes[2].channels
    assert ratio <= 0.10


def test_unfusable_pairs_say_why_and_list_supported_architectures() -> None:
    families = r"supported architectures: convolutional.*attention.*MLP"
    teacher, student = tiny("vit_tiny_patch16_224"), tiny("resnet18")
    student.arch = "rnn"
    with pytest.raises(CakdError, match=rf"the student resnet18 is of architecture 'rnn'; {families}"):
        build_fused_assistant(teacher, student)
    with pytest.raises(CakdError, match=rf"predict 10 and 5 classes; {families}"):
        build_fused_assistant(tiny("vit_tiny_patch16_224", classes=10), tiny("resnet18"))
    # a token-mixing MLP takes exactly its own token count: a wrong grid is caught when F is built
    teacher, student = tiny("convnext_atto"), tiny("mixer_s16_224")
    student.stage_shapes[2] = StageShape("tokens", 64, (3, 3))
    with pytest.raises(CakdError, match=r"cannot fuse teacher convnext_atto -> student mixer_s16_224: .*fails"):
        build_fused_assistant(teacher, student)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_model_feature_is_a_global_average_of_its_last_stage(name: str) -> None:
    """What InfoNCE aligns must be spatially agnostic: the feature of a ViT is the mean of its patch
    tokens (not its class token), and permuting the last stage's positions leaves every feature as it is."""
    model = tiny(name).eval()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        out = model.forward_all(x)
        last, shape = out.stage_outputs[3], model.stage_shapes[3]
        if shape.layout == "nchw":
            perm = last.flatten(2)[..., torch.randperm(last.shape[2] * last.shape[3])].view_as(last)
        elif shape.layout == "nhwc":
            perm = last.flatten(1, 2)[:, torch.randperm(last.shape[1] * last.shape[2])].view_as(last)
        else:
            n = shape.num_prefix_tokens
            perm = torch.cat([last[:, :n], last[:, n:][:, torch.randperm(last.shape[1] - n)]], dim=1)
        feature, logits = model.head(perm)
    torch.testing.assert_close(feature, out.feature, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, out.logits, rtol=1e-4, atol=1e-5)
    if name.startswith(("vit", "deit")):
        normed = model.head.norm(last)
        torch.testing.assert_close(out.feature, normed[:, shape.num_prefix_tokens:].mean(dim=1))
        assert not torch.allclose(out.feature, normed[:, 0])  # not the class token
