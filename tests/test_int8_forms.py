"""Each CPU runtime's INT8 file in the form measured best there (issue 33): the choice is a pure function of the
recorded rows, a runtime whose INT8 answers are wrong in every form loses its INT8 and keeps FP32 while
onnxruntime keeps its own, and every form (NNCF included) is made, gated and timed for real on a small model."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch

from cakd.export.exported import read_export
from cakd.export.make import int8_forms, int8_search
from cakd.export.make.artefacts import export_model
from cakd.export.make.gate_data import gate_data
from cakd.export.make.int8_choice import choose, none_passed, runtime_line
from cakd.export.make.int8_forms import FORMS, FormJob, nncf_missing
from cakd.export.make.int8_search import try_form
from cakd.export.make.runtime_gate import Serving
from cakd.export.measure.bench import BenchModel, Timing, run_bench
from cakd.export.measure.rows import Pick
from cakd.export.runtimes import RUNTIMES, Runtime, Settings
from cakd.pipeline.settings.params import ExportParams, Params
from cakd.pipeline.stages.summary import forms_said
from tests.test_int8_runtime_gate import planted_runtime, setup  # noqa: F401 - setup is a fixture

KINDS = ["checkpoint", "onnx", "onnx-int8", "onnx-int8-openvino"]


def row(status: str, p50: tuple[float, float] | None = None, top1: float = 90.0) -> dict:
    """A form's row as int8_search records it (p50 at batch 1 and 64 when timed)."""
    timed = {} if p50 is None else {"p50_ms": {"1": p50[0], "64": p50[1]}}
    return {"status": status, "quantiser": "onnxruntime", "top1": top1, "agreement": 97.0,
            "reason": None if status == "passed" else "at batch 64: INT8 accuracy gate failed", **timed}


def test_the_fastest_passing_form_wins_and_the_same_rows_give_the_same_choice() -> None:
    rows = {"all": row("passed", (0.30, 9.0)), "all-8bit": row("failed", (0.10, 2.0), top1=40.0),
            "conv-gemm-matmul": row("passed", (0.20, 8.0)), "nncf": row("passed", (0.20, 7.0))}
    assert choose(rows) == "nncf"  # a tie at batch 1 goes to the faster at the largest batch
    shuffled = list(rows.items())
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert choose(dict(shuffled)) == "nncf"
    assert choose(json.loads(json.dumps(rows))) == "nncf"  # as read back from export.json


def test_a_failing_or_unmade_form_never_wins_and_none_passing_names_every_form() -> None:
    rows = {"all": row("failed", (0.10, 1.0), top1=61.2),
            "nncf": {"status": "unavailable", "quantiser": "nncf", "reason": "nncf is not installed"},
            "k-sensitive-float": {"status": "error", "quantiser": "onnxruntime", "reason": "ValueError: bad"}}
    assert choose(rows) is None
    said = none_passed("openvino", rows)
    assert said.startswith("no INT8 form passes on openvino: all failed (top-1 61.20%, agreement 97.00%; at batch")
    assert "nncf unavailable: nncf is not installed" in said and "k-sensitive-float error: ValueError" in said
    assert choose({"all": row("passed")}) is None  # passed but not timed: nothing to compare


def test_the_form_table_is_what_the_settings_accept() -> None:
    accepted = ExportParams.model_fields["int8_forms"].annotation.__args__[0].__args__
    assert set(FORMS) == set(accepted)
    assert FORMS["nncf"].runtimes == ("openvino",) and all(FORMS[n].runtimes is None for n in FORMS if n != "nncf")


def test_a_runtime_wrong_in_every_form_loses_its_int8_keeps_fp32_and_onnxruntime_keeps_its_own(
        setup: tuple[Params, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    planted = planted_runtime(wrong_above=0)
    monkeypatch.setitem(RUNTIMES, "openvino", Runtime("openvino", {"fp32": ("onnx",), "int8": ("onnx-int8-openvino",)},
                                                      "onnxruntime", lambda: None, planted.options, planted.build))
    params, manifest, checkpoint = setup
    cfg = params.export.model_copy(update={"int8_forms": ["all", "conv-gemm-matmul"]})
    out = tmp_path / "export"
    report = export_model(checkpoint, out, KINDS, cfg, gate_data(params, manifest),
                          serving=Serving(("onnxruntime", "openvino"), (1, 8), bench_batch_sizes=(1, 8)))

    mine, theirs = report["artefacts"]["onnx-int8"], report["artefacts"]["onnx-int8-openvino"]
    assert mine["status"] == "ok" and mine["chosen"] in ("all", "conv-gemm-matmul") and (out / mine["file"]).is_file()
    assert set(mine["forms"]) == {"all", "conv-gemm-matmul"}
    assert mine["runtimes"]["onnxruntime"]["batch_sizes"] == [1, 8]
    assert theirs["status"] == "rejected" and not (out / "model.int8-openvino.onnx").exists()
    assert theirs["reason"].startswith("no INT8 form passes on openvino: all failed (top-1")
    assert "conv-gemm-matmul failed" in theirs["reason"]
    assert theirs["cpu"]["flags"] == mine["cpu"]["flags"] and isinstance(mine["cpu"]["flags"], list)
    assert not (out / ".int8-forms").exists()
    said = runtime_line("student", "openvino", theirs)  # what the summary prints under OpenVINO's deploy line
    assert said.startswith("student INT8 on openvino: none passes: all failed at batch 1, 8 (top-1 ")
    assert ", conv-gemm-matmul failed at batch 1, 8 (top-1 " in said
    said = runtime_line("student", "onnxruntime", mine)
    p50 = mine["forms"][mine["chosen"]]["p50_ms"]["1"]
    assert said.startswith(f"student INT8 on onnxruntime: {mine['chosen']} {p50:.2f} ms (chosen, onnxruntime), ")
    assert said.endswith(f"; FP32 {mine['fp32_p50_ms']['1']:.2f} ms (p50, batch 1)") and len(said) < 200
    nothing = Pick("openvino", 1, reason="nothing runs within 2x the teacher's fastest (0.43 ms) (p50, batch 1)")
    assert forms_said(nothing, {"student": report["artefacts"]}) == [runtime_line("student", "openvino", theirs)]
    assert forms_said(Pick("openvino", 1, model="student"), {"student": report["artefacts"]}) == []

    rows = run_bench([BenchModel("student", read_export(out), (str(out),))], Settings(1, out, (1,)),
                     runtimes=["onnxruntime", "openvino"], precisions=["fp32", "int8"], timing=Timing((1,), 0, 1, 1),
                     loader=gate_data(params, manifest).test_loader)
    status = {(r.runtime, r.artefact): r.status for r in rows}
    assert status["openvino", "onnx"] == status["onnxruntime", "onnx-int8"] == "ok"
    assert status["openvino", "onnx-int8-openvino"] == "rejected"


@pytest.mark.slow  # about 23 s on 2 shared cores, NNCF's import and calibration most of it
@pytest.mark.skipif(RUNTIMES["openvino"].unavailable() is not None or nncf_missing() is not None,
                    reason="needs OpenVINO and NNCF (pip install -e '.[test]')")
def test_every_form_is_made_gated_and_timed_for_real_with_nncf_on_openvino_only(
        setup: tuple[Params, Path, Path], tmp_path: Path) -> None:  # noqa: F811
    params, manifest, checkpoint = setup
    cfg = params.export.model_copy(update={"int8_forms": list(FORMS), "int8_form_runs": 2, "int8_form_rounds": 2})
    out = tmp_path / "export"
    report = export_model(checkpoint, out, KINDS, cfg, gate_data(params, manifest),
                          serving=Serving(("onnxruntime", "openvino"), (1, 8), bench_batch_sizes=(1, 8)))
    for kind, runtime in (("onnx-int8", "onnxruntime"), ("onnx-int8-openvino", "openvino")):
        entry = report["artefacts"][kind]
        forms = entry["forms"]
        assert ("nncf" in forms) == (runtime == "openvino")
        assert forms["nncf" if runtime == "openvino" else "all"]["status"] in ("passed", "failed")
        for name, form in forms.items():
            assert form["status"] in ("passed", "failed", "unavailable"), (name, form.get("reason"))
            if form["status"] == "passed":
                assert set(form["p50_ms"]) == {"1", "8"} and form["batch_sizes"] == [1, 8]
        assert entry.get("chosen") == choose(forms), kind
        assert len(forms["k-sensitive-float"]["recipe"]["float_nodes"]) == cfg.int8_sensitive_k
        mishandled = forms["minus-mishandled"]
        assert (mishandled["status"] == "unavailable") == (not mishandled.get("recipe", {}).get("mishandled"))
        if entry["status"] == "ok":
            assert (out / entry["file"]).is_file() and entry["quantiser"] == forms[entry["chosen"]]["quantiser"]
    assert report["artefacts"]["onnx-int8-openvino"]["forms"]["nncf"]["recipe"]["method"].startswith("nncf.")


def test_without_nncf_its_form_is_recorded_unavailable_with_why(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf fails, as without cakd[nncf]

    def never(*_: object) -> dict:
        raise AssertionError("nothing is gated when the form cannot be made")

    job = FormJob(tmp_path / "model.onnx", tmp_path, torch.zeros(1, 3, 8, 8), ExportParams(), never, never)
    row, path = try_form("nncf", job, "openvino")
    assert path is None and row == {"quantiser": "nncf", "status": "unavailable",
                                    "reason": "nncf is not installed (pip install 'cakd[nncf]')"}
    assert choose({"nncf": row}) is None


@pytest.mark.parametrize(("machine", "flags", "made"), [
    ("x86_64", ["avx2", "fma"], False),          # AVX2 without VNNI: 8-bit weights saturate, the form is skipped
    ("x86_64", ["avx2", "avx512_vnni"], True),
    ("x86_64", ["avx2", "avx_vnni"], True),
    ("aarch64", [], True),                       # not x86: the gate decides
])
def test_8bit_weights_are_tried_only_where_the_cpu_has_vnni(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             machine: str, flags: list[str], made: bool) -> None:
    monkeypatch.setattr(int8_forms.platform, "machine", lambda: machine)
    monkeypatch.setattr(int8_forms, "cpu_flags", lambda: flags)
    quantised = []
    job = FormJob(tmp_path / "model.onnx", tmp_path, torch.zeros(1, 3, 8, 8), ExportParams(),
                  check=lambda path, runtime: {"batch_sizes": [1], "checked": {"1": {"top1": 90.0, "agreement": 99.0,
                                                                                      "reason": None}}},
                  score=lambda path, runtime, batches: [90.0])
    monkeypatch.setattr(job, "qdq", lambda **recipe: quantised.append(recipe) or tmp_path / "q.onnx")
    row, path = try_form("all-8bit", job, "onnxruntime")
    assert (row["status"] == "passed") == made and quantised == ([{"reduce_range": False}] if made else [])
    if not made:
        assert path is None and "no VNNI" in row["reason"]


@pytest.mark.slow
@pytest.mark.skipif(RUNTIMES["openvino"].unavailable() is not None or nncf_missing() is not None,
                    reason="needs OpenVINO and NNCF (pip install -e '.[test]')")
def test_nncf_accuracy_control_scores_the_test_batches_it_is_given(
        setup: tuple[Params, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """When plain NNCF fails the gate (here: 100% agreement required), accuracy control runs with the test set's
    batches as its validation items, scoring only the items NNCF passes (never the whole set per item)."""
    params, manifest, checkpoint = setup
    cfg = params.export.model_copy(update={"int8_forms": ["nncf"], "int8_min_agreement": 100.0,
                                           "int8_form_runs": 2, "int8_form_rounds": 2})
    scored: list[int] = []
    score = int8_search.top1_per_batch
    monkeypatch.setattr(int8_search, "top1_per_batch",
                        lambda path, rt, serving, spec, batches, work: scored.append(len(batches)) or score(
                            path, rt, serving, spec, batches, work))
    report = export_model(checkpoint, tmp_path / "export", KINDS, cfg, gate_data(params, manifest),
                          serving=Serving(("openvino",), (1, 8), bench_batch_sizes=(1, 8)))
    form = report["artefacts"]["onnx-int8-openvino"]["forms"]["nncf"]
    assert form["recipe"]["method"] == "nncf.quantize_with_accuracy_control", form
    test_batches = -(-len(gate_data(params, manifest).test_loader.dataset) // 8)
    assert scored and max(scored) <= test_batches and len(scored) < 4 * test_batches
