"""The shortlist measured on the target: a bundle to copy there, and the results its runner brings back.

``write_bundle`` puts every candidate's untrained artefact and the teacher's (made by ``profile.export_all``, as
``cakd export`` makes them) under ``models/``, the bundle's torch-free ``run.py`` beside them, and
``manifest.json``: each file's sha256, each model's architecture and size, and the settings the ranking needs.
On the target, ``python run.py --bench --out results.json`` times every model in interleaved rounds.

``read_results`` takes that file back and refuses, in one line, anything that is not the bundle's own
measurement: results of another bundle (the manifest's or a file's sha256 differs), a model missing or one the
bundle does not hold, a time that is not a finite non-negative number, a file too big or nested too deep to be
what the runner writes. ``profiled`` turns the rows into the same ``Profiled`` items a local measurement gives,
so the target's figures go through the same ``judge``/``rank`` rule and budget line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import atomic_dir, bounded, file_sha256, write_json
from ...pipeline.models import ModelSpec
from ..bundle.run import BUNDLE_VERSION, TARGET_FORMAT, TARGET_MANIFEST
from ..measure.rows import BenchRow
from ..measure.target_rows import bounded_json, checked_row
from .profile import TEACHER, Profiled

RUNNER = Path(__file__).resolve().parents[1] / "bundle" / "run.py"
RUNNER_RUNTIMES = ("onnxruntime", "openvino")  # what run.py runs from an ONNX file alone (TensorRT needs an engine)
RESULTS_FORMAT = "cakd.target-results"


def check_runtime(runtime: str) -> None:
    if runtime not in RUNNER_RUNTIMES:
        raise CakdError(f"shortlist --bundle: the bundle's runner times ONNX files on {' or '.join(RUNNER_RUNTIMES)}, "
                        f"not shortlist.runtime {runtime}")


def write_bundle(folder: Path, items: list[Profiled], settings: dict, key: str) -> dict:
    """The folder to copy to the target, swapped in whole; returns its manifest."""
    check_runtime(settings["runtime"])
    teacher = items[0]
    if teacher.error is not None:
        raise CakdError(f"the teacher ({teacher.spec.name}) cannot be bundled: {teacher.error}")
    models = {}
    with atomic_dir(folder) as tmp:
        (tmp / "models").mkdir()
        for item in items:
            entry = {"role": "teacher" if item.name == TEACHER else "candidate", "family": item.family,
                     "model": item.spec.name, "kwargs": dict(item.spec.kwargs), "params_m": item.params / 1e6,
                     "gflops": item.gflops, "train_min": item.train_min, "file": None, "sha256": None,
                     "error": item.error}
            if item.error is None:
                entry["file"] = f"models/{item.name}{''.join(item.path.suffixes)}"
                shutil.copyfile(item.path, tmp / entry["file"])
                entry["sha256"] = file_sha256(tmp / entry["file"])
            models[item.name] = entry
        shutil.copyfile(RUNNER, tmp / RUNNER.name)
        manifest = {"format": TARGET_FORMAT, "version": BUNDLE_VERSION, "key": key, "runtime": settings["runtime"],
                    "input": [teacher.spec.in_chans, teacher.spec.img_size, teacher.spec.img_size],
                    "settings": settings, "runner_sha256": file_sha256(RUNNER), "models": models}
        write_json(tmp / TARGET_MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> tuple[dict, str]:
    """The bundle's manifest and its sha256 (what the results must name)."""
    path = folder / TARGET_MANIFEST
    manifest = bounded_json(path, "shortlist bundle manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != TARGET_FORMAT:
        raise CakdError(f"{path} is not a cakd shortlist bundle manifest")
    return manifest, file_sha256(path)


def read_results(path: Path, manifest: dict, manifest_sha: str) -> tuple[dict[str, BenchRow], dict]:
    """The target's rows by model name and its system info, checked against the bundle's manifest."""
    results = bounded_json(path, "target results")
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise CakdError(f"{path} is not the results of a shortlist bundle's `run.py --bench --out`")
    if results.get("manifest_sha256") != manifest_sha:
        raise CakdError(f"{path} comes from another bundle: its manifest sha256 differs from this bundle's")
    expected = {name: m["sha256"] for name, m in manifest["models"].items() if m["file"]}
    files = results.get("files") if isinstance(results.get("files"), dict) else {}
    changed = sorted(name for name in expected if files.get(name) != expected[name])
    if changed:
        raise CakdError(f"{path} comes from another bundle: the sha256 of {', '.join(changed[:3])} differs")
    rows = {}
    for raw in results.get("rows") if isinstance(results.get("rows"), list) else []:
        row = checked_row(raw, path)
        if row.model not in expected:
            raise CakdError(f"{path}: model '{bounded(row.model, 60)}' is not in the bundle")
        rows[row.model] = row
    missing = sorted(set(expected) - set(rows))
    if missing:
        raise CakdError(f"{path} has no timing for {', '.join(missing)}: time the whole bundle")
    system = results.get("system") if isinstance(results.get("system"), dict) else {}
    return rows, system


def profiled(manifest: dict, rows: dict[str, BenchRow], num_classes: int) -> list[Profiled]:
    """The bundle's models as ``Profiled`` items (the teacher first) with the target's rows; a model that failed to
    export here is listed failed, as in a local shortlist."""
    s, items = manifest["settings"], []
    for name, m in sorted(manifest["models"].items(), key=lambda kv: kv[0] != TEACHER):
        spec = ModelSpec(m["model"], num_classes, s["img_size"], manifest["input"][0], dict(m["kwargs"]))
        item = Profiled(name, spec, m["family"], None, round(m["params_m"] * 1e6), m["gflops"], error=m["error"],
                        train_min=m["train_min"])  # training happens here: its estimate is this machine's
        row = rows.get(name) or BenchRow(model=name, runtime=s["runtime"], precision=s["precision"],
                                         artefact=s["artefact"], batch_size=s["batch_size"], status="failed",
                                         reason=m["error"])
        row.params_m, row.gflops, row.source = m["params_m"], m["gflops"], f"untrained {m['model']} on the target"
        item.row = row
        items.append(item)
    return items
