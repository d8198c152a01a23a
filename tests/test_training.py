"""The shared training loop: outputs, resume after SIGKILL, NaN stop, and two-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cakd.pipeline.files.checkpoints import load_checkpoint
from cakd.pipeline.models import load_model, model_from_params
from cakd.pipeline.settings.loading import load_params
from cakd.pipeline.training.placement import seed_everything, weights_digest
from tests.conftest import run_cakd, run_cakd_here, tiny_params, write_params


def _metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def test_train_teacher_leaves_checkpoint_metrics_and_plots(project: Path) -> None:
    run_cakd("train-teacher", cwd=project, check=True)
    out = project / "artifacts/teacher"
    assert {"model.pt", "best.pt", "checkpoint.pt", "metrics.json"} <= {p.name for p in out.iterdir()}
    live = json.loads((out / "live/metrics.json").read_text())
    assert live["step"] == 1  # two epochs logged: steps 0 and 1
    assert (out / "live/plots/metrics/test/acc_teacher.tsv").read_text().count("\n") == 3
    losses = [row["train/loss"] for row in load_checkpoint(out / "checkpoint.pt")["history"]]
    assert losses[1] < losses[0]  # it learns
    model = load_model(out / "model.pt")
    assert model.spec.name == "vit_tiny_patch16_224" and model.spec.num_classes == 10


def test_eval_every_evaluates_on_its_epochs_and_after_the_last_without_changing_the_weights(project: Path) -> None:
    write_params(project / "params.yaml", tiny_params(train={"epochs": 3, "eval_every": 2}))
    run_cakd("train-teacher", "--out", "sparse", cwd=project, check=True)
    write_params(project / "params.yaml", tiny_params(train={"epochs": 3, "eval_every": 1}))
    run_cakd("train-teacher", "--out", "dense", cwd=project, check=True)
    history = load_checkpoint(project / "sparse/checkpoint.pt")["history"]
    assert [row["epoch"] for row in history if "test/acc_teacher" in row] == [2, 3]
    assert _metrics(project / "sparse")["accuracy"] == _metrics(project / "dense")["accuracy"]
    sparse, dense = (load_model(project / f"{name}/model.pt") for name in ("sparse", "dense"))
    assert weights_digest(sparse) == weights_digest(dense)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(project: Path) -> None:
    params = tiny_params(train={"epochs": 4})
    write_params(project / "params.yaml", params)
    run_cakd("train-teacher", "--out", "full", cwd=project, check=True)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cakd.pipeline.cli", "train-teacher", "--out", "killed"],
                            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = project / "killed/checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-epoch 2: epoch 1 is checkpointed, the rest is lost
    proc.wait()
    assert load_checkpoint(ckpt)["epoch"] < 4, "the run finished before it could be killed"

    resumed = run_cakd("train-teacher", "--out", "killed", "--resume", cwd=project, check=True)
    assert "resuming teacher from epoch" in resumed.stderr
    assert _metrics(project / "killed")["accuracy"] == _metrics(project / "full")["accuracy"]
    assert weights_digest(load_model(project / "killed/model.pt")) == weights_digest(
        load_model(project / "full/model.pt"))


def test_resume_ignores_a_checkpoint_made_with_other_settings(project: Path) -> None:
    run_cakd("train-teacher", "-S", "train.epochs=1", cwd=project, check=True)
    proc = run_cakd("train-teacher", "--resume", "-S", "train.lr=0.001", cwd=project, check=True)
    assert "was made with other settings or inputs: starting over" in proc.stderr


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(project: Path, capsys, monkeypatch) -> None:
    code, err = run_cakd_here(["train-teacher", "-S", "train.epochs=1"], project, capsys, monkeypatch)
    assert code == 0
    ckpt = project / "artifacts/teacher/checkpoint.pt"
    before = ckpt.read_bytes()
    code, err = run_cakd_here(["train-teacher", "--resume", "-S", "train.epochs=3", "-S", "train.lr=1e30"],
                              project, capsys, monkeypatch)
    assert code == 2
    assert "loss became NaN/inf at epoch 1" in err and "last good checkpoint kept" in err
    assert ckpt.read_bytes() == before


@pytest.mark.slow
def test_machine_gpus_two_runs_two_gloo_processes_that_end_with_identical_weights(project: Path) -> None:
    """``machine.gpus: 2`` on CPU: ``cakd train-teacher`` relaunches itself under torchrun (gloo)."""
    proc = run_cakd("train-teacher", "--resume", "-S", "train.epochs=1", "-S", "train.batch_size=16", "-S",
                    "machine.gpus=2", cwd=project, check=True)
    assert "Traceback" not in proc.stderr
    metrics = _metrics(project / "artifacts/teacher")
    assert metrics["world_size"] == 2 and metrics["effective_batch_size"] == 16  # the global batch is kept
    digests = metrics["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert weights_digest(load_model(project / "artifacts/teacher/model.pt")) == digests[0]
    seed_everything(0)  # the weights both ranks started from (train-teacher seeds before building the model)
    untrained, _ = model_from_params(load_params(project / "params.yaml").teacher, 10, 16)
    assert weights_digest(untrained) != digests[0]  # in sync because they trained together, not because idle
    # A failure in the processes is one line from them, not torchrun's traceback; the exit code is cakd's.
    failed = run_cakd("train-teacher", "--resume", "-S", "train.epochs=2", "-S", "train.batch_size=16", "-S",
                      "machine.gpus=2", "-S", "train.lr=1e30", cwd=project)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr and "ChildFailedError" not in failed.stderr
    assert failed.stderr.count("cakd: error: ") == 1 and "loss became NaN/inf" in failed.stderr
