"""``benchmarks/gpu_check.py --tiny``: the GPU check's whole path on the CPU, so it cannot rot between GPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_data_imagefolder import make_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_at_its_tiny_budget(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", splits=("train", "test"), classes=("a", "b", "c"), per_class=12)
    out = tmp_path / "check"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--tiny", "--data", str(data),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    cuda = torch.cuda.is_available()  # --tiny uses the GPU where there is one
    names = [stage["stage"] for stage in result["stages"]]
    assert names == ["prepare", "train_teacher", "baseline@deit", "distill@deit"]
    for stage in result["stages"][1:]:
        assert 0 <= stage["accuracy"] <= 100 and len(stage["images_per_s"]) == 1 and stage["world_size"] == 1
        assert (stage["gpu_memory_mb"] is None) == (stage["recipe"]["autocast"] == "off") == (not cuda)
    rows = result["bench"]
    assert {(r["model"], r["runtime"]) for r in rows} >= {("teacher", "torch"), ("deit", "torch-cuda")}
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in rows if r["runtime"] == "torch")
    assert all(r["status"] == ("ok" if cuda else "unavailable") for r in rows if r["runtime"] == "torch-cuda")
