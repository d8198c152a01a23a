"""The README and docs stand on their own in a user's clone, and name the files the code really writes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cakd.export.exported import FILES
from cakd.export.runtimes.tensorrt_gpu import write_trtexec_script
from cakd.pipeline.settings.params import ExportParams

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_point_only_at_files_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../" not in text  # a clone has nothing beside itself
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_links_the_method_written_in_the_repository() -> None:
    assert "](docs/METHOD.md)" in (ROOT / "README.md").read_text()
    assert "InfoNCE" in (ROOT / "docs" / "METHOD.md").read_text()


def test_readme_names_the_trtexec_script_export_writes_by_default(tmp_path: Path) -> None:
    precision = ExportParams().trt.precision
    onnx_path = tmp_path / FILES["onnx-fp16" if precision == "fp16" else "onnx"]  # what --format trt builds from
    script = write_trtexec_script(onnx_path, tmp_path / f"model.{precision}.engine", [1, 8], 32, 256)
    readme = (ROOT / "README.md").read_text()
    assert f"`{script.name}` by default" in readme


@pytest.mark.parametrize("path", ["dvc_plots/index.html", ".ci/venv/bin/python", "gpu-check/gpu_check.json"])
def test_generated_folders_are_git_ignored(path: str) -> None:
    proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert proc.returncode == 0, f"{path} is not git-ignored"
