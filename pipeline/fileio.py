"""Atomic writes: a crash never leaves a half-written artefact where a later stage would read it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cakd.pipeline.errors import CakdError

TEMP_MARK = ".cakd-tmp-"  # every temporary file or folder cakd makes next to an output carries this mark


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_MARK}{path.name}.", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the artefact the usual umask permissions
            tmp_path.chmod(_umask_mode(0o666))
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name next to ``path`` and swap it in whole when the block succeeds:
    until then the previous folder stays exactly as it was; a failure leaves it and removes the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_MARK}{path.name}.", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(_umask_mode(0o777))
        if path.exists():
            old = tmp.with_name(f"{TEMP_MARK}{path.name}.old")
            os.replace(path, old)  # two renames: a kill between them leaves .old, which clean_stale restores
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_stale(path: str | Path) -> None:
    """Remove what a killed ``atomic_dir`` / ``atomic_path`` left next to ``path``; if the kill fell between
    the two renames of a swap, put the previous folder back first."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    old = path.with_name(f"{TEMP_MARK}{path.name}.old")
    if old.is_dir() and not path.exists():
        os.replace(old, path)
    for stale in path.parent.glob(f"{TEMP_MARK}{path.name}.*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise CakdError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CakdError(f"{what} {path} is not valid JSON: {err}") from None


def remove_outputs(paths: list[Path]) -> None:
    """Delete stale outputs before a stage starts, so a failure cannot leave old files looking fresh."""
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes: names the exact checkpoint or weights a run started from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
