"""Where the pipeline's files live: one place for the paths dvc.yaml spells out and the CLI defaults to.

Models and other large outputs go under ``artifacts/`` (git-ignored, cached by DVC); the small JSON
reports that experiments compare go under ``reports/`` (tracked by git, so every ``dvc exp`` commit
holds them and ``dvc exp show`` can list them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

TEACHER = "teacher"  # the teacher's label: its export folder, its bench rows, its shortlist row (no student's name)
ARTIFACTS = Path("artifacts")
REPORTS = Path("reports")
DATA_DIR = ARTIFACTS / "data"
MANIFEST = DATA_DIR / "manifest.json"
TEACHER_DIR = ARTIFACTS / "teacher"
TEACHER_MODEL = TEACHER_DIR / "model.pt"
TEACHER_REPORT = REPORTS / "teacher.json"
EXPORTS = ARTIFACTS / "export"
TRT_EXPORTS = ARTIFACTS / "trt"  # `cakd export --format trt`: a bundle with TensorRT's files, outside DVC's outputs
OUTSIDE_DVC = {TRT_EXPORTS}  # paths of commands that no dvc.yaml stage runs
BENCH_DIR = ARTIFACTS / "bench"
BENCH_JSON = BENCH_DIR / "bench.json"
SUMMARY = REPORTS / "summary.json"
SHORTLIST_DIR = ARTIFACTS / "shortlist"  # the latency-vs-FLOPs plot; the exports are made and removed in here
SHORTLIST_REPORT = REPORTS / "shortlist.json"
# Figures measured on the target (params.yaml's target: section names files in here): dvc.yaml lists each folder as
# a dependency of the stage that reads it, so new or replaced results re-run that stage and nothing else.
TARGET_SHORTLIST = Path("target/shortlist")
TARGET_BENCH = Path("target/bench")

StudentRun = Literal["baseline", "distill", "eval", "qat"]


def student_dir(name: str, run: StudentRun) -> Path:
    """``artifacts/students/<name>/<run>``: the student's baseline, distilled model, evaluation or the resumable
    state of its quantisation-aware training."""
    return ARTIFACTS / "students" / name / run


def student_report(name: str, run: StudentRun, reports: Path = REPORTS) -> Path:
    """``reports/students/<name>/<run>.json``: the git-tracked metrics of that run."""
    return reports / "students" / name / f"{run}.json"


def export_dir(label: str, exports: Path = EXPORTS) -> Path:
    """``artifacts/export/<label>``: ``cakd export`` output (with ``export.json``) of a student or the teacher."""
    return exports / label
