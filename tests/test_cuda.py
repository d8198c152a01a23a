"""The CUDA paths, run wherever a CUDA GPU is visible (the ``cuda`` marker; skipped only where none is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.progress import Progress
from torch.utils.data import TensorDataset

from cakd.pipeline.distill import build_distiller
from cakd.pipeline.models import ModelSpec, create_model, save_model
from cakd.pipeline.settings.params import DistillParams, TrainParams
from cakd.pipeline.training.loop import Run, build_loaders, build_optimisation, train_one_epoch
from cakd.pipeline.training.placement import Placement
from cakd.pipeline.training.recipe import apply_recipe, plan_recipe
from tests.conftest import TINY_VIT, run_cakd, run_cakd_here

pytestmark = pytest.mark.cuda


def test_one_training_step_with_autocast_channels_last_and_compile(tmp_path: Path) -> None:
    gpu = Placement(torch.device("cuda", 0))
    torch.manual_seed(0)
    teacher = create_model(ModelSpec("vit_tiny_patch16_224", 4, 16, kwargs=TINY_VIT))
    distiller = build_distiller("kd", create_model(ModelSpec("resnet10t", 4, 16)), teacher,
                                DistillParams(method="kd")).to(gpu.device)
    recipe = TrainParams(epochs=1, batch_size=16, warmup_epochs=0, compile=True)
    plan = plan_recipe(distiller, "cuda", recipe.amp, recipe.compile)
    assert plan.channels_last == ("student",) and plan.compiled == ("student", "teacher")
    apply_recipe(distiller, plan)
    run = Run(distiller, gpu, tmp_path, "cuda", "student", "kd", epochs=1, plan=plan)
    labels = torch.arange(64) % 4
    data = TensorDataset(torch.randn(64, 3, 16, 16) + labels.view(-1, 1, 1, 1), labels)
    loaders = build_loaders(data, data, 16, gpu, seed=0)
    opt = build_optimisation(distiller, recipe, recipe.lr, 1, len(loaders.train), gpu)
    before = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    with Progress(disable=True) as progress:
        record = train_one_epoch(run, distiller, loaders, opt, 0, None, progress)
    assert torch.isfinite(torch.tensor(record["train/loss"]))
    assert any(not torch.equal(before[k], v) for k, v in distiller.student.state_dict().items())
    conv = next(m for m in distiller.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_torch_cuda_bench_row(project: Path, capsys, monkeypatch) -> None:
    torch.manual_seed(0)
    save_model(create_model(ModelSpec("resnet10t", 10, 16)), project / "model.pt")
    code, err = run_cakd_here(["bench-latency", "m=model.pt", "--data", "artifacts/data/manifest.json", "--out",
                               "bench", "-S", "deploy.runtimes=[torch,torch-cuda]", "-S", "deploy.precisions=[fp32]"],
                              project, capsys, monkeypatch)
    assert code == 0, err
    rows = json.loads((project / "bench/bench.json").read_text())["rows"]
    cuda = [r for r in rows if r["runtime"] == "torch-cuda"]
    assert cuda and all(r["status"] == "ok" and r["p50_ms"] > 0 for r in cuda)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with nccl needs two GPUs")
def test_ddp_with_nccl_on_two_gpus(project: Path) -> None:
    run_cakd("train-teacher", "-S", "train.epochs=1", "-S", "train.batch_size=16", "-S", "machine.gpus=2",
             cwd=project, check=True)
    report = json.loads((project / "artifacts/teacher/metrics.json").read_text())
    assert report["world_size"] == 2 and report["rank_digests"][0] == report["rank_digests"][1]
