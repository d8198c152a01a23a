"""Bad input to any command ends in one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from cakd.pipeline.errors import CakdError
from cakd.pipeline.settings.loading import load_params
from cakd.pipeline.settings.overrides import apply_override
from cakd.pipeline.stages.train import plan_for
from tests.conftest import run_cakd, run_cakd_here, tiny_params, write_params


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=-1", "'train.epochs': Input should be greater than or equal to 0"),
        ("teacher.model=vit_gigantic", "'teacher.model': unknown model 'vit_gigantic'"),
        ("train.batch_size=many", "'train.batch_size': Input should be a valid integer"),
        ("distill.method=magic", "'distill.method'"),
        ("data.name=imagenet22k", "'data.name'"),
        ("train.epoch=3", "unknown key 'train.epoch'"),
        ("distill.fbt.nce_tau=5", "need nce_tau_min <= nce_tau <= nce_tau_max"),
    ],
)
def test_bad_params_give_one_line_and_exit_2(tmp_path: Path, override: str, expected: str, capsys, monkeypatch
                                             ) -> None:
    write_params(tmp_path / "params.yaml", tiny_params())
    code, err = run_cakd_here(["train-teacher", "-S", override], tmp_path, capsys, monkeypatch)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cakd: error: invalid override -S {override}: ")  # not params.yaml: it is fine
    assert expected in lines[0]


def test_a_bad_value_in_the_file_names_the_file_even_with_overrides(tmp_path: Path, capsys, monkeypatch) -> None:
    write_params(tmp_path / "params.yaml", tiny_params(train={"lr": -1}))
    code, err = run_cakd_here(["train-teacher", "-S", "train.epochs=3"], tmp_path, capsys, monkeypatch)
    assert code == 2
    assert err.startswith("cakd: error: invalid params in params.yaml: 'train.lr': Input should be greater than 0")


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", tiny_params())
    proc = run_cakd("train-teacher", "-S", "train.epochs=-1", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("cakd: error: invalid override -S train.epochs=-1: 'train.epochs'")
    assert "Traceback" not in proc.stderr


def test_missing_params_file_and_yaml_typo(tmp_path: Path, capsys, monkeypatch) -> None:
    code, err = run_cakd_here(["prepare", "--params", "nope.yaml"], tmp_path, capsys, monkeypatch)
    assert code == 2 and "params file not found: nope.yaml" in err
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    code, err = run_cakd_here(["prepare"], tmp_path, capsys, monkeypatch)
    assert code == 2 and "is not valid YAML" in err


def test_overrides_use_dvc_spelling_and_yaml_values(tmp_path: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params())
    params = load_params(path, ["train.lr=0.1", "distill.fbt.use_tf=false", "bench.batch_sizes=[1, 2]",
                                "teacher.kwargs.depth=8"])
    assert params.train.lr == 0.1 and params.distill.fbt.use_tf is False
    assert params.bench.batch_sizes == [1, 2] and params.teacher.kwargs["depth"] == 8
    with pytest.raises(CakdError, match="must look like key.path=value"):
        apply_override({}, "train.lr")


def test_missing_teacher_checkpoint_is_one_line(project: Path, capsys, monkeypatch) -> None:
    code, err = run_cakd_here(["distill", "--teacher", "artifacts/teacher/missing.pt"], project, capsys, monkeypatch)
    assert code == 2
    assert err.strip() == "cakd: error: model checkpoint not found: artifacts/teacher/missing.pt"



def help_text(command: str, capsys, monkeypatch) -> str:
    from cakd.pipeline.cli import main

    monkeypatch.setattr(sys, "argv", ["cakd", command, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert not exit_info.value.code
    return capsys.readouterr().out


def test_version(tmp_path: Path) -> None:
    from cakd.pipeline import __version__

    proc = run_cakd("--version", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"cakd {__version__}\n")


@pytest.mark.parametrize("command", ["train-teacher", "distill", "export"])
def test_flags_show_no_value_in_help(command: str, capsys, monkeypatch) -> None:
    out = help_text(command, capsys, monkeypatch)
    assert "<bool>" not in out, out  # '--resume', not '--resume <bool>': a flag takes no value
    flag = "--resume" if command != "export" else "--strict"
    assert re.search(rf"^  {flag} +\S", out, re.M), out


def test_a_students_own_epochs_set_its_baseline_and_distillation_budget(tmp_path: Path) -> None:
    path = write_params(tmp_path / "params.yaml", tiny_params(
        students={"fast": {"model": "mobilenetv2_050", "epochs": 3}, "plain": {"model": "mobilenetv2_050"}},
        distill={"method": "kd", "epochs": 5}))
    for method in ("ce", "kd"):  # the baseline and the distillation: one budget per student
        params = load_params(path, [f"distill.method={method}"])
        assert plan_for("student", params, params.student("fast")).epochs == 3
        assert plan_for("student", params, params.student("plain")).epochs == 5
    longer = load_params(path, ["students.fast.epochs=4"])
    assert plan_for("student", longer, longer.student("fast")).run_parts != plan_for(
        "student", params, params.student("fast")).run_parts  # a checkpoint of 3 epochs is not resumed as 4
    with pytest.raises(CakdError, match="epochs"):
        load_params(path, ["students.fast.epochs=0"])


@pytest.mark.parametrize("override", ["target.bench=[edge.json]", "target.bench=[target/bench/../edge.json]",
                                      "target.bench=[/tmp/target/bench/edge.json]", "target.bench=[target/bench]",
                                      "target.bundle=target/bench/bundle"])
def test_target_results_must_sit_in_the_folder_dvc_yaml_lists(tmp_path: Path, override: str) -> None:
    """A results file outside its target/ folder would not be a DVC dependency: replacing it would re-run nothing."""
    path = tmp_path / "params.yaml"
    write_params(path, tiny_params())
    key = override.split("=")[0]
    with pytest.raises(CakdError, match=rf"{key}: .* is not inside target/(bench|shortlist)/, the folder dvc.yaml"):
        load_params(path, [override, "target.shortlist=target/shortlist/r.json"] if key == "target.bundle"
                    else [override])
    params = load_params(path, ["target.bench=[target/bench/edge.json, ./target/bench/lab/one.json]",
                                "target.shortlist=target/shortlist/r.json", "target.bundle=target/shortlist/bundle"])
    assert params.target.bench == ["target/bench/edge.json", "./target/bench/lab/one.json"]
