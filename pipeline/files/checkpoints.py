"""Checkpoints: written atomically, loaded only with ``torch.load(weights_only=True)``, and a file that cannot
be loaded is one line saying which case it is: not a checkpoint, corrupt, or refused because loading it
would import and call code (the global torch's safe unpickler names)."""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CakdError
from .fileio import atomic_path

ZIP_MAGIC, PICKLE_MAGIC = b"PK", b"\x80"


def save_checkpoint(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temp file + rename, so readers see the old file or the new one."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:  # torch's zip writer reports a failed write (ENOSPC, EIO) as RuntimeError
            raise CakdError(f"cannot write {path}: {write_failure(err, Path(path).parent)}") from None


def write_failure(err: Exception, folder: Path) -> str:
    """Why a library's write failed, in words: its own message is often an internal assertion
    ("unexpected pos 576 vs 534"), so the free space of the target is said too."""
    import shutil

    first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
    free = shutil.disk_usage(folder).free
    hint = "the disk is full" if free < (1 << 20) else f"{free:,} bytes free"
    return f"{hint} ({type(err).__name__}: {first[:200]})"


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> Any:
    path = Path(path)
    if not path.is_file():
        raise CakdError(f"{what} not found: {path}")
    problem = _not_loadable(path)
    if problem:
        raise CakdError(f"{what} {path} {problem}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or unsafe files
        raise CakdError(f"{what} {path} {_refusal(err)}") from None


def _not_loadable(path: Path) -> str | None:
    """What is wrong with the file before torch reads it; torch checks no CRCs, so a flipped byte in a
    tensor would load as wrong weights."""
    with open(path, "rb") as f:
        head = f.read(2)
    if not head:
        return "is not a checkpoint: an empty file"
    if head.startswith(PICKLE_MAGIC):
        return "is not a checkpoint: a plain pickle, not torch.save's zip format (cakd never unpickles those)"
    if head != ZIP_MAGIC:
        return "is not a checkpoint: neither torch.save's zip format nor a pickle"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"is corrupt: a truncated or damaged zip archive ({err})"
    return f"is corrupt: {bad} fails its CRC check" if bad else None


def _refusal(err: Exception) -> str:
    blocked = re.findall(r"GLOBAL ([\w.]+)", str(err))
    if blocked:
        names = list(dict.fromkeys(blocked))
        return f"was refused: loading it would import and call {', '.join(names)}, i.e. run code, not just read tensors"
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"is corrupt ({type(err).__name__}: {first[:200]})"
