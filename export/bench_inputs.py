"""What ``cakd bench-latency`` was given: ``[LABEL=]PATH`` items resolved into models with unique labels.

A PATH is a checkpoint (``.pt``), an ONNX file, or a folder ``cakd export`` wrote (its ``export.json``
names the checkpoint, the ONNX files and whether the INT8 one was rejected). Items that are the same
model (an export folder and the checkpoint it came from) merge into one; the same file given twice is
reported once, with a note; every other item is its own model, under a label no other model has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx
from cakd.export.runtimes import Artefact, is_quantized
from cakd.pipeline.errors import CakdError
from cakd.pipeline.fileio import file_hash, read_json

SUFFIXES = (".pt", ".pth", ".onnx")


@dataclass
class Model:
    """One model to benchmark: the files that hold it, by artefact kind, and how it was named."""

    label: str
    given: list[Path]
    files: dict[Artefact, Path] = field(default_factory=dict)
    int8_rejected: str | None = None  # export.json's reason, when its INT8 gate rejected the model
    int8_activations: str | None = None
    checkpoint_sha256: str | None = None


def parse_item(item: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` or ``PATH`` (a path that exists as written is never split at '=')."""
    if "=" in item and not Path(item).exists():
        label, path = item.split("=", 1)
        if not label:
            raise CakdError(f"'{item}': give LABEL=PATH with a non-empty label")
        return label, Path(path)
    return None, Path(item)


def onnx_slot(path: Path) -> Artefact:
    """The artefact kind of an ONNX file, judged by its content (not its name)."""
    if is_quantized(path):
        return "onnx-int8"
    graph = onnx.load(str(path), load_external_data=False).graph
    return "onnx-fp16" if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer) else "onnx"


def int8_activations(path: Path) -> str:
    """``uint8`` (asymmetric) or ``int8`` (symmetric): the zero-point type of the activations."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits and len(node.input) > 2:
            return "uint8" if inits[node.input[2]].data_type == onnx.TensorProto.UINT8 else "int8"
    return "int8"


def _from_folder(folder: Path, model: Model) -> None:
    report_path = folder / "export.json"
    if not report_path.is_file():
        raise CakdError(f"no export.json in {folder}: give the folder `cakd export` wrote, or model files")
    report = read_json(report_path, "export report")
    checkpoint = Path(report["checkpoint"])
    if checkpoint.is_file() and file_hash(checkpoint) == report["checkpoint_sha256"]:
        model.files["checkpoint"] = checkpoint
    model.checkpoint_sha256 = report["checkpoint_sha256"]
    onnx_info, int8 = report["onnx"], report.get("int8") or {}
    model.files["onnx"] = Path(onnx_info["path"])
    if onnx_info.get("fp16"):
        model.files["onnx-fp16"] = Path(onnx_info["fp16"]["path"])
    if int8.get("status") == "ok":
        model.files["onnx-int8"] = Path(int8["path"])
        model.int8_activations = int8["activations"]
    elif int8.get("status") == "rejected":
        model.int8_rejected = int8["reason"]
    missing = [str(p) for p in model.files.values() if not p.is_file()]
    if missing:
        raise CakdError(f"{report_path} names files that are gone: {', '.join(missing)} (re-run cakd export)")


def _resolve_one(path: Path) -> Model:
    model = Model(label="", given=[path])
    if path.is_dir():
        _from_folder(path, model)
    elif not path.is_file():
        raise CakdError(f"model file not found: {path}")
    elif path.suffix not in SUFFIXES:
        raise CakdError(f"cannot benchmark {path}: give .pt checkpoints, .onnx files or folders cakd export wrote")
    elif path.suffix == ".onnx":
        slot = onnx_slot(path)
        model.files[slot] = path
        if slot == "onnx-int8":
            model.int8_activations = int8_activations(path)
        report = path.parent / "export.json"
        if report.is_file():
            model.checkpoint_sha256 = read_json(report, "export report").get("checkpoint_sha256")
    else:
        model.files["checkpoint"] = path
        model.checkpoint_sha256 = file_hash(path)
    return model


def _same_model(a: Model, b: Model) -> bool:
    """Same checkpoint content, and not two different checkpoint files (copies stay two rows)."""
    mine, theirs = a.files.get("checkpoint"), b.files.get("checkpoint")
    return mine is None or theirs is None or mine.resolve() == theirs.resolve()


def _merge(into: Model, other: Model) -> None:
    for slot, path in other.files.items():
        if slot in into.files and into.files[slot].resolve() != path.resolve():
            raise CakdError(f"two {slot} files for one model: {into.files[slot]} and {path}")
        into.files[slot] = path
    into.given += other.given
    into.int8_rejected = into.int8_rejected or other.int8_rejected
    into.int8_activations = into.int8_activations or other.int8_activations


def _name_parts(path: Path) -> tuple[str, ...]:
    """``runs/a/fbt/model.pt`` -> (..., 'runs', 'a', 'fbt', 'model'); ``.int8``/``.fp16`` dropped."""
    stem = path.name if path.is_dir() else path.stem.removesuffix(".int8").removesuffix(".fp16")
    return (*path.resolve().parent.parts, stem)


def unique_labels(paths: list[Path], taken: set[str]) -> list[str]:
    """The shortest path suffix that tells each model apart from every other one (and from the labels
    a user gave)."""
    parts = [_name_parts(p) for p in paths]
    labels = []
    for i, mine in enumerate(parts):
        for k in range(1, len(mine) + 1):
            label = "/".join(mine[-k:])
            clash = any("/".join(o[-k:]) == label for j, o in enumerate(parts) if j != i)
            if not clash and label not in taken:
                break
        labels.append(label)
    return labels


def resolve(items: list[str]) -> tuple[list[Model], list[str]]:
    """Models in the order given, and notes on items reported once though given more than once."""
    if not items:
        raise CakdError("give at least one model (.pt checkpoint, .onnx file or export folder) to benchmark")
    models: list[Model] = []
    labels: list[str | None] = []
    notes: list[str] = []
    seen: dict[Path, int] = {}
    by_hash: dict[str, int] = {}
    for item in items:
        label, path = parse_item(item)
        if path.resolve() in seen:
            notes.append(f"{path} was given more than once: reported once")
            continue
        model = _resolve_one(path)
        index = by_hash.get(model.checkpoint_sha256) if model.checkpoint_sha256 else None
        if index is not None and _same_model(models[index], model):  # an export of a given checkpoint
            _merge(models[index], model)
            labels[index] = labels[index] or label
        else:
            index = len(models)
            models.append(model)
            labels.append(label)
            if model.checkpoint_sha256:
                by_hash[model.checkpoint_sha256] = index
        seen[path.resolve()] = index
    given = [label for label in labels if label]
    if len(set(given)) < len(given):
        raise CakdError(f"the label '{next(x for x in given if given.count(x) > 1)}' names two models")
    auto = iter(unique_labels([m.given[0] for m, lb in zip(models, labels, strict=True) if not lb], set(given)))
    for model, label in zip(models, labels, strict=True):
        model.label = label or next(auto)
    return models, notes
