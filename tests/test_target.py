"""Deciding for the target (issue 32): `cakd shortlist --bundle` writes the candidates and the teacher, untrained,
with the torch-free runner; a second environment with only numpy, Pillow and onnxruntime plays the target at 1
thread (the local bench here uses 2) and times the bundle; `--from-target` ranks from those figures by the same
rule, `--apply 2` writes those students; results that are not the bundle's own measurement are one line each.

Real components: timm, torch's ONNX exporter, onnxruntime in both environments, the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cakd.export.decide.noise import budget_line, standing
from cakd.export.decide.target import profiled, read_manifest, read_results
from cakd.export.measure.rows import BenchRow
from cakd.pipeline.settings.loading import load_params
from cakd.pipeline.stages import shortlist
from tests.conftest import run_cakd, run_cakd_here
from tests.minimal_env import clean_env, installed, minimal_env
from tests.test_bundle import ORT_ENV
from tests.test_shortlist import BUDGET_MS, CANDIDATES, prepared, shortlist_params

BUNDLE = "target-bundle"


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits project whose shortlist bundle was written by the real CLI (local bench: 2 threads) and timed by
    run.py in a torch-free environment at 1 thread: results.json beside params.yaml."""
    root = tmp_path_factory.mktemp("target")
    params = shortlist_params()  # a 2 ms budget: the tiny candidates fit, resnet18 does not
    params["bench"]["threads"] = 2
    project = prepared(root / "project", params)
    run_cakd("shortlist", "--bundle", BUNDLE, cwd=project, check=True)
    python = minimal_env(root / "env", ORT_ENV)
    assert not {line.split("==")[0].lower() for line in installed(python)} & {"torch", "cakd", "timm"}
    proc = subprocess.run([str(python), "run.py", "--bench", "--threads", "1", "--rounds", "3", "--out",
                           str(project / "results.json")], cwd=project / BUNDLE, env=clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return project


@pytest.fixture
def project(timed: Path, tmp_path: Path) -> Path:
    return shutil.copytree(timed, tmp_path / "project")


def own_ranking(results: dict, manifest: dict, budget_ms: float) -> list[str]:
    """The ranking computed here from the target's numbers: clear passes of the budget line, one per family by
    GFLOPs first, then the rest; borderline ones (round p50s straddling the line) after them likewise."""
    rows = {r["model"]: BenchRow.from_dict(r) for r in results["rows"]}
    line = budget_line(budget_ms, None, None)
    models = manifest["models"]

    def order(names: list[str]) -> list[str]:
        names = sorted(names, key=lambda n: (-models[n]["gflops"], -models[n]["params_m"], n))
        leaders = list({models[n]["family"]: n for n in reversed(names)}.values())
        leaders.sort(key=names.index)
        return leaders + [n for n in names if n not in leaders]

    def tier(kind: str) -> list[str]:
        return [n for n in CANDIDATES if n in rows and standing(rows[n], line) == kind
                and (kind == "borderline" or rows[n].p50_ms <= budget_ms)]

    return order(tier("clear")) + order(tier("borderline"))


@pytest.mark.slow
def test_the_target_times_the_bundle_and_its_figures_make_the_shortlist(project: Path) -> None:
    manifest = json.loads((project / BUNDLE / "manifest.json").read_text())
    assert set(manifest["models"]) == {"teacher", *CANDIDATES} and (project / BUNDLE / "run.py").is_file()
    for m in manifest["models"].values():
        assert (project / BUNDLE / m["file"]).is_file() and m["file"].endswith(".onnx")
    results = json.loads((project / "results.json").read_text())
    assert results["system"]["threads"] == 1 and {r["model"] for r in results["rows"]} == set(manifest["models"])
    assert all(r["rounds"] == 3 for r in results["rows"])
    proc = run_cakd("shortlist", "--from-target", "results.json", "--bundle", BUNDLE, "--apply", "2", cwd=project,
                    check=True)
    report = json.loads((project / "reports/shortlist.json").read_text())
    assert report["measured_on"] == "target" and report["system"] == results["system"]
    assert report["target"]["threads"] == 1 and report["target"]["results"] == "results.json"
    target_rows = {r["model"]: r for r in results["rows"]}
    for name, entry in report["candidates"].items():
        assert entry["row"]["p50_ms"] == target_rows[name]["p50_ms"]  # the target's figures, not this machine's
    expected = own_ranking(results, manifest, BUDGET_MS)
    assert report["ranking"] == expected and len(expected) >= 2
    students = yaml.safe_load((project / "params.yaml").read_text())["students"]
    assert list(students) == expected[:2]
    minutes = {name: entry["train_min"] for name, entry in report["candidates"].items()}
    assert all(m > 0 for m in minutes.values()) and max(minutes, key=minutes.get) == "big"  # resnet18: 100x FLOPs
    assert "measured on the target" in proc.stderr


def _edit(results: Path, change: object) -> None:
    data = json.loads(results.read_text())
    change(data)
    results.write_text(json.dumps(data))


def _nest(results: Path) -> None:
    results.write_text('{"format": "cakd.target-results", "rows": ' + "[" * 50 + "]" * 50 + "}")


def _huge(results: Path) -> None:
    with open(results, "wb") as f:
        f.truncate(2**30)  # sparse: 1 GB on paper, nothing on disk


BAD = [
    (lambda p: _edit(p, lambda d: d["files"].update(teacher="0" * 64)), "comes from another bundle: the sha256 of "
                                                                        "teacher differs"),
    (lambda p: _edit(p, lambda d: d.update(manifest_sha256="f" * 64)), "comes from another bundle"),
    (lambda p: _edit(p, lambda d: d.update(rows=[r for r in d["rows"] if r["model"] != "mlp"])), "no timing for mlp"),
    (lambda p: _edit(p, lambda d: d["rows"][1].update(p50_ms=float("nan"))), "not a finite non-negative time"),
    (lambda p: _edit(p, lambda d: d["rows"][0].update(p90_ms=-1.0)), "p90_ms is -1.0, not a finite non-negative"),
    (lambda p: _edit(p, lambda d: d["rows"].append({**d["rows"][0], "model": "stranger"})),
     "model 'stranger' is not in the bundle"),
    (_nest, "nested"),
    (_huge, "more than the 16,777,216 allowed"),
]


@pytest.mark.slow
@pytest.mark.parametrize("damage, says", BAD)
def test_results_that_are_not_the_bundles_own_are_one_line_and_nothing_is_written(
        damage: object, says: str, project: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    damage(project / "results.json")
    before = (project / "params.yaml").read_text()
    code, err = run_cakd_here(["shortlist", "--from-target", "results.json", "--bundle", BUNDLE, "--apply", "1"],
                              project, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and says in err and "Traceback" not in err, err
    assert not (project / "reports/shortlist.json").exists() and (project / "params.yaml").read_text() == before


@pytest.mark.slow
def test_a_bundle_of_other_settings_and_a_runtime_the_runner_cannot_time_are_refused(
        project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = run_cakd_here(["shortlist", "--from-target", "results.json", "--bundle", BUNDLE, "-S",
                               "shortlist.top_k=3"], project, capsys, monkeypatch)
    assert code == 2 and "bundled under other settings" in err and err.count("\n") == 1
    code, err = run_cakd_here(["shortlist", "--bundle", "b2", "-S", "shortlist.runtime=torch"], project, capsys,
                              monkeypatch)
    assert code == 2 and "times ONNX files on onnxruntime or openvino, not shortlist.runtime torch" in err
    assert not (project / "b2").exists()
    code, err = run_cakd_here(["shortlist", "--from-target", "results.json"], project, capsys, monkeypatch)
    assert code == 2 and "needs --bundle DIR" in err


@pytest.mark.slow
def test_params_target_section_makes_the_plain_command_rank_from_the_target(
        project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the DVC stage runs (`cakd shortlist` with no flags) ranks from target.shortlist when params.yaml names
    it inside target/shortlist/ (the stage's DVC dependency); a path outside it, or target.shortlist without
    target.bundle, is one line."""
    shutil.copytree(project / BUNDLE, project / "target/shortlist/bundle")
    shutil.copy(project / "results.json", project / "target/shortlist/results.json")
    in_folder = ["-S", "target.shortlist=target/shortlist/results.json", "-S", "target.bundle=target/shortlist/bundle"]
    code, err = run_cakd_here(["shortlist", *in_folder], project, capsys, monkeypatch)
    assert code == 0, err
    report = json.loads((project / "reports/shortlist.json").read_text())
    assert report["measured_on"] == "target" and report["target"]["results"] == "target/shortlist/results.json"
    code, err = run_cakd_here(["shortlist", "-S", "target.shortlist=results.json", "-S", f"target.bundle={BUNDLE}"],
                              project, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1
    assert ("target.shortlist: results.json is not inside target/shortlist/, the folder dvc.yaml lists as its "
            "stage's dependency") in err
    code, err = run_cakd_here(["shortlist", "-S", "target.shortlist=target/shortlist/results.json"], project,
                              capsys, monkeypatch)
    assert code == 2 and "target.shortlist needs target.bundle" in err


@pytest.mark.slow
def test_train_budget_keeps_the_slowest_to_train_out_of_the_top_k(project: Path) -> None:
    """The estimates measured when the bundle was made (training happens here), ranked with a budget between the
    two slowest-to-train candidates that fit the latency budget: the slowest leaves the ranking, with its reason."""
    manifest, sha = read_manifest(project / BUNDLE)
    rows, _ = read_results(project / "results.json", manifest, sha)
    minutes = {n: m["train_min"] for n, m in manifest["models"].items() if m["role"] == "candidate"}
    fits = ["mlp", "vit", "cnn"]  # within the 2 ms latency budget
    slowest = max(fits, key=minutes.get)
    budget = (minutes[slowest] + max(minutes[n] for n in fits if n != slowest)) / 2
    params = load_params(project / "params.yaml", [f"shortlist.train_budget_min={budget}"])
    result = shortlist.report(params, profiled(manifest, rows, manifest["settings"]["num_classes"]),
                              manifest["settings"])
    assert slowest not in result["ranking"] and sorted(result["ranking"]) == sorted(set(fits) - {slowest})
    assert result["candidates"][slowest]["reason"] == (f"training ~{minutes[slowest]:.1f} min > train_budget_min "
                                                       f"{budget:g}")
