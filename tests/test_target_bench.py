"""Target rows in the bench (issue 32, item 3): an export bundle timed and scored by run.py in a torch-free
environment at 1 thread joins `cakd bench-latency` as `onnxruntime@TARGET` rows with the target's system; they get
their own deploy line; a target whose accuracy fails the runtime check keeps that file out of the picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cakd.export.measure.rows import BenchRow
from cakd.pipeline.errors import CakdError
from cakd.pipeline.settings.params import Params
from cakd.pipeline.stages import bench
from tests.test_bundle import call, made, ort_python  # noqa: F401 - module fixtures shared with the bundle tests


@pytest.mark.slow
def test_target_rows_make_their_own_deploy_line_and_a_wrong_answer_is_never_picked(
        made: tuple[Params, Path, Path], ort_python: Path, tmp_path: Path) -> None:  # noqa: F811
    params, manifest, folder = made
    params = params.model_copy(update={"bench": params.bench.model_copy(update={"min_speedup": None})})  # no teacher
    good = tmp_path / "edge1.json"
    proc = call(ort_python, folder, "--bench", "--accuracy", str(Path(params.data.root) / "val"), "--artefact", "onnx",
                "--runtime", "onnxruntime", "--threads", "1", "--out", str(good))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(good.read_text())
    bad = tmp_path / "edge2.json"  # the same file answering worse on a second target
    bad.write_text(json.dumps({**results, "accuracy": {"onnx": {**results["accuracy"]["onnx"], "top1": 0.0}}}))
    result = bench.run(params, [f"student={folder}"], tmp_path / "bench", manifest, [good, bad])
    rows = [BenchRow.from_dict(r) for r in result["rows"]]
    local = next(r for r in rows if (r.runtime, r.artefact, r.batch_size) == ("onnxruntime", "onnx", 1))
    mine = [r for r in rows if r.runtime == "onnxruntime@edge1"]
    assert {r.batch_size for r in mine} == {1, 4} and all(r.status == "ok" for r in mine)
    assert mine[0].top1 == results["accuracy"]["onnx"]["top1"] == local.top1  # the same file answers alike there
    assert mine[0].p50_ms == results["rows"][0]["p50_ms"] and mine[0].params_m == local.params_m
    assert result["targets"]["edge1"]["system"]["threads"] == 1
    assert result["targets"]["edge1"]["system"] == results["system"]
    picks = {p["runtime"]: p for p in result["picks"]}
    assert picks["onnxruntime@edge1"]["model"] == "student" and picks["onnxruntime@edge1"]["artefact"] == "onnx"
    failed = [r for r in rows if r.runtime == "onnxruntime@edge2"]
    assert all(r.status == "failed" and "on target edge2: top-1 0.00%" in r.reason for r in failed)
    assert picks["onnxruntime@edge2"]["model"] is None and "top-1 0.00%" in picks["onnxruntime@edge2"]["reason"]
    assert "onnxruntime@edge1" in (tmp_path / "bench/bench.csv").read_text()


ROW = {"model": "student", "runtime": "onnxruntime", "precision": "fp32", "artefact": "onnx", "batch_size": 1,
       "status": "ok", "p50_ms": 1.0}


@pytest.mark.parametrize("content, says", [
    ({"rows": [{**ROW, "p50_ms": -1.0}]}, "p50_ms is -1.0, not a finite non-negative time"),
    ({"rows": [{**ROW, "p90_ms": "Infinity"}]}, "p90_ms is 'Infinity'"),
    ({"rows": []}, "is not the output of an export bundle"),
    ({"rows": [ROW], "accuracy": {"onnx": {"top1": 120}}}, "the top-1 of onnx is 120, not a percentage"),
    ({"rows": [{**ROW, "batch_size": "1"}]}, "a row of student is malformed"),
    ({"rows": [{k: v for k, v in ROW.items() if k != "runtime"}]}, "a row of student is malformed"),
])
def test_bad_target_results_are_one_line_before_anything_is_timed(content: dict, says: str, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(content))
    with pytest.raises(CakdError, match="^" + str(path).replace(".", r"\.")) as err:
        bench.read_targets([path])
    assert says in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "dup").mkdir()
    good = {"rows": [ROW]}
    for p in (tmp_path / "x.json", tmp_path / "dup/x.json"):
        p.write_text(json.dumps(good))
    with pytest.raises(CakdError, match="two --target-results files are named x"):
        bench.read_targets([tmp_path / "x.json", tmp_path / "dup/x.json"])
