"""Atomic writes: a crash never leaves a half-written artefact where a later stage would read it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import CakdError

# Files cakd wrote and reads back (reports, export.json, the data manifest) are input like any other: read
# through ``read_json`` under these bounds. Reports are a few KB (a bench of 100 models: ~1 MB); a manifest
# lists every selected image (ImageNet's 1.3 M files: ~60 MB).
MAX_REPORT_BYTES = 16 << 20
MAX_MANIFEST_BYTES = 256 << 20
MAX_JSON_DEPTH = 64  # nesting levels (cakd's reports use 5)
TEMP_MARK = ".cakd-tmp-"  # every temporary file or folder cakd makes next to an output carries this mark


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _temp_prefix(path: Path) -> str:
    """Temporary names next to ``path`` carry the writer's process id, so a later run removes only what a dead
    process left (a second writer of the same output at the same time keeps its own files)."""
    return f"{TEMP_MARK}{path.name}.{os.getpid()}."


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the artefact the usual umask permissions
            tmp_path.chmod(_umask_mode(0o666))
        os.replace(tmp_path, path)
    except OSError as err:
        if err.filename is None:  # a failed write names no file: name the output it was for
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name next to ``path`` and swap it in whole when the block succeeds:
    until then the previous folder stays exactly as it was; a failure leaves it and removes the new one."""
    path = Path(path)
    check_out_dir(path, "output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        tmp.chmod(_umask_mode(0o777))
        if path.exists():
            old = Path(f"{tmp}.old")
            os.replace(path, old)  # two renames: a kill between them leaves .old, which clean_stale restores
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_stale(path: str | Path) -> None:
    """Remove what a killed ``atomic_dir`` / ``atomic_path`` / ``temp_beside`` left next to ``path``; if the kill
    fell between the two renames of a swap, put the previous folder back first. Files of a live writer stay."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    stale = [p for p in path.parent.glob(f"{TEMP_MARK}{path.name}.*") if not _writer_alive(p, path)]
    for old in stale:
        if old.name.endswith(".old") and old.is_dir() and not path.exists():
            os.replace(old, path)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _writer_alive(temp: Path, path: Path) -> bool:
    """Whether the process named in a temporary name still runs (names without a process id: never)."""
    pid = temp.name[len(f"{TEMP_MARK}{path.name}."):].split(".", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def read_regular(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, else one line: a device, FIFO or socket behind a
    user's path (``/dev/zero`` named ``zero.png``) would otherwise be read forever or hang the open.

    The file is opened without blocking (a FIFO's open returns at once) and checked on the open descriptor,
    so a file swapped after a check is still the one judged."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CakdError(f"{what} not found: {path}") from None
    try:  # judged before a file object exists: fdopen on a folder raised EISDIR naming the descriptor ("3")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CakdError(f"{what} {path} is not a regular file ({_kind(info.st_mode)}): refused")
        if info.st_size > limit:
            raise CakdError(f"{what} {path} is {info.st_size:,} bytes, more than the {limit:,} allowed")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # the file may have grown since fstat
    finally:
        os.close(fd)
    if len(data) > limit:
        raise CakdError(f"{what} {path} is more than the {limit:,} bytes allowed")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def check_out_dir(path: str | Path, what: str = "--out") -> None:
    """Fail in one line, before any work, when an output folder cannot be a folder: ``path`` or one of its
    parents is an existing file (ENOTDIR / EEXIST deep in a stage otherwise, after minutes of work)."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == path else f"is inside {p}, which is a file"
                raise CakdError(f"{what} {path} {where}, not a folder")
            return


@contextmanager
def temp_beside(path: str | Path, python_temp: bool = False) -> Iterator[Path]:
    """A new folder next to the output ``path`` for the block, under a name ``clean_stale(path)`` removes on the
    next run if a kill leaves it. With ``python_temp``, Python's temporary folder (``tempfile``) points there
    too: onnxruntime's quantisation writes its models through it, and a kill left them in the system's folder.
    Only for blocks that start no process pool: multiprocessing puts its sockets under that folder, and a deep
    one exceeds the 108-byte limit of a socket path."""
    path = Path(path).absolute()  # libraries may change directory while they work
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(path)}work.", dir=path.parent))
    previous = tempfile.tempdir
    if python_temp:
        tempfile.tempdir = str(work)
    try:
        yield work
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(work, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str = "file", limit: int = MAX_REPORT_BYTES) -> Any:
    """The JSON value of a regular file of at most ``limit`` bytes, nested at most ``MAX_JSON_DEPTH`` levels:
    every file cakd reads back goes through here, as params.yaml goes through its bounded loader (a 1 GB
    report was read whole before it was found not to be JSON)."""
    path = Path(path)
    data = read_regular(path, limit, what)
    try:
        value = json.loads(data.decode("utf-8"))
        deep = _deeper_than(value, MAX_JSON_DEPTH)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CakdError(f"{what} {path} is not valid JSON: {bounded(str(err))}") from None
    except RecursionError:  # json's parser recurses: ~1000 levels end it before the walk below could
        deep = True
    if deep:
        raise CakdError(f"{what} {path} is not usable JSON: nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return value


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether lists and objects nest more than ``depth`` levels (walked without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, level = stack.pop()
        if level > depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return False


def bounded(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters of a value quoted in a message: a hostile value must not make the
    message itself huge."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


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
