"""What a CUDA machine would switch on, decided here on the CPU: the recipe and torchrun's command line."""

from __future__ import annotations

import sys

import pytest
import torch

from cakd.pipeline.distill import build_distiller
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model
from cakd.pipeline.settings.params import DistillParams, MachineParams
from cakd.pipeline.training.launch import rendezvous_id, shown_lines, torchrun_command
from cakd.pipeline.training.recipe import RecipePlan, apply_recipe, pieces, plan_recipe, to_input_format
from tests.conftest import TINY_VIT


def _distiller(student: str = "resnet10t"):
    torch.manual_seed(0)
    teacher = create_model(ModelSpec("vit_tiny_patch16_224", 4, 16, kwargs=TINY_VIT))
    return build_distiller("kd", create_model(ModelSpec(student, 4, 16)), teacher, DistillParams(method="kd"))


def test_cuda_recipe_decisions() -> None:
    cnn_student = _distiller()
    on_gpu = plan_recipe(cnn_student, "cuda", "auto", compile_=True, bf16=True)
    assert on_gpu == RecipePlan(("student",), ("student", "teacher"), "bfloat16")  # the ViT teacher stays NCHW
    assert plan_recipe(cnn_student, "cuda", "auto", False, bf16=False).autocast == "float16"  # with a scaler
    assert plan_recipe(cnn_student, "cuda", "off", False, bf16=True).autocast == "off"
    assert plan_recipe(cnn_student, "cpu", "auto", False) == RecipePlan((), (), "off")  # the CPU recipe is as before
    assert plan_recipe(_distiller("deit_tiny_patch16_224"), "cuda", "auto", False, True).channels_last == ()


def test_applied_recipe_keeps_weights_and_checkpoint_names() -> None:
    distiller = _distiller()
    before = {k: v.clone() for k, v in distiller.state_dict().items()}
    plan = RecipePlan(("student",), ("student", "teacher"), "off")
    apply_recipe(distiller, plan)
    after = distiller.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    conv = next(m for m in distiller.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(piece._compiled_call_impl is not None for piece in pieces(distiller.teacher))
    images = to_input_format(torch.randn(2, 3, 16, 16), plan)
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_one_process_needs_no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert torchrun_command(MachineParams(), ["distill"], cuda_devices=8) is None
    monkeypatch.setenv("LOCAL_RANK", "0")  # already one of torchrun's processes: never a second launch
    assert torchrun_command(MachineParams(gpus=2), ["distill"], None) is None


def test_torchrun_command_from_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["distill", "--student", "deit", "-S", "seed=1"]
    local = torchrun_command(MachineParams(gpus=2), argv, cuda_devices=None)
    assert local == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                     "-m", "cakd.pipeline.cli", *argv]
    nodes = torchrun_command(MachineParams(gpus=8, nnodes=2, rdzv_endpoint="node0:29400"), argv, cuda_devices=8)
    assert nodes[5:13] == ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node0:29400",
                           "--rdzv-id", rendezvous_id(argv)]
    assert rendezvous_id(argv) == rendezvous_id(list(argv)) != rendezvous_id(["train-teacher"])


def test_torchrun_refusals_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with pytest.raises(CakdError, match=r"gpus is 4 but this node sees 2 GPU\(s\) \(CUDA_VISIBLE_DEVICES=2,3\)"):
        torchrun_command(MachineParams(gpus=4), ["distill"], cuda_devices=2)
    with pytest.raises(CakdError, match="set machine.rdzv_endpoint"):
        torchrun_command(MachineParams(nnodes=2), ["distill"], cuda_devices=None)


def test_torchrun_failure_report_is_cut_to_the_processes_line() -> None:
    error = "cakd: error: loss became NaN/inf\n"
    lines = ["teacher epoch 1/2: loss 1.0\n", error, error,
             "E1207 02:55:00.123000 4242 torch/distributed/elastic/multiprocessing/api.py:900] failed (exitcode: 2)\n",
             "Traceback (most recent call last):\n", '  File "run.py", line 9, in <module>\n',
             "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n", "=====\n"]
    assert list(shown_lines(lines)) == lines[:2]
    crash = ["Traceback (most recent call last):\n", "ZeroDivisionError: division by zero\n"]
    assert list(shown_lines(crash)) == crash  # a process's own crash is shown whole
