"""Rewriting params.yaml's ``students:`` section in place: the rest of the file (comments, order, spacing) stays
byte for byte, and the result is checked to parse to the same params with only the students changed before it
replaces the file (atomically).

DVC's ``foreach: ${students}`` reads the students when dvc.yaml is parsed, so writing them here is what makes
the next ``dvc repro`` / ``dvc exp run`` run exactly these students' stages.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ..errors import CakdError
from ..files.fileio import atomic_path
from .loading import load_params, read_params_text
from .params import KnownNames, Params
from .safeyaml import load_yaml

TOP_LEVEL = re.compile(r"^[^\s#]")  # a line that starts a new top-level key (or a document marker)
STUDENTS = re.compile(r"^students\s*:(?P<rest>.*)$")


def _flow(value: object) -> str:
    """A YAML value on one line (``{embed_dim: 96, depth: 4}``, ``null``); inside a one-item list, because a bare
    scalar is dumped as a document of its own (with its ``...`` end marker)."""
    return yaml.safe_dump([value], default_flow_style=True, width=float("inf"), sort_keys=False).strip()[1:-1]


def students_block(header: str, students: dict[str, dict], notes: dict[str, str]) -> list[str]:
    """The section's lines, in params.yaml's own layout: one key per line, kwargs on one line."""
    lines = [header]
    for name, entry in students.items():
        note = f"  # {notes[name]}" if notes.get(name) else ""
        lines.append(f"  {name}:{note}\n")
        lines += [f"    {key}: {_flow(entry.get(key, default))}\n"
                  for key, default in (("model", None), ("pretrained", False), ("weights", None),
                                       ("checkpoint", None), ("kwargs", {}))]
    return lines


def _block_span(lines: list[str], path: Path) -> tuple[int, int]:
    """[start, end) of the ``students:`` section, without the blank lines and comments that lead into the next."""
    starts = [i for i, line in enumerate(lines) if STUDENTS.match(line)]
    if len(starts) != 1:
        raise CakdError(f"{path}: found {len(starts)} top-level 'students:' keys, expected one; edit it by hand")
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if TOP_LEVEL.match(lines[i])), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return start, end


def replace_students(path: Path, students: dict[str, dict], notes: dict[str, str] | None = None,
                     known: KnownNames | None = None) -> Params:
    """Write ``students`` (NAME -> {model, kwargs, ...}) as params.yaml's students, keeping the rest of the file;
    one line, and the file untouched, if the result would not be the same params with only the students changed
    or would not validate."""
    text = read_params_text(path)  # bounded like every read of params.yaml (the file may have changed)
    before = load_yaml(text)  # the bounded loader params.yaml is read with
    lines = text.splitlines(keepends=True)
    start, end = _block_span(lines, path)
    rest = STUDENTS.match(lines[start].rstrip("\n")).group("rest")
    comment = rest if rest.strip().startswith("#") else ""  # a flow-style `students: {...}` line is replaced whole
    header = f"students:{comment}\n"
    new_lines = lines[:start] + students_block(header, students, notes or {}) + lines[end:]
    new_text = "".join(new_lines)
    after = load_yaml(new_text)
    expected = {**before, "students": {name: {"model": e["model"], "pretrained": e.get("pretrained", False),
                                              "weights": e.get("weights"), "checkpoint": e.get("checkpoint"),
                                              "kwargs": e.get("kwargs", {})} for name, e in students.items()}}
    if after != expected:
        raise CakdError(f"{path}: rewriting its students: section in place would change other keys; "
                        "edit it by hand")
    with atomic_path(path) as tmp:
        tmp.write_text(new_text)
        try:
            params = load_params(tmp, [], known)  # invalid params never replace the file
        except CakdError as err:
            raise CakdError(f"{path} left as it was: with these students it would be invalid "
                            f"({str(err).split(': ', 1)[-1]})") from None
    return params
