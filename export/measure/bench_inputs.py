"""What ``cakd bench-latency`` was given: ``[LABEL=]PATH`` items resolved into models with unique labels.

A PATH is a folder ``cakd export`` wrote (its ``export.json`` lists the artefacts that passed their gates and
why others are missing), a checkpoint (``.pt``) or an ONNX file. The bench stage exports checkpoints and FP32
ONNX files through ``cakd export``'s own function first; an INT8 or FP16 ONNX file is timed as it is. An
export folder and the checkpoint it came from are one model; the same file given twice is reported once,
with a note; every other item is its own model, under a label no other model has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import bounded, file_sha256, read_json
from ..exported import REPORT

SUFFIXES = (".pt", ".pth", ".onnx")
Kind = Literal["export", "checkpoint", "onnx"]


@dataclass(frozen=True)
class Item:
    """One model to benchmark: where it is, what kind of path that is, and how it is named."""

    label: str
    path: Path
    kind: Kind
    given: tuple[Path, ...]
    checkpoint_sha256: str | None = None


def parse_item(item: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` or ``PATH`` (a path that exists as written is never split at '=')."""
    if "=" in item and not Path(item).exists():
        label, path = item.split("=", 1)
        if not label:
            raise CakdError(f"'{item}': give LABEL=PATH with a non-empty label")
        if not label.isprintable():  # a newline split the table's rows and named a folder under OUT/exports
            raise CakdError(f"label {bounded(repr(label))}: a label is printable text (no newline or control "
                            "character)")
        return label, Path(path)
    return None, Path(item)


def folder_name(label: str) -> str:
    """The folder under ``OUT/exports`` a label's export goes to: one plain name whatever the label says
    (``runs/a`` has a slash, ``..`` would name OUT itself)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", label)
    return name if name.strip(".") else f"_{name}"


def _classify(path: Path) -> tuple[Kind, str | None]:
    """The kind of path and the content hash of the checkpoint behind it, if any."""
    if path.is_dir():
        report = read_json(path / REPORT, "export report") if (path / REPORT).is_file() else None
        if report is None:
            raise CakdError(f"no {REPORT} in {path}: give the folder `cakd export` wrote, or model files")
        return "export", report.get("checkpoint_sha256") if isinstance(report, dict) else None
    if not path.is_file():
        raise CakdError(f"model file not found: {path}")
    if path.suffix not in SUFFIXES:
        raise CakdError(f"cannot benchmark {path}: give .pt checkpoints, .onnx files or folders cakd export wrote")
    if path.suffix == ".onnx":
        return "onnx", None
    return "checkpoint", file_sha256(path)


def _name_parts(path: Path) -> tuple[str, ...]:
    """``runs/a/fbt/model.pt`` -> (..., 'runs', 'a', 'fbt', 'model'); ``.int8``/``.fp16`` dropped."""
    stem = path.name if path.is_dir() else path.stem.removesuffix(".int8").removesuffix(".fp16")
    return (*path.resolve().parent.parts, stem)


def unique_labels(paths: list[Path], taken: set[str]) -> list[str]:
    """The shortest path suffix that tells each model apart from every other one (and from the labels a
    user gave)."""
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


def resolve(items: list[str]) -> tuple[list[Item], list[str]]:
    """Models in the order given (an export folder standing for its checkpoint), and notes on items reported
    once though given more than once."""
    if not items:
        raise CakdError("give at least one model (.pt checkpoint, .onnx file or export folder) to benchmark")
    found: list[tuple[str | None, Path, Kind, str | None, list[Path]]] = []
    notes: list[str] = []
    seen: set[Path] = set()
    for item in items:
        label, path = parse_item(item)
        if path.resolve() in seen:
            notes.append(f"{path} was given more than once: reported once")
            continue
        seen.add(path.resolve())
        kind, digest = _classify(path)
        same = next((f for f in found if digest and f[3] == digest and "checkpoint" in (kind, f[2])), None)
        if same is None:
            found.append((label, path, kind, digest, [path]))
            continue
        index = found.index(same)  # an export folder and the checkpoint it came from: keep the folder
        keep = same if same[2] == "export" else (label or same[0], path, kind, digest, same[4])
        found[index] = (same[0] or label, keep[1], keep[2], digest, [*same[4], path])
    given = [f[0] for f in found if f[0]]
    if len(set(given)) < len(given):
        raise CakdError(f"the label '{next(x for x in given if given.count(x) > 1)}' names two models")
    auto = iter(unique_labels([f[4][0] for f in found if not f[0]], set(given)))
    return [Item(label or next(auto), path, kind, tuple(paths), digest)
            for label, path, kind, digest, paths in found], notes
