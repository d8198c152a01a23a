"""The artefact table is the one list of artefact kinds: every runtime's kinds are in it, its files do not clash,
and the exporter's INT8 recipe follows each row's form."""

from __future__ import annotations

from typing import get_args

from cakd.export.artefacts import ARTEFACTS, Artefact
from cakd.export.make.artefacts import artefacts_for, int8_recipe
from cakd.export.runtimes import RUNTIMES, consumers
from cakd.pipeline.settings.params import ExportParams


def test_every_kind_a_runtime_consumes_is_a_row_of_its_precision() -> None:
    for name, runtime in RUNTIMES.items():
        for precision, kinds in runtime.consumes.items():
            for kind in kinds:
                assert kind in ARTEFACTS, f"runtime {name} consumes {kind}, which the artefact table lacks"
                assert ARTEFACTS[kind].precision == precision, f"{name} runs {kind} as {precision}"


def test_every_row_has_its_own_file_and_is_a_declared_kind() -> None:
    files = [row.file for row in ARTEFACTS.values()]
    assert len(files) == len(set(files)), files
    assert list(ARTEFACTS) == list(get_args(Artefact))


def test_every_row_is_run_by_some_runtime() -> None:
    """A kind no runtime runs would be made for nobody; the checkpoint and FP32 ONNX, every other artefact's
    source, are made whatever the runtimes."""
    for kind in ARTEFACTS:
        assert consumers(kind), kind
    assert artefacts_for([], ["fp32"]) == ["checkpoint", "onnx"]


def test_the_int8_recipe_follows_the_form() -> None:
    cfg = ExportParams(int8_activations="uint8")
    for kind, row in ARTEFACTS.items():
        if row.maker != "int8" and not (row.maker == "qat" and row.form == "cpu"):
            continue
        recipe = int8_recipe(kind, cfg)
        if row.form == "trt":
            assert recipe["activations"] == "int8" and recipe["quantize_bias"] is False, kind
        else:
            assert recipe["activations"] == "uint8" and recipe["quantize_bias"] is True, kind
