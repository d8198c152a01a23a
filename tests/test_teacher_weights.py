"""Teachers a user already has: weights files written by timm itself, fine-tuned or used as is, no network."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cakd.pipeline.models import load_model, model_from_params
from cakd.pipeline.settings.params import ModelParams
from tests.conftest import TINY_VIT, run_cakd, run_cakd_here, tiny_params, write_params


def timm_weights(path: Path, name: str, num_classes: int, **kwargs) -> dict[str, torch.Tensor]:
    """A real timm model's state dict saved as safetensors, as a user would download or export it."""
    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in timm.create_model(name, num_classes=num_classes, **kwargs)
             .state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


def test_imagenet_head_is_left_out_and_reported_in_one_line(tmp_path: Path) -> None:
    file = tmp_path / "resnet10t.safetensors"
    state = timm_weights(file, "resnet10t", 1000)
    model, source = model_from_params(ModelParams(model="resnet10t", weights=str(file)), 10, 72)
    assert torch.equal(model.stages[2][0].conv1.weight, state["layer3.0.conv1.weight"])
    assert torch.equal(model.stem[0][0].weight, state["conv1.0.weight"])  # above 64 px: timm's own stem
    assert model.head.classifier.weight.shape == (10, 512)
    assert source.report.count("\n") == 0
    assert "left out: fc.bias, fc.weight; new: head.classifier.weight, head.classifier.bias" in source.report
    assert source.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()


def test_own_class_head_under_a_wrapper_key_loads_whole(tmp_path: Path) -> None:
    state = timm.create_model("resnet10t", num_classes=10).state_dict()
    file = tmp_path / "finetuned.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}, file)  # DDP-saved
    model, source = model_from_params(ModelParams(model="resnet10t", weights=str(file)), 10, 72)
    assert torch.equal(model.head.classifier.weight, state["fc.weight"])
    assert "left out: none; new: none" in source.report
    # At 16 px the CIFAR stem replaces timm's: its weights are said to be left out, the new stem is new.
    _, small = model_from_params(ModelParams(model="resnet10t", weights=str(file)), 10, 16)
    assert "left out: conv1.0.weight, conv1.1.bias" in small.report and "new: stem.0.weight" in small.report


def test_hugging_face_folder_and_vit_resampled_by_timm(tmp_path: Path) -> None:
    folder = tmp_path / "vit-hf"
    state = timm_weights(folder / "model.safetensors", "vit_tiny_patch16_224", 1000, **TINY_VIT)
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224"}))
    params = ModelParams(model="vit_tiny_patch16_224", weights=str(folder), kwargs=TINY_VIT)
    model, source = model_from_params(params, 10, 16)  # patch 4 and a 4x4 grid instead of 16 / 14x14
    assert source.file == str(folder / "model.safetensors")
    assert torch.equal(model.stages[3][0].mlp.fc1.weight, state["blocks.3.mlp.fc1.weight"])
    # timm's checkpoint filter resampled the patch embedding and position embedding, so they load too.
    assert "left out: head.bias, head.weight; new: head.classifier.weight, head.classifier.bias" in source.report


def test_foreign_file_is_one_clear_error(project: Path, capsys, monkeypatch) -> None:
    (project / "junk.safetensors").write_bytes(b"not a tensor file")
    code, err = run_cakd_here(["train-teacher", "-S", "teacher.weights=junk.safetensors"], project, capsys,
                              monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "weights junk.safetensors cannot be read" in err
    code, err = run_cakd_here(["train-teacher", "-S", "teacher.weights=x.pt", "-S", "teacher.pretrained=true"],
                              project, capsys, monkeypatch)
    assert code == 2 and "set only one of pretrained, weights, checkpoint" in err


@pytest.mark.slow
def test_teacher_used_as_is_then_fine_tuned(project: Path) -> None:
    file = project / "teacher.safetensors"
    state = timm_weights(file, "resnet10t", 1000)
    write_params(project / "params.yaml", tiny_params(teacher={"model": "resnet10t", "weights": file.name,
                                                                "kwargs": {}}))
    used = run_cakd("train-teacher", "-S", "train.epochs=0", "--out", "as_is", cwd=project, check=True)
    assert "teacher used as is (no training): test teacher" in used.stderr
    assert "weights teacher.safetensors:" in used.stderr and "head.classifier.weight" in used.stderr
    metrics = json.loads((project / "as_is/metrics.json").read_text())
    assert metrics["teacher_source"] == {"file": "teacher.safetensors", "sha256": hashlib.sha256(
        file.read_bytes()).hexdigest(), "timm_name": "resnet10t", "fine_tuned": False}
    teacher = load_model(project / "as_is/model.pt")
    assert torch.equal(teacher.stages[0][0].conv1.weight, state["layer1.0.conv1.weight"])  # not trained
    assert {"model.pt", "best.pt", "checkpoint.pt"} <= {p.name for p in (project / "as_is").iterdir()}

    run_cakd("train-teacher", "-S", "train.epochs=1", "--out", "tuned", cwd=project, check=True)
    tuned = json.loads((project / "tuned/metrics.json").read_text())
    assert tuned["teacher_source"]["fine_tuned"] is True
    assert (project / "tuned/live/plots/metrics/test/acc_teacher.tsv").exists()
    student = run_cakd("distill", "--teacher", "tuned/model.pt", "-S", "distill.epochs=1", "--out", "kd",
                       cwd=project, check=True)
    assert "kd epoch 1/1" in student.stderr and "test student" in student.stderr
    assert (project / "kd/live/plots/metrics/test/acc_student.tsv").exists()


def test_used_as_is_needs_weights_and_students_need_epochs(project: Path, capsys, monkeypatch) -> None:
    code, err = run_cakd_here(["train-teacher", "-S", "train.epochs=0"], project, capsys, monkeypatch)
    assert code == 2 and "uses the teacher as is, but vit_tiny_patch16_224 has no weights" in err
    code, err = run_cakd_here(["distill", "--method", "ce", "-S", "train.epochs=0"], project, capsys, monkeypatch)
    assert code == 2 and "a student needs at least one epoch" in err


def hf_cache(home: Path, repo: str, state_file: Path) -> None:
    """A Hugging Face hub cache as ``hf_hub_download`` leaves it: refs/main -> snapshots/<commit>/file."""
    commit = "0" * 40
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs/main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "snapshots" / commit / "model.safetensors").write_bytes(state_file.read_bytes())


@pytest.mark.slow
def test_pretrained_offline_uses_the_local_cache_or_says_it_lacks_it(project: Path, monkeypatch) -> None:
    tmp_path = project
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = ("from cakd.pipeline.models import model_from_params; "
            "from cakd.pipeline.settings.params import ModelParams; "
            "m, s = model_from_params(ModelParams(model='resnet10t', pretrained=True), 10, 72); print(s.report)")
    write_params(tmp_path / "params.yaml", tiny_params(teacher={"model": "resnet10t", "pretrained": True,
                                                                 "kwargs": {}}))
    empty = run_cakd("train-teacher", cwd=tmp_path)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1
    assert "not in the local Hugging Face cache (HF_HUB_OFFLINE is set)" in empty.stderr

    repo = timm.models.get_pretrained_cfg("resnet10t").hf_hub_id
    timm_weights(tmp_path / "w.safetensors", "resnet10t", 1000)
    hf_cache(tmp_path / "hf", repo, tmp_path / "w.safetensors")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"models--{repo.replace('/', '--')}" in found.stdout and "left out: fc.bias, fc.weight" in found.stdout


def test_params_layer_imports_no_model_code() -> None:
    code = "import sys, cakd.pipeline.settings.params; print(sorted(m for m in ('torch', 'timm', " \
           "'cakd.pipeline.models') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("override", "owner"), [("distill.method=magic", "distillation method 'magic'"),
                                                  ("data.name=imagenet22k", "data source 'imagenet22k'")])
def test_allowed_names_come_from_their_owners(tmp_path: Path, override: str, owner: str, capsys, monkeypatch
                                              ) -> None:
    from cakd.pipeline.data import available_sources
    from cakd.pipeline.distill import METHODS

    write_params(tmp_path / "params.yaml", tiny_params())
    code, err = run_cakd_here(["train-teacher", "-S", override], tmp_path, capsys, monkeypatch)
    assert code == 2 and f"unknown {owner}" in err
    listed = err.split("available: ")[1].split(" (got")[0].split(", ")
    assert listed in (list(METHODS), available_sources())
