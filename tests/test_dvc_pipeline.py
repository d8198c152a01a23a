"""`dvc repro` end to end on a tiny setting shaped like the default (two students of two families, one
teacher): runs, is a no-op the second time, re-runs only what a param change or new target results touch,
keeps its metrics in every experiment, and stops at a failed gate (tests/test_dvc_resume.py has the runs that
need a project of their own).

The expensive part, one run of the whole pipeline, is made once per module (``pipeline_run``); each test
gets its own copy of that committed, fully run repository (``repo``), so no test depends on another.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_VIT, run_cakd, tiny_params, write_params

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["deit", "mobilenet"]  # this test's two students (its own params, not the shipped ones): one set of stages each
PER_STUDENT = ["baseline", "distill", "evaluate", "export"]
STAGES = (["prepare", "shortlist", "train_teacher"] + [f"{s}@{n}" for s in PER_STUDENT for n in NAMES]
          + ["export_teacher", "bench", "summary"])
# A tiny shortlist: two candidates of two families, every one within budget (no budget), one export at a time.
SHORTLIST = {"budget_ms": None, "min_speedup": None, "jobs": 1, "calib_images": 8, "candidates": {
    "mlp": {"model": "resmlp_12_224", "kwargs": {"embed_dim": 32, "num_blocks": 4}},
    "cnn": {"model": "mobilenetv2_050", "kwargs": {}}}}
GIT = ["git", "-c", "user.name=cakd", "-c", "user.email=cakd@localhost"]


def dvc(project: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def ran(proc: subprocess.CompletedProcess) -> list[str]:
    return sorted(s for s in STAGES if f"Running stage '{s}'" in proc.stdout)


def commit(project: Path, message: str) -> None:
    subprocess.run([*GIT, "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", message, "--allow-empty"], cwd=project, check=True)


def edit_params(project: Path, **changes: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in changes.items():
        params[section] = {**params[section], **values}
    write_params(project / "params.yaml", params)


def new_project(root: Path) -> Path:
    """A copy of this repository's pipeline (dvc.yaml, code, the target/ folders) with tiny params, in its own git
    repo."""
    project = root / "project"
    project.mkdir()
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    for package in ("pipeline", "export", "target"):
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    for ignore in (".gitignore", ".dvcignore"):
        shutil.copy(ROOT / ignore, project / ignore)
    write_params(project / "params.yaml", tiny_params(
        students={"deit": {"model": "deit_tiny_patch16_224", "kwargs": TINY_VIT},
                  "mobilenet": {"model": "mobilenetv2_050"}},
        teacher={"model": "resnet10t", "kwargs": {}},
        distill={"method": "fbt"},
        export={"int8_max_drop": 100.0, "int8_min_agreement": 0.0},  # the INT8 gate is not what is tested here
        bench={"batch_sizes": [1], "warmup": 1, "runs": 3, "threads": 1},
        shortlist=SHORTLIST))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, "init", "-q")
    dvc(project, "config", "core.analytics", "false")
    commit(project, "pipeline")
    return project


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny project run through the whole pipeline and committed (with dvc.lock and reports/)."""
    project = new_project(tmp_path_factory.mktemp("dvc"))
    first = dvc(project, "repro")
    commit(project, "run")
    return project, first


@pytest.fixture
def repo(pipeline_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
         ) -> tuple[Path, subprocess.CompletedProcess]:
    """This test's own copy of the run repository (git, DVC cache, outputs and all)."""
    source, first = pipeline_run
    project = tmp_path / "project"
    shutil.copytree(source, project, symlinks=True)
    return project, first


@pytest.mark.slow
def test_repro_runs_every_stage_per_student_then_nothing(repo: tuple[Path, subprocess.CompletedProcess]) -> None:
    project, first = repo
    assert ran(first) == sorted(STAGES)
    for name in NAMES:
        evaluation = json.loads((project / f"reports/students/{name}/eval.json").read_text())
        assert evaluation["gain_over_baseline"] == pytest.approx(
            evaluation["student"]["top1"] - evaluation["baseline"]["top1"], abs=1e-3)
        assert (project / f"artifacts/students/{name}/eval/confusion_student.png").stat().st_size > 1000
        export = json.loads((project / f"artifacts/export/{name}/export.json").read_text())
        assert export["artefacts"]["onnx"]["parity"]["top1_agreement"] == 1
    assert "assistant" in json.loads((project / "reports/students/deit/eval.json").read_text())  # FBT
    assert (project / "artifacts/export/teacher/model.onnx").is_file()

    summary = json.loads((project / "reports/summary.json").read_text())
    assert set(summary["students"]) == set(NAMES)
    assert all(s["onnx_max_abs_diff"] <= 1e-4 and s["latency_ms"] for s in summary["students"].values())
    bench = json.loads((project / "artifacts/bench/bench.json").read_text())
    assert {row["model"] for row in bench["rows"]} == {"teacher", *NAMES}
    printed = [line.rstrip() for line in first.stderr.splitlines() if line.startswith("deploy ")]
    assert len(summary["deploy_lines"]) == len(bench["picks"]) >= 1  # the bench prints its picks, then the summary
    assert printed[-len(summary["deploy_lines"]):] == summary["deploy_lines"]
    tracked = subprocess.run(["git", "ls-files", "reports"], cwd=project, capture_output=True, text=True).stdout
    assert set(tracked.split()) == {"reports/teacher.json", "reports/summary.json", "reports/shortlist.json",
                                    *(f"reports/students/{n}/{r}.json" for n in NAMES
                                      for r in ("baseline", "distill", "eval"))}
    assert ran(dvc(project, "repro")) == []
    cache = project / "pipeline/data/__pycache__"  # what Python writes where bytecode caching is on
    cache.mkdir(exist_ok=True)
    (cache / "build.cpython-311.pyc").write_bytes(b"bytecode")
    assert ran(dvc(project, "repro")) == []


def test_only_params_yaml_names_the_students() -> None:
    """dvc.yaml's per-student stages loop over params.yaml's students, and the bench takes them from there
    too: no stage names a student."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "=" not in stages["bench"]["cmd"] and "students" in stages["bench"]["params"]
    assert all(stages[s]["foreach"] == "${students}" for s in ("baseline", "distill", "evaluate", "export"))
    assert not any(name in yaml.safe_dump(stages) for name in NAMES)


@pytest.mark.slow
def test_shortlist_apply_then_repro_trains_exactly_the_shortlisted_students(
        repo: tuple[Path, subprocess.CompletedProcess]) -> None:
    """The documented flow: the shortlist DVC measured, `cakd shortlist --apply 2 --from` it, `dvc repro`: the two
    shortlisted students' stages run (and the bench and summary over them), nothing else, not the shortlist again."""
    project, _ = repo
    run_cakd("shortlist", "--apply", "2", "--from", "reports/shortlist.json", cwd=project, check=True)
    top = json.loads((project / "reports/shortlist.json").read_text())["ranking"]
    assert sorted(top) == ["cnn", "mlp"]
    proc = dvc(project, "repro")
    expected = [f"{s}@{n}" for s in PER_STUDENT for n in top] + ["bench", "summary"]
    assert sorted(s for s in expected if f"Running stage '{s}'" in proc.stdout) == sorted(expected)
    assert "Running stage 'shortlist'" not in proc.stdout and "Running stage 'train_teacher'" not in proc.stdout
    assert not any(f"@{old}'" in proc.stdout for old in NAMES)
    summary = json.loads((project / "reports/summary.json").read_text())
    assert set(summary["students"]) == set(top)
    bench = json.loads((project / "artifacts/bench/bench.json").read_text())
    assert {row["model"] for row in bench["rows"]} == {"teacher", *top}


@pytest.mark.slow
def test_target_results_make_only_the_stage_that_reads_them_stale(
        repo: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Results copied from the target into target/bench/ (or target/shortlist/) change the DVC dependency of the
    one stage that reads them: DVC sees it without any params.yaml edit or `repro -f`."""
    project, _ = repo
    assert json.loads(dvc(project, "status", "--json").stdout) == {}
    (project / "target/bench/edge.json").write_text("{}")
    assert set(json.loads(dvc(project, "status", "--json").stdout)) == {"bench"}
    (project / "target/shortlist/results.json").write_text("{}")
    assert set(json.loads(dvc(project, "status", "--json").stdout)) == {"bench", "shortlist"}


@pytest.mark.slow
def test_machine_settings_rerun_nothing(repo: tuple[Path, subprocess.CompletedProcess]) -> None:
    project, _ = repo
    edit_params(project, machine={"threads": 2, "num_workers": 1})
    assert ran(dvc(project, "repro")) == []


def exp_metrics(project: Path) -> dict[str, dict]:
    """Experiment name -> its reports/summary.json as `dvc exp show --json` gives it."""
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    found = {}
    for commit_entry in shown:
        for exp in commit_entry.get("experiments") or []:
            for revision in exp["revs"]:
                metrics = revision["data"].get("metrics", {}).get("reports/summary.json", {})
                found[revision["name"]] = metrics.get("data")
    return found


def assert_compared(summary: dict | None) -> None:
    """Accuracy, gain, parity and latency of every student are in the experiment."""
    assert summary is not None
    for name in NAMES:
        student = summary["students"][name]
        assert student["distilled_top1"] is not None and student["gain"] is not None
        assert student["onnx_top1_agreement"] == 1 and student["latency_ms"]


@pytest.mark.slow
def test_experiments_rerun_only_what_they_change_and_show_their_metrics(
        repo: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Two experiments side by side in `dvc exp show`, each with every student's metrics (they were `!` while
    the metrics lived under git-ignored outputs that no experiment commit holds). Changing one student re-runs
    only its stages, the bench and the summary; a bench-only setting re-runs the bench and the summary."""
    project, _ = repo
    one_student = dvc(project, "exp", "run", "-n", "exp-deit", "-S", "+students.deit.kwargs.drop_rate=0.1")
    assert ran(one_student) == sorted([f"{s}@deit" for s in PER_STUDENT] + ["bench", "summary"])
    bench_only = dvc(project, "exp", "run", "-n", "exp-bench", "-S", "bench.pick_tolerance=0.5")
    # (bench.runs would re-run the exports too: the bundle's run.py --bench times with the bench's settings)
    assert ran(bench_only) == ["bench", "summary"]
    found = exp_metrics(project)
    for name in ("exp-deit", "exp-bench"):
        assert_compared(found.get(name))


@pytest.mark.slow
def test_a_failed_parity_gate_stops_the_pipeline_at_export(repo: tuple[Path, subprocess.CompletedProcess]
                                                           ) -> None:
    project, _ = repo
    edit_params(project, export={"atol": 1e-30})
    failed = dvc(project, "repro", "summary", check=False)  # the shortlist gates its exports too: not its subject
    assert failed.returncode != 0 and "parity" in (failed.stdout + failed.stderr).lower()
    assert not {"bench", "summary"} & set(ran(failed))
    stopped = [stage for stage in ran(failed) if stage.startswith("export")]
    assert stopped and not any((project / f"artifacts/export/{stage.partition('@')[2] or 'teacher'}/model.onnx"
                                ).exists() for stage in stopped)
