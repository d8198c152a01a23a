"""The parts ``fit`` is made of, each on its own: loaders, one epoch, evaluation by role, checkpoint restore."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.progress import Progress
from torch.utils.data import TensorDataset

from cakd.pipeline.distill import build_distiller
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model
from cakd.pipeline.reporting.metrics import top1_accuracy
from cakd.pipeline.settings.params import TrainParams
from cakd.pipeline.training.loop import (
    Run,
    RunState,
    build_loaders,
    build_optimisation,
    end_of_epoch,
    evaluate_heads,
    open_live,
    restore,
    train_one_epoch,
)
from cakd.pipeline.training.placement import Placement

CPU = Placement(torch.device("cpu"))


def _data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randn(n, 3, 16, 16, generator=g) + labels.view(-1, 1, 1, 1).float()  # learnable
    return TensorDataset(images, labels)


def _run(tmp_path: Path, role: str = "teacher") -> Run:
    torch.manual_seed(0)
    distiller = build_distiller("ce", create_model(ModelSpec("resnet10t", 4, 16)), None)
    return Run(distiller, CPU, tmp_path, "abc", role, role, epochs=2)


def test_loaders_refuse_a_set_smaller_than_one_batch() -> None:
    with pytest.raises(CakdError, match="fewer than one batch"):
        build_loaders(_data(8), _data(8), 16, CPU, seed=0)


def test_one_epoch_learns_and_heads_are_named_by_role(tmp_path: Path) -> None:
    run = _run(tmp_path)
    loaders = build_loaders(_data(64), _data(32, seed=1), 16, CPU, seed=0)
    recipe = TrainParams(epochs=2, batch_size=16, lr=0.01, warmup_epochs=0)
    opt = build_optimisation(run.distiller, recipe, recipe.lr, 2, len(loaders.train), CPU)
    with Progress(disable=True) as progress:
        first = train_one_epoch(run, run.distiller, loaders, opt, 0, None, progress)
        second = train_one_epoch(run, run.distiller, loaders, opt, 1, None, progress)
    assert second["train/loss"] < first["train/loss"]
    heads = evaluate_heads(run.distiller, loaders.test, CPU.device, role="teacher")
    assert list(heads) == ["teacher"]
    assert heads["teacher"] == top1_accuracy(run.distiller.student.eval(), loaders.test)


def test_restore_takes_only_its_own_checkpoint(tmp_path: Path) -> None:
    run = _run(tmp_path)
    loaders = build_loaders(_data(32), _data(16, seed=1), 16, CPU, seed=0)
    recipe = TrainParams(epochs=2, batch_size=16, warmup_epochs=0)
    opt = build_optimisation(run.distiller, recipe, recipe.lr, 2, len(loaders.train), CPU)
    state = RunState()
    with Progress(disable=True) as progress:
        record = train_one_epoch(run, run.distiller, loaders, opt, 0, None, progress)
    end_of_epoch(run, state, loaders, record, open_live(run, resume=False), opt)
    assert (tmp_path / "best.pt").exists() and state.epoch == 1
    assert (tmp_path / "live/plots/metrics/test/acc_teacher.tsv").exists()
    restored = restore(_run(tmp_path), opt)
    assert (restored.epoch, restored.best) == (1, state.best) and len(restored.history) == 1
    other = Run(run.distiller, CPU, tmp_path, "another-fingerprint", "teacher", "teacher", epochs=2)
    assert restore(other, opt) == RunState()
