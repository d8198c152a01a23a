"""`dvc repro` end to end on a tiny setting: runs, is a no-op the second time, re-runs only what a
param change touches, resumes a killed distillation, and stops cleanly on bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params, write_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "train_teacher", "baseline", "distill", "evaluate", "export", "bench", "summary"]


def dvc(project: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def ran(proc: subprocess.CompletedProcess) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in proc.stdout]


def edit_params(project: Path, **changes: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in changes.items():
        params[section] = {**params[section], **values}
    write_params(project / "params.yaml", params)


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    """A copy of this repository's pipeline (dvc.yaml + code) with a tiny params.yaml, in its own git repo."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    for package in ("pipeline", "export"):
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(project / "params.yaml", tiny_params(
        student={"model": "deit_tiny_patch16_224", "kwargs": {"embed_dim": 32, "depth": 4, "num_heads": 2}},
        teacher={"model": "resnet10t", "kwargs": {}},
        distill={"method": "fbt"},
        train={"epochs": 2, "batch_size": 32, "lr": 0.002, "warmup_epochs": 0, "threads": 1}))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, "init", "-q")
    dvc(project, "config", "core.analytics", "false")
    git = ["git", "-c", "user.name=cakd", "-c", "user.email=cakd@localhost"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "pipeline"], cwd=project, check=True)
    return project


def test_repro_runs_all_stages_then_nothing_then_only_what_changed(dvc_project: Path) -> None:
    first = dvc(dvc_project, "repro")
    assert ran(first) == STAGES
    assert "distilled student top-1" in first.stdout + first.stderr  # the closing summary table
    summary = json.loads((dvc_project / "artifacts/summary.json").read_text())
    assert summary["onnx_top1_agreement"] == 1.0 and summary["onnx_max_abs_diff"] <= 1e-4
    assert (dvc_project / "artifacts/export/model.onnx").is_file()
    evaluation = json.loads((dvc_project / "artifacts/eval/metrics.json").read_text())
    assert {"teacher", "baseline", "student", "assistant"} <= set(evaluation)
    assert evaluation["gain_over_baseline"] == pytest.approx(
        evaluation["student"]["top1"] - evaluation["baseline"]["top1"], abs=1e-3)
    assert all((dvc_project / f"artifacts/eval/confusion_{m}.png").stat().st_size > 1000
               for m in ("teacher", "baseline", "student", "assistant"))
    assert (dvc_project / "artifacts/bench/pareto.png").is_file()

    again = dvc(dvc_project, "repro")
    assert ran(again) == []

    edit_params(dvc_project, distill={"method": "kd"})
    changed = dvc(dvc_project, "repro")
    assert ran(changed) == ["distill", "evaluate", "export", "bench", "summary"]
    metrics = dvc(dvc_project, "metrics", "show", "--json")
    assert "gain_over_baseline" in metrics.stdout

    # A parity gate that cannot pass stops the pipeline at export, leaving no ONNX behind.
    edit_params(dvc_project, export={"atol": 1e-30})
    failed = dvc(dvc_project, "repro", check=False)
    assert failed.returncode != 0
    assert "parity" in (failed.stdout + failed.stderr).lower()
    assert not (dvc_project / "artifacts/export/model.onnx").exists()


def test_killed_distill_resumes_on_the_next_repro(dvc_project: Path) -> None:
    edit_params(dvc_project, train={"epochs": 4})
    dvc(dvc_project, "repro", "baseline", "train_teacher")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(["dvc", "repro", "distill"], cwd=dvc_project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = dvc_project / "artifacts/student/checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the cakd process under it, mid-epoch 2
    proc.wait()
    assert not (dvc_project / "artifacts/student/model.pt").exists()

    resumed = dvc(dvc_project, "repro")
    assert "resuming fbt from epoch" in resumed.stdout + resumed.stderr
    metrics = json.loads((dvc_project / "artifacts/student/metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["accuracy"] is not None
    assert ran(dvc(dvc_project, "repro")) == []


def test_a_typo_in_params_stops_the_pipeline_with_one_line(dvc_project: Path) -> None:
    edit_params(dvc_project, train={"epochz": 3})
    proc = dvc(dvc_project, "repro", check=False)
    assert proc.returncode != 0
    assert "cakd: error: invalid params in params.yaml: unknown key 'train.epochz'" in proc.stdout + proc.stderr
    assert ran(proc) == ["prepare"]  # the first stage already refuses the file
    assert not (dvc_project / "artifacts/data/manifest.json").exists()
