"""Files cakd wrote and reads back (export.json, reports/*.json, bench.json, the data manifest) are input like any
other (issue 35): an export's artefacts are plain names inside its folder, refused before any file opens, and
checked against their recorded sha256; every JSON file is read under a size and depth bound; a wrong shape is one
line naming the file and the field, with nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cakd.pipeline.errors import CakdError
from cakd.pipeline.files.fileio import MAX_JSON_DEPTH, MAX_MANIFEST_BYTES, MAX_REPORT_BYTES, read_json
from cakd.pipeline.files.reports import check_sha256
from tests.conftest import run_cakd_here, tiny_params, write_params
from tests.test_hostile_inputs import fails, one_line
from tests.test_summary import reports  # noqa: F401  (the fixture: a project's reports as the stages write them)

MANIFEST = Path("artifacts/data/manifest.json")


def export_folder(root: Path, kind: str = "onnx", **entry: object) -> Path:
    """An export folder of an FP32 ONNX file as ``cakd export`` writes it, its ``kind`` entry changed by ``entry``."""
    folder = root / "export"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    artefacts = {"checkpoint": {"file": None, "status": "skipped", "reason": "an ONNX file was given"},
                 "onnx": {"file": "model.onnx", "status": "ok", "reason": None, "size_bytes": 4, "parity": None}}
    if kind == "checkpoint":
        artefacts["checkpoint"] = {"file": "model.pt", "status": "ok", "reason": None, "size_bytes": 4}
    artefacts[kind].update(entry)
    report = {"checkpoint_sha256": None, "model": {"name": None, "img_size": 16, "in_chans": 3, "num_classes": 10},
              "artefacts": artefacts}
    (folder / "export.json").write_text(json.dumps(report))
    return folder


@pytest.mark.parametrize("kind", ["onnx", "checkpoint"])
@pytest.mark.parametrize("name", ["../deit/model.onnx", "OTHER", "FIFO", "/etc/passwd", "../../../../etc/shadow",
                                  "sub/model.onnx", "..", "", "a\\..\\b"])
def test_an_artefact_outside_its_folder_is_refused_before_any_file_opens(project: Path, tmp_path: Path, kind: str,
                                                                           name: str, capsys, monkeypatch) -> None:
    """Issue 35's first defect: another folder's model.onnx was timed under this folder's name, exit 0, and
    /etc/passwd was handed to onnxruntime. A FIFO stands for "any file": opening it would block for ever."""
    other = tmp_path / "deit" / "model.onnx"
    other.parent.mkdir()
    other.write_bytes(b"deit")
    os.mkfifo(tmp_path / "fifo.onnx")
    name = {"OTHER": str(other), "FIFO": str(tmp_path / "fifo.onnx")}.get(name, name)
    folder = export_folder(tmp_path, kind, file=name)
    line = fails(["bench-latency", f"x={folder}", "--out", str(tmp_path / "bench")], project, capsys, monkeypatch)
    assert line == (f"cakd: error: export report {folder / 'export.json'}: 'artefacts.{kind}.file': must be a plain "
                    f"file name inside the export folder (got {name!r}) (re-run cakd export)")
    assert not (tmp_path / "bench").exists()


def test_an_artefact_that_is_not_a_regular_file_is_refused(project: Path, tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    folder = export_folder(tmp_path)
    (folder / "model.onnx").unlink()
    os.mkfifo(folder / "model.onnx")
    line = fails(["bench-latency", str(folder), "--out", str(tmp_path / "bench")], project, capsys, monkeypatch)
    assert line == (f"cakd: error: {folder / 'export.json'} names {folder / 'model.onnx'}, which is not a regular "
                    "file: refused")


def test_an_artefact_whose_sha256_differs_from_the_recorded_one_is_refused(project: Path, checkpoint: Path,
                                                                           tmp_path: Path, capsys, monkeypatch) -> None:
    """Every export folder is checked before the checkpoint given first is exported into OUT/exports."""
    folder = export_folder(tmp_path, sha256=hashlib.sha256(b"another model").hexdigest())
    line = fails(["bench-latency", str(checkpoint), str(folder), "--out", str(tmp_path / "bench")], project, capsys,
                 monkeypatch)
    assert line == (f"cakd: error: {folder / 'model.onnx'} is not the file {folder / 'export.json'} recorded (its "
                    "sha256 differs): re-run cakd export")
    assert not (tmp_path / "bench").exists()
    check_sha256(folder / "model.onnx", {"sha256": hashlib.sha256(b"onnx").hexdigest()}, folder / "export.json")
    folder = export_folder(tmp_path / "bad", sha256="not a digest")
    line = fails(["bench-latency", str(folder), "--out", str(tmp_path / "bench")], project, capsys, monkeypatch)
    assert "'artefacts.onnx.sha256': String should match pattern '^[0-9a-f]{64}$' (got 'not a digest')" in line


# --- reports/*.json and bench.json, read by cakd summary --------------------------------------------------------

@pytest.mark.parametrize(("file", "content", "expected"), [
    ("reports/teacher.json", [1, 2, 3],
     "teacher metrics reports/teacher.json is not a JSON object (it holds [1, 2, 3]) (re-run cakd train-teacher)"),
    ("reports/teacher.json", {"model": "resnet18"},
     "teacher metrics reports/teacher.json: missing key 'accuracy' (re-run cakd train-teacher)"),
    ("reports/students/cnn/eval.json", {},
     "evaluation of student cnn reports/students/cnn/eval.json: missing key 'teacher' (re-run cakd evaluate)"),
    ("reports/students/cnn/eval.json", {"teacher": {"top1": 99.0}, "baseline": {"top1": 85.0},
                                        "student": {"top1": "97.5"}, "gain_over_baseline": 12.5},
     "evaluation of student cnn reports/students/cnn/eval.json: 'student.top1': Input should be a valid number "
     "(got '97.5') (re-run cakd evaluate)"),
    ("artifacts/bench/bench.json", {"rows": 5},
     "latency report artifacts/bench/bench.json: 'rows': Input should be a valid list (got 5) "
     "(re-run cakd bench-latency)"),
    ("artifacts/bench/bench.json", {"rows": [], "picks": [{"runtime": "onnxruntime", "batch_size": 1, "model": "a"}]},
     "latency report artifacts/bench/bench.json: picks.0 names model 'a' but no precision (re-run cakd bench-latency)"),
    ("artifacts/export/cnn/export.json", {"model": {"img_size": 12, "num_classes": 10}, "artefacts": {
        "onnx-int8": {"file": "model.int8.onnx", "status": "ok"}}},
     "export report artifacts/export/cnn/export.json: artefact onnx-int8 is ok but gives no gate (re-run cakd export)"),
    ("artifacts/export/cnn/export.json", {"model": {"img_size": 12, "num_classes": 10}, "artefacts": {
        "onnx": {"file": "model.onnx", "status": "ok", "parity": {"max_abs_diff": "0", "top1_agreement": 1.0}}}},
     "export report artifacts/export/cnn/export.json: 'artefacts.onnx.parity.max_abs_diff': Input should be a "
     "valid number (got '0') (re-run cakd export)"),
])
def test_a_report_of_the_wrong_shape_is_one_line_naming_its_field_and_nothing_is_written(
        reports: Path, file: str, content: object, expected: str, capsys, monkeypatch) -> None:  # noqa: F811
    """Issue 35's third defect: tracebacks (TypeError, KeyError, ValueError) after summary.json was written."""
    (reports / file).write_text(json.dumps(content))
    line = fails(["summary"], reports, capsys, monkeypatch)
    assert line == f"cakd: error: {expected}"
    assert not (reports / "reports/summary.json").exists()


def _limit_address_space() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3_000_000_000, 3_000_000_000))  # `ulimit -v 3000000`


def test_a_1_gb_report_is_refused_unread_under_a_3_gb_address_space(reports: Path) -> None:  # noqa: F811
    """Issue 35's second defect: `cakd summary` passed 2 GB of memory reading a 1 GB eval.json. The file is
    sparse (no disk used); the same command first succeeds under the same limit, so the limit alone fails
    nothing."""
    def summary() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", "summary"], cwd=reports,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=120, preexec_fn=_limit_address_space)

    assert summary().returncode == 0
    (reports / "reports/summary.json").unlink()
    with open(reports / "reports/students/cnn/eval.json", "wb") as f:
        f.truncate(1 << 30)
    proc = summary()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert one_line(proc.stderr) == ("cakd: error: evaluation of student cnn reports/students/cnn/eval.json is "
                                     f"1,073,741,824 bytes, more than the {MAX_REPORT_BYTES:,} allowed")
    assert not (reports / "reports/summary.json").exists()


def test_json_read_back_is_bounded_in_depth_and_size(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    deepest: list = []
    for _ in range(MAX_JSON_DEPTH - 1):
        deepest = [deepest]
    assert read_json(path, "report") == deepest
    for text in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "{\"a\": " * 5000 + "1" + "}" * 5000):
        path.write_text(text)
        with pytest.raises(CakdError) as caught:
            read_json(path, "report")
        assert str(caught.value) == (f"report {path} is not usable JSON: nested too deeply (more than "
                                     f"{MAX_JSON_DEPTH} levels)")
    path.unlink()
    path.mkdir()
    with pytest.raises(CakdError, match=f"^report {path} is not a regular file \\(a folder\\): refused$"):
        read_json(path, "report")


# --- the data manifest, read by every stage after prepare ---------------------------------------------------------

def _edit_manifest(project: Path, edit) -> None:
    path = project / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda m: m["splits"]["train"]["indices"].__setitem__(0, "5"),
     "data manifest artifacts/data/manifest.json: 'splits.train.indices.0': Input should be a valid integer "
     "(got '5') (re-run `cakd prepare`)"),
    (lambda m: m["splits"]["test"]["indices"].__setitem__(0, -1),
     "data manifest artifacts/data/manifest.json: 'splits.test.indices.0': Input should be greater than or equal "
     "to 0 (got -1) (re-run `cakd prepare`)"),
    (lambda m: m["splits"].__setitem__("train", {"files": [["/etc/shadow", 0]]}),
     "data manifest artifacts/data/manifest.json: 'splits.train.files.0': '/etc/shadow' is not a path inside "
     "data.root: re-run `cakd prepare`"),
    (lambda m: m["splits"].__setitem__("train", {"files": [["a/../../x.png", 0]]}),
     "data manifest artifacts/data/manifest.json: 'splits.train.files.0': 'a/../../x.png' is not a path inside "
     "data.root: re-run `cakd prepare`"),
    (lambda m: m["splits"].__setitem__("test", {"files": [["a/x.png", 10]]}),
     "data manifest artifacts/data/manifest.json: 'splits.test.files.0': label 10 is not one of the 10 classes: "
     "re-run `cakd prepare`"),
    (lambda m: m["splits"].__setitem__("test", {"files": [["a/x.png", "1"]]}),
     "data manifest artifacts/data/manifest.json: 'splits.test.files.0.1': Input should be a valid integer "
     "(got '1') (re-run `cakd prepare`)"),
    (lambda m: m.__setitem__("classes", ["0"]),
     "data manifest artifacts/data/manifest.json names 1 classes but its num_classes is 10: re-run `cakd prepare`"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line(project: Path, edit, expected: str, capsys, monkeypatch) -> None:
    """Issue 35's fourth defect: an index of 99999 (IndexError) or a string (TypeError) was a traceback."""
    _edit_manifest(project, edit)
    line = fails(["train-teacher", "--out", "teacher"], project, capsys, monkeypatch)
    assert line == f"cakd: error: {expected}"
    assert not (project / "teacher").exists()


def test_a_manifest_index_past_the_source_is_one_line(project: Path, capsys, monkeypatch) -> None:
    _edit_manifest(project, lambda m: m["splits"]["train"]["indices"].__setitem__(0, 99999))
    line = fails(["train-teacher", "--out", "teacher"], project, capsys, monkeypatch)
    assert line == ("cakd: error: the data manifest's 'train' split has index 99999, but digits's train split has "
                    "1797 images: re-run `cakd prepare`")


def test_a_manifest_over_its_bound_is_refused_unread(project: Path, capsys, monkeypatch) -> None:
    with open(project / MANIFEST, "r+b") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse
    line = fails(["train-teacher", "--out", "teacher"], project, capsys, monkeypatch)
    assert line == (f"cakd: error: data manifest {MANIFEST} is {MAX_MANIFEST_BYTES + 1:,} bytes, more than the "
                    f"{MAX_MANIFEST_BYTES:,} allowed")



# --- messages that named the wrong problem ------------------------------------------------------------------------

def test_a_params_path_that_is_a_folder_is_named(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "params.yaml").mkdir()
    line = fails(["prepare"], tmp_path, capsys, monkeypatch)
    assert line == "cakd: error: params file params.yaml is not a regular file (a folder): refused"  # was "EISDIR: 3"
    line = fails(["prepare", "-p", str(tmp_path)], tmp_path, capsys, monkeypatch)
    assert line == f"cakd: error: params file {tmp_path} is not a regular file (a folder): refused"


def test_an_openvino_load_error_keeps_the_line_that_says_why(tmp_path: Path) -> None:
    from cakd.export.runtimes import Session, Settings
    from cakd.export.runtimes.openvino_cpu import build

    (tmp_path / "random.onnx").write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CakdError) as caught:
        build(Session(tmp_path / "random.onnx", "fp32", None, 16, 3, Settings(1, tmp_path)))
    message = str(caught.value)
    assert message.startswith(f"OpenVINO cannot load {tmp_path / 'random.onnx'}: Unable to read the model")
    assert "core.cpp" not in message and "\n" not in message


def test_a_bench_label_is_printable_and_its_export_folder_a_plain_name(project: Path, tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    from cakd.export.measure.bench_inputs import folder_name

    line = fails(["bench-latency", "a\nb=model.onnx", "--out", str(tmp_path / "bench")], project, capsys, monkeypatch)
    assert line == "cakd: error: label 'a\\nb': a label is printable text (no newline or control character)"
    assert not (tmp_path / "bench").exists()
    assert [folder_name(label) for label in ("runs/a/fbt", "..", ".", "a b", "deit-1.int8")] == [
        "runs_a_fbt", "_..", "_.", "a_b", "deit-1.int8"]


def test_without_data_the_pick_says_no_accuracy_was_measured() -> None:
    from cakd.export.decide.picks import pick_for
    from cakd.export.measure.rows import BenchRow

    rows = [BenchRow("deit", "onnxruntime", "fp32", "onnx", 1, "ok", p50_ms=0.5),
            BenchRow("deit", "onnxruntime", "int8", "onnx-int8-qat-cpu", 1, "skipped",
                     reason="post-training INT8 passed (qat.mode: auto)")]
    pick = pick_for(rows, "onnxruntime", None, 1.0)
    assert pick.line == "onnxruntime: nothing to deploy (no accuracy was measured: give --data to rank models)"
    rows[0].status, rows[0].reason = "unavailable", "no GPU"
    assert pick_for(rows, "onnxruntime", None, 1.0).reason == (
        "no usable result: no GPU; post-training INT8 passed (qat.mode: auto)")


@pytest.fixture
def checkpoint(project: Path) -> Path:
    from cakd.pipeline.models import ModelSpec, create_model, save_model

    path = project / "runs" / "resnet" / "model.pt"
    save_model(create_model(ModelSpec("resnet10t", 10, 16)), path)
    return path


def test_qat_dir_naming_a_file_is_one_line_before_any_export(project: Path, checkpoint: Path, capsys,
                                                             monkeypatch) -> None:
    (project / "occupied").write_text("mine")
    line = fails(["export", "--checkpoint", str(checkpoint), "--qat-dir", "occupied", "--out", "x"], project, capsys,
                 monkeypatch)
    assert line == "cakd: error: --qat-dir occupied is a file, not a folder"
    assert not (project / "x").exists() and (project / "occupied").read_text() == "mine"


def test_export_makes_no_qat_folder_beside_the_checkpoint_when_qat_does_not_train(project: Path, checkpoint: Path,
                                                                                   capsys, monkeypatch) -> None:
    code, err = run_cakd_here(["export", "--checkpoint", str(checkpoint), "--out", "x", "--precision", "fp32"],
                              project, capsys, monkeypatch)
    assert code == 0, err
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model.pt"]
    report = json.loads((project / "x" / "export.json").read_text())
    assert report["artefacts"]["onnx"]["sha256"] == hashlib.sha256((project / "x" / "model.onnx").read_bytes()
                                                                   ).hexdigest()  # what the bench checks


def test_shortlist_apply_0_is_refused_before_measuring(project: Path, capsys, monkeypatch) -> None:
    code, err = run_cakd_here(["shortlist", "--apply", "0"], project, capsys, monkeypatch)
    assert code == 2
    assert err.strip() == "cakd: error: --apply takes how many candidates to train (1 or more), not 0"  # no table


def test_a_one_class_dataset_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "images" / split / "cat").mkdir(parents=True)
        for i in range(2):
            noise = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(noise).save(tmp_path / "images" / split / "cat" / f"{i}.png")
    write_params(tmp_path / "params.yaml", tiny_params(data={"name": "imagefolder", "root": "images"}))
    line = fails(["prepare", "--out", "out"], tmp_path, capsys, monkeypatch)
    assert line == "cakd: error: the dataset has 1 class (cat): classification needs at least 2"
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from cakd.pipeline.data.datasets import read_image

    grey = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    image, _ = read_image(tmp_path / "deep.png")
    assert np.asarray(image)[0, :, 0].tolist() == [0, 1, 128, 255]  # clipped, it was [0, 255, 255, 255]


def test_a_teacher_of_another_architecture_is_said_in_one_line(project: Path, checkpoint: Path, capsys) -> None:
    from cakd.pipeline.settings.params import Params
    from cakd.pipeline.stages.train import plan_for, teacher_for

    params = Params.model_validate(tiny_params())
    teacher = teacher_for(plan_for("student", params), checkpoint, params.teacher.model)
    assert teacher.spec.name == "resnet10t"
    assert capsys.readouterr().err.strip() == (f"warning: --teacher {checkpoint} is a resnet10t, not params.yaml's "
                                               "teacher.model vit_tiny_patch16_224: distilling from it as the teacher")


def test_a_student_labelled_teacher_is_noted_as_the_speed_up_reference(tmp_path: Path) -> None:
    from cakd.export.exported import Exported
    from cakd.export.measure.bench import BenchModel
    from cakd.pipeline.stages.bench import teacher_note

    def model(label: str, name: str | None) -> BenchModel:
        return BenchModel(label, Exported(tmp_path, {"model": {"name": name}}, {}, {}), ())

    assert teacher_note([model("teacher", "resnet18"), model("s", "deit_tiny_patch16_224")], "resnet18") == []
    assert teacher_note([model("teacher", None)], "resnet18") == []  # an ONNX file names no architecture
    assert teacher_note([model("teacher", "deit_tiny_patch16_224")], "resnet18") == [
        "the model labelled teacher is a deit_tiny_patch16_224, not params.yaml's teacher.model resnet18: every "
        "speed-up and bench.min_speedup is measured against it"]
