"""Shared fixtures: a tiny but real configuration (bundled digits, small models, few steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(2)

# Tiny models keep every end-to-end test to seconds on 2 CPU cores.
TINY_VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2}


def shipped_params() -> dict:
    """The params.yaml this repository ships (every key dvc.yaml lists is there)."""
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def tiny_params(**sections: dict) -> dict:
    """The shipped params.yaml made tiny; ``student={...}`` is short for a single student named ``student``."""
    if "student" in sections:
        sections["students"] = {"student": sections.pop("student")}
    tiny = {
        "seed": 0,
        "data": {"name": "digits", "img_size": 16, "train_per_class": 20, "test_per_class": 10},
        "teacher": {"model": "vit_tiny_patch16_224", "kwargs": TINY_VIT},
        "students": {"student": {"model": "mobilenetv2_050"}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.002, "warmup_epochs": 0, "eval_every": 1},
        "distill": {"method": "kd", "epochs": None, "lr": None},
        # one INT8 form, timed briefly: the form search itself is tested in tests/test_int8_forms.py
        "export": {"calib_images": 32, "parity_images": 32, "int8_forms": ["all"], "int8_form_runs": 2,
                   "int8_form_rounds": 1},
        "bench": {"batch_sizes": [1, 4], "warmup": 1, "runs": 3, "threads": 1, "min_speedup": None},
        "machine": {"threads": 1},
    }
    params = shipped_params()
    for changes in (tiny, sections):  # sections merge key by key; the students list replaces the shipped one
        for name, values in changes.items():
            merge = isinstance(values, dict) and name != "students"
            params[name] = {**params.get(name, {}), **values} if merge else values
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_cakd(*args: str, cwd: Path, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``cakd`` command line in a subprocess (exit codes and stderr as a user sees them)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"cakd {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_cakd_here(args: list[str], cwd: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
                  ) -> tuple[int, str]:
    """Run ``cakd`` in this process (fast): returns (exit code, stderr)."""
    from cakd.pipeline.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["cakd", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working folder with a tiny params.yaml and the prepared digits manifest."""
    from cakd.pipeline.data import prepare_data
    from cakd.pipeline.settings.params import Params

    params = tiny_params()
    write_params(tmp_path / "params.yaml", params)
    valid = Params.model_validate(params)
    prepare_data(valid.data, valid.seed, tmp_path / "artifacts/data")  # what `cakd prepare` runs, in-process
    return tmp_path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with end-to-end (``slow``) tests first, so that pytest-xdist starts the longest files while the
    quick ones fill the other workers. ``cuda`` tests run wherever PyTorch sees a CUDA GPU, and are skipped (with
    the reason) only where it sees none: no option turns them off on a GPU machine."""
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's own order is kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU is visible to PyTorch")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
