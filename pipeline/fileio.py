"""Atomic writes: a crash never leaves a half-written artefact where a later stage would read it."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from cakd.pipeline.errors import CakdError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the artefact the usual umask permissions
            umask = os.umask(0)
            os.umask(umask)
            tmp_path.chmod(0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
    except json.JSONDecodeError as err:
        raise CakdError(f"{what} {path} is not valid JSON: {err}") from None


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temp file + rename, so readers see the old file or the new one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, what: str = "checkpoint") -> Any:
    """Load a checkpoint safely (``weights_only=True``); a missing, damaged, foreign or code-running file
    ends in one line saying which of these it is."""
    path = Path(path)
    if not path.is_file():
        raise CakdError(f"{what} not found: {path}")
    damaged = _zip_damage(path)
    if damaged:
        raise CakdError(f"{what} {path} is corrupt: {damaged}")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning is noise before our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign / unsafe files
        raise CakdError(f"{what} {path} {_why_unreadable(path, err)}") from None


def _zip_damage(path: Path) -> str | None:
    """torch.load does not check the CRCs of its zip format: a flipped byte would load as wrong weights."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"damaged zip archive ({err})"
    return f"{bad} fails its CRC check" if bad else None


def _why_unreadable(path: Path, err: Exception) -> str:
    """Tell apart: not a checkpoint at all, a damaged one, and one refused because loading would run code."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head.startswith(b"PK"):  # torch.save's zip format
        try:
            with zipfile.ZipFile(path) as archive:
                pickles = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.pkl"]
                data = archive.read(pickles[0]) if pickles else None
        except (zipfile.BadZipFile, OSError, EOFError):
            return "is corrupt: a truncated or damaged zip archive"
        if data is None:
            return "is not a checkpoint: a zip archive without data.pkl"
    elif head[:1] == b"\x80":  # a pickle (torch's legacy format, or plain pickle.dump)
        data = path.read_bytes()
    else:
        empty = "" if head else " (empty file)"
        return f"is not a checkpoint: neither torch.save's zip format nor a pickle{empty}"
    names = _pickle_globals(data)
    if names is None:
        return "is corrupt: its data.pkl is damaged" if head == b"PK" else "is not a checkpoint: not a valid pickle"
    if isinstance(err, pickle.UnpicklingError):  # torch's safe unpickler refused it: say what it would call
        blocked = re.findall(r"GLOBAL ([\w.]+)", str(err)) or [
            n for n in names if n.split(".")[0] not in ("torch", "collections")]
        if not blocked:
            return "is not a checkpoint: a pickle that torch's safe loader cannot read"
        blocked = list(dict.fromkeys(blocked))
        more = f" and {len(blocked) - 3} more" if len(blocked) > 3 else ""
        return (f"was refused: loading it would import and call {', '.join(blocked[:3])}{more}, i.e. run code, "
                "not just read tensors")
    return f"is corrupt ({type(err).__name__}: {str(err).strip().splitlines()[0]})"


def _pickle_globals(data: bytes) -> list[str] | None:
    """The ``module.name`` globals a pickle would import (without running it), or None if it is not valid."""
    found, memo, last = [], {}, None
    recent: list[str | None] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                found.append(".".join(str(s) for s in recent[-2:]))
            elif op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if op.name == "MEMOIZE" else arg] = last
                continue
            last = arg if isinstance(arg, str) and "UNICODE" in op.name else None
            if op.name in ("GET", "BINGET", "LONG_BINGET"):
                last = memo.get(arg)
            recent.append(last)
    except ValueError:  # pickletools reports every malformed opcode or argument as ValueError
        return None
    return found


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temp name and swap it in whole at the end (old one removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_outputs(paths: list[Path], keep: Callable[[Path], bool] | None = None) -> None:
    """Delete stale outputs before a stage starts, so a failure cannot leave old files looking fresh."""
    for p in paths:
        if keep is not None and keep(p):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (short): ties a run to the exact checkpoint it started from."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
