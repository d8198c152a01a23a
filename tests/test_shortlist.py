"""`cakd shortlist`: candidates timed untrained on the runtime and batch the settings name, the budget applied (an
over-budget candidate listed with its reason, never ranked), `--apply K` writing exactly the top K into params.yaml
(the rest of the file kept, DVC's per-student stages following), and bad candidates stopped in one line.

Real components throughout: timm models, torch's ONNX exporter, onnxruntime and OpenVINO, real DVC; tiny
candidates at 16 px, one or two rounds of a few calls.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cakd.export.decide.profile import Profiled, judge, rank
from cakd.export.measure.rows import BenchRow
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec
from cakd.pipeline.settings.loading import load_params
from cakd.pipeline.settings.params_file import replace_students
from tests.conftest import TINY_VIT, run_cakd, run_cakd_here, tiny_params, write_params

ROOT = Path(__file__).resolve().parents[1]
TINY_MLP = {"embed_dim": 32, "num_blocks": 4}
CANDIDATES = {
    "mlp": {"model": "resmlp_12_224", "kwargs": TINY_MLP},
    "vit": {"model": "deit_tiny_patch16_224", "kwargs": TINY_VIT},
    "cnn": {"model": "mobilenetv2_050", "kwargs": {}},
    "big": {"model": "resnet18", "kwargs": {}},  # ~100x the others' FLOPs: over a 2 ms budget by construction
}
BUDGET_MS = 2.0


def shortlist_params(**shortlist: object) -> dict:
    """Tiny params whose shortlist times the four candidates above against a 2 ms budget, one export at a time."""
    params = tiny_params(bench={"batch_sizes": [1], "warmup": 1, "runs": 5, "rounds": 2, "threads": 1})
    params["shortlist"] = {**params["shortlist"], "budget_ms": BUDGET_MS, "min_speedup": None, "jobs": 1,
                           "calib_images": 8, "candidates": CANDIDATES, **shortlist}
    return params


def prepared(folder: Path, params: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_params(folder / "params.yaml", params)
    run_cakd("prepare", cwd=folder, check=True)
    return folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared digits project (params and manifest) that tests copy rather than prepare again."""
    return prepared(tmp_path_factory.mktemp("digits") / "project", shortlist_params())


@pytest.fixture
def project(digits: Path, tmp_path: Path) -> Path:
    return shutil.copytree(digits, tmp_path / "project")


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project whose shortlist was measured once through the real CLI (onnxruntime FP32, batch 2)."""
    project = prepared(tmp_path_factory.mktemp("shortlist") / "project", shortlist_params(batch_size=2, jobs=2))
    run_cakd("shortlist", cwd=project, check=True)
    return project


def report_of(project: Path) -> dict:
    return json.loads((project / "reports/shortlist.json").read_text())


@pytest.mark.slow
def test_every_candidate_is_timed_on_the_named_runtime_and_batch_with_the_teacher(measured: Path) -> None:
    result = report_of(measured)
    rows = [result["teacher"]["row"]] + [entry["row"] for entry in result["candidates"].values()]
    assert {(r["runtime"], r["precision"], r["artefact"], r["batch_size"]) for r in rows} == {
        ("onnxruntime", "fp32", "onnx", 2)}
    for row in rows:  # the bench harness's own statistics: 2 rounds x 5 calls, throughput of a batch of 2
        assert row["status"] == "ok" and row["runs"] == 10 and row["rounds"] == 2
        assert row["throughput_ips"] == pytest.approx(2 * 1e3 / row["p50_ms"])
        assert row["p50_round_min_ms"] <= row["p50_ms"] <= row["p50_round_max_ms"]
        assert row["gflops"] > 0 and row["params_m"] > 0
    assert result["settings"]["batch_size"] == 2 and result["settings"]["runtime"] == "onnxruntime"
    for entry in result["candidates"].values():
        assert entry["speedup"] == pytest.approx(result["teacher"]["row"]["p50_ms"] / entry["row"]["p50_ms"])
    assert (measured / "artifacts/shortlist/shortlist.png").stat().st_size > 1000
    assert [p.name for p in (measured / "artifacts/shortlist").iterdir()] == ["shortlist.png"]  # work folder gone


@pytest.mark.slow
def test_a_candidate_over_budget_is_listed_with_its_reason_and_never_ranked(measured: Path) -> None:
    result = report_of(measured)
    big = result["candidates"]["big"]
    assert big["row"]["p50_ms"] > BUDGET_MS and not big["within_budget"] and big["rank"] is None
    assert big["reason"] == f"p50 {big['row']['p50_ms']:.3f} ms > budget {BUDGET_MS:g} ms"
    assert "big" not in result["ranking"]
    fits = [name for name, e in result["candidates"].items() if e["within_budget"]]
    assert sorted(result["ranking"]) == sorted(fits) and set(fits) == {"mlp", "vit", "cnn"}
    assert result["shortlist"] == result["ranking"][:2]
    proc = run_cakd("shortlist", "--from", "reports/shortlist.json", cwd=measured, check=True)
    table = proc.stderr
    assert "big" in table and f"> budget {BUDGET_MS:g} ms" in table and "shortlist (top 2)" in table


@pytest.mark.slow
def test_int8_on_openvino_times_the_int8_file_made_for_latency(tmp_path: Path) -> None:
    project = prepared(tmp_path, shortlist_params(runtime="openvino", precision="int8",
                                                  candidates={"mlp": CANDIDATES["mlp"]}))
    run_cakd("shortlist", cwd=project, check=True)
    result = report_of(project)
    for row in (result["teacher"]["row"], result["candidates"]["mlp"]["row"]):
        assert (row["runtime"], row["precision"], row["artefact"], row["batch_size"]) == (
            "openvino", "int8", "onnx-int8-openvino", 1)  # OpenVINO's own kind, made with the all recipe
        assert row["activations"] == "uint8" and row["p50_ms"] > 0


def copy_pipeline(measured: Path, folder: Path) -> Path:
    """A git + DVC repository with this repository's dvc.yaml and code, and the measured project's params,
    manifest and shortlist report."""
    shutil.copytree(measured, folder)
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    for package in ("pipeline", "export"):
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=folder, check=True, env=env)
    return folder


def dvc_stages(project: Path) -> list[str]:
    proc = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=project, capture_output=True, text=True,
                          check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return proc.stdout.split()


@pytest.mark.slow
def test_apply_writes_exactly_the_top_k_and_dvc_runs_their_stages(measured: Path, tmp_path: Path) -> None:
    project = copy_pipeline(measured, tmp_path / "repo")
    before = yaml.safe_load((project / "params.yaml").read_text())
    assert {s for s in dvc_stages(project) if s.startswith("baseline@")} == {"baseline@student"}
    proc = run_cakd("shortlist", "--apply", "2", "--from", "reports/shortlist.json", cwd=project, check=True)
    top = report_of(project)["ranking"][:2]
    after = yaml.safe_load((project / "params.yaml").read_text())
    assert list(after["students"]) == top
    for name in top:
        assert after["students"][name] == {**CANDIDATES[name], "pretrained": False, "weights": None,
                                           "checkpoint": None}
    assert {k: v for k, v in after.items() if k != "students"} == {k: v for k, v in before.items() if k != "students"}
    assert list(load_params(project / "params.yaml").students) == top
    stages = dvc_stages(project)
    for stage in ("baseline", "distill", "evaluate", "export"):
        assert {s for s in stages if s.startswith(f"{stage}@")} == {f"{stage}@{name}" for name in top}
    assert f"students are now {', '.join(top)}" in proc.stderr


def test_apply_keeps_the_rest_of_the_file_byte_for_byte(tmp_path: Path) -> None:
    """The shipped params.yaml, its comments and layout: only the students block changes."""
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    text = path.read_text()
    params = replace_students(path, {"mixer": {"model": "mixer_s16_224", "kwargs": {"embed_dim": 64}}},
                              {"mixer": "shortlisted #1"})
    new = path.read_text()
    head, tail = text.split("\nstudents:", 1)
    assert new.startswith(head + "\nstudents:")
    assert new.endswith(tail[tail.index("\ntrain:"):])  # everything from the next section on, comments included
    assert "  mixer:  # shortlisted #1\n    model: mixer_s16_224\n" in new
    assert "    kwargs: {embed_dim: 64}\n" in new
    assert list(params.students) == ["mixer"] and params.students["mixer"].kwargs == {"embed_dim": 64}


def test_apply_to_a_flow_style_students_section_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    tree = tiny_params()
    path.write_text(yaml.safe_dump({**tree, "students": None}, sort_keys=False).replace(
        "students: null", "students: {a: {model: resnet10t}}  # mine"))
    replace_students(path, {"b": {"model": "resnet10t", "kwargs": {}}})
    assert list(load_params(path).students) == ["b"] and "students:\n  b:\n" in path.read_text()
    before = path.read_text()
    with pytest.raises(CakdError, match="left as it was"):  # a reserved name: the file is untouched
        replace_students(path, {"teacher": {"model": "resnet10t"}})
    assert path.read_text() == before


def _item(name: str, family: str, gflops: float, p50: float, spread: float = 0.01) -> Profiled:
    item = Profiled(name, ModelSpec("resnet18", 10, 16), family, None, 1_000_000, gflops)
    item.row = BenchRow(model=name, runtime="onnxruntime", precision="fp32", artefact="onnx", batch_size=1,
                        status="ok", p50_ms=p50, p50_round_min_ms=p50 - spread, p50_round_max_ms=p50 + spread,
                        gflops=gflops, params_m=1.0)
    return item


def test_ranking_puts_one_per_family_first_then_capacity() -> None:
    teacher = _item("teacher", "resnet", 1.0, 4.0).row
    items = [_item("r-big", "resnet", 0.9, 1.9), _item("r-small", "resnet", 0.5, 1.0),
             _item("v-big", "vit", 0.4, 1.5), _item("m", "mlp_mixer", 0.1, 0.5),
             _item("too-slow", "vit", 2.0, 3.0), _item("edge", "mlp_mixer", 0.05, 1.99, spread=0.1)]
    verdicts = [judge(item, teacher, budget_ms=2.0, min_speedup=2.0) for item in items]
    by_name = {v.name: v for v in verdicts}
    assert by_name["too-slow"].reason == "p50 3.000 ms > budget 2 ms; 1.33x the teacher's speed < 2x"
    assert by_name["edge"].within_budget and by_name["edge"].borderline  # 2 ms lies inside 1.89-2.09
    assert not by_name["m"].borderline
    ordered = [v.name for v in rank(verdicts)]
    assert ordered == ["r-big", "v-big", "m", "r-small", "edge"]  # family leaders by GFLOPs, then the rest
    assert by_name["too-slow"].rank is None and by_name["r-small"].rank == 4


def test_a_candidate_that_failed_to_export_is_listed_failed_not_ranked() -> None:
    teacher = _item("teacher", "resnet", 1.0, 4.0).row
    broken = _item("broken", "swin", 0.1, 0.5)
    broken.row.status, broken.row.reason, broken.row.p50_ms = "failed", "ONNX export of Swin failed (...)", None
    verdict = judge(broken, teacher, budget_ms=None, min_speedup=None)
    assert not verdict.within_budget and verdict.reason == "failed: ONNX export of Swin failed (...)"
    assert rank([verdict]) == [] and verdict.rank is None


def test_a_teacher_that_cannot_be_timed_is_one_line(project: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every speed-up is measured against the teacher: if its export fails (here: an impossible parity
    tolerance), nothing is ranked and the reason is one line."""
    write_params(project / "params.yaml", shortlist_params(candidates={"mlp": CANDIDATES["mlp"]}))
    code, err = run_cakd_here(["shortlist", "-S", "export.atol=1e-30"], project, capsys, monkeypatch)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("cakd: error: the teacher (vit_tiny_patch16_224) cannot be timed on "
                                         "onnxruntime: FP32 parity gate failed")
    assert "Traceback" not in err and not (project / "reports/shortlist.json").exists()


@pytest.mark.parametrize("candidate, message", [
    ({"model": "resnet_bogus"}, "unknown model 'resnet_bogus'"),
    ({"model": "resnet18", "kwargs": {"bogus": 1}}, "candidate 'bad': model 'resnet18' cannot be built at 16 px "
                                                     "with kwargs {'bogus': 1}: TypeError"),
    ({"model": "deit_tiny_patch16_224", "kwargs": {"depth": 6}}, "candidate 'bad': model 'deit_tiny_patch16_224' "
                                                                 "cannot be built at 16 px with kwargs {'depth': 6}: "
                                                                 "ValueError"),
])
def test_a_bad_candidate_is_one_line(project: Path, candidate: dict, message: str, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_params(project / "params.yaml", shortlist_params(candidates={"bad": candidate}))
    code, err = run_cakd_here(["shortlist"], project, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.startswith("cakd: error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not (project / "reports/shortlist.json").exists()


@pytest.mark.parametrize("override, message", [
    ("shortlist.candidates={'bad name': {model: resnet18}}", "candidate name 'bad name' must be letters"),
    ("shortlist.candidates={teacher: {model: resnet18}}", "candidate name 'teacher'"),
    ("shortlist.runtime=onnxruntime-gpu", "unknown runtime 'onnxruntime-gpu'"),
    ("shortlist.precision=int8", "runtime torch has no int8 artefact"),
])
def test_bad_shortlist_settings_are_one_line(project: Path, override: str, message: str,
                                             capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = ["-S", "shortlist.runtime=torch"] if "precision" in override else []
    code, err = run_cakd_here(["shortlist", *extra, "-S", override], project, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_params_file_without_candidates_is_one_line(project: Path, capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate grid lives only in params.yaml: a file without it has no grid to fall back on."""
    params = shortlist_params()
    write_params(project / "params.yaml", {k: v for k, v in params.items() if k != "shortlist"})
    code, err = run_cakd_here(["shortlist"], project, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "has no shortlist section" in err, err
    write_params(project / "params.yaml", {**params, "shortlist": {"runtime": "onnxruntime"}})
    code, err = run_cakd_here(["shortlist"], project, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "missing key 'shortlist.candidates'" in err, err


@pytest.mark.slow
def test_apply_beyond_the_ranked_and_stale_reports_are_refused(measured: Path, tmp_path: Path) -> None:
    project = shutil.copytree(measured, tmp_path / "copy")
    before = (project / "params.yaml").read_text()
    ranked = len(report_of(project)["ranking"])
    proc = run_cakd("shortlist", "--apply", str(ranked + 1), "--from", "reports/shortlist.json", cwd=project)
    assert proc.returncode == 2 and f"only {ranked} candidate(s) fit the budget" in proc.stderr.splitlines()[-1]
    proc = run_cakd("shortlist", "--apply", "1", "--from", "reports/shortlist.json", "-S", "shortlist.budget_ms=9",
                    cwd=project)
    assert proc.returncode == 2 and "measured under other settings" in proc.stderr.splitlines()[-1]
    assert (project / "params.yaml").read_text() == before
    proc = run_cakd("shortlist", "--apply", "1", "--from", "reports/shortlist.json", "-S", "shortlist.jobs=1",
                    cwd=project)  # a machine setting: the same numbers
    assert proc.returncode == 0, proc.stderr
