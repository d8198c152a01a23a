"""``dvc repro`` with ``machine.gpus: 2``: the training stage runs as two processes, dvc.yaml untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cakd.pipeline.models import load_model
from cakd.pipeline.training.placement import weights_digest
from tests.test_dvc_pipeline import ROOT, dvc, edit_params, new_project


@pytest.mark.slow
def test_dvc_repro_trains_the_teacher_as_two_gloo_processes(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    edit_params(project, machine={"gpus": 2}, train={"epochs": 1, "batch_size": 16})
    proc = dvc(project, "repro", "train_teacher")
    assert "Running stage 'train_teacher'" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert (project / "dvc.yaml").read_bytes() == (ROOT / "dvc.yaml").read_bytes()
    report = json.loads((project / "reports/teacher.json").read_text())
    assert report["world_size"] == 2 and report["effective_batch_size"] == 16
    first, second = report["rank_digests"]
    assert first == second == weights_digest(load_model(project / "artifacts/teacher/model.pt"))
