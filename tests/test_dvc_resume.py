"""DVC runs that need their own project rather than the shared tiny run of tests/test_dvc_pipeline.py: a killed
distillation resumes on the next `dvc repro`, machine settings keep a checkpoint resumable, and a typo in
params.yaml stops the pipeline at its first stage with one line. A file of their own lets a second test worker
run them beside that module's shared run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run_cakd
from tests.test_dvc_pipeline import dvc, edit_params, new_project, ran


@pytest.mark.slow
def test_machine_settings_keep_the_checkpoint_resumable(project: Path) -> None:
    args = ["distill", "--method", "ce", "--out", "run", "--resume"]
    run_cakd(*args, cwd=project, check=True)
    again = run_cakd(*args, "-S", "machine.threads=2", "-S", "machine.num_workers=1", cwd=project, check=True)
    assert "resuming ce from epoch 2/2" in again.stderr
    other = run_cakd(*args, "-S", "train.lr=0.01", cwd=project, check=True)
    assert "made with other settings or inputs: starting over" in other.stderr


@pytest.mark.slow
def test_killed_distill_resumes_on_the_next_repro(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    edit_params(project, train={"epochs": 4})
    dvc(project, "repro", "baseline@deit", "train_teacher")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(["dvc", "repro", "distill@deit"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = project / "artifacts/students/deit/distill/checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the cakd process under it, mid-epoch 2
    proc.wait()
    assert not (project / "artifacts/students/deit/distill/model.pt").exists()

    resumed = dvc(project, "repro", "distill@deit")
    assert "resuming fbt from epoch" in resumed.stdout + resumed.stderr
    metrics = json.loads((project / "reports/students/deit/distill.json").read_text())
    assert metrics["epochs"] == 4 and metrics["accuracy"] is not None
    assert ran(dvc(project, "repro", "distill@deit")) == []


def test_a_typo_in_params_stops_the_pipeline_with_one_line(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    edit_params(project, train={"epochz": 3})
    proc = dvc(project, "repro", check=False)
    assert proc.returncode != 0
    assert "cakd: error: invalid params in params.yaml: unknown key 'train.epochz'" in proc.stdout + proc.stderr
    assert ran(proc) == ["prepare"]  # the first stage already refuses the file
    assert not (project / "artifacts/data/manifest.json").exists()
