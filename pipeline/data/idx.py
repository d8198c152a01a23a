"""MNIST-family IDX files as a user has them: gzip, bzip2, xz or plain, checked by content, not by archive MD5.

torchvision accepts only its own archives (by MD5) or files unpacked under exact names; a re-compressed copy
(e.g. Debian's ``dataset-fashion-mnist``) holds the same images but fails that check. Here the header, shape,
size and label range are checked instead, and each problem is named in one line.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CakdError
from ..files.fileio import read_regular

# Compression by its magic bytes, whatever the file is called; each makes a fresh streaming decompressor.
DECOMPRESSORS: dict[bytes, tuple[str, Callable[[], Any]]] = {
    b"\x1f\x8b": ("gzip", lambda: zlib.decompressobj(wbits=31)),
    b"BZh": ("bzip2", bz2.BZ2Decompressor),
    b"\xfd7zXZ\x00": ("xz", lzma.LZMADecompressor),
}
# Fashion-MNIST's largest file is 47 MB unpacked: a few MB of gzip that unpack to gigabytes are refused as
# they unpack, not after.
MAX_IDX_BYTES = 256 << 20
SUFFIXES = ("", ".gz", ".bz2", ".xz")
UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST-family sets use


def find_idx(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` (``stem``, ``stem.gz``, ``stem.bz2`` or ``stem.xz``), plain first."""
    return next((folder / f"{stem}{s}" for s in SUFFIXES if (folder / f"{stem}{s}").is_file()), None)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, unpacked if compressed; at most ``MAX_IDX_BYTES`` either way (a regular file only)."""
    data = read_regular(path, MAX_IDX_BYTES, "IDX file")
    for magic, (kind, decompressor) in DECOMPRESSORS.items():
        if data.startswith(magic):
            return _unpack(path, data, kind, decompressor)
    return data


def _unpack(path: Path, data: bytes, kind: str, decompressor: Callable[[], Any]) -> bytes:
    """Every concatenated member (``cat a.gz b.gz`` is one valid file), stopped as soon as the output would pass
    ``MAX_IDX_BYTES``."""
    out, rest = bytearray(), data
    while rest:
        unpacker = decompressor()
        try:
            out += unpacker.decompress(rest, MAX_IDX_BYTES + 1 - len(out))
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as err:
            raise CakdError(f"{path}: damaged {kind} data ({err})") from None
        if len(out) > MAX_IDX_BYTES:
            raise CakdError(f"{path} unpacks to more than {MAX_IDX_BYTES:,} bytes: not an MNIST-family file")
        if not unpacker.eof:
            raise CakdError(f"{path}: damaged {kind} data (it ends before the compressed stream does)")
        rest = unpacker.unused_data
    return bytes(out)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes with ``ndim`` dimensions; wrong magic, type or size is an error."""
    data = read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise CakdError(f"{path} is not an IDX file (it starts with {data[:4].hex() or 'nothing'}, "
                        f"expected 000008{ndim:02x})")
    if (data[2], data[3]) != (UBYTE, ndim):
        raise CakdError(f"{path} is an IDX file of type 0x{data[2]:02x} with {data[3]} dimensions, expected "
                        f"unsigned bytes (0x08) with {ndim}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        state = "is truncated" if len(data) - header < expected else "has trailing bytes"
        raise CakdError(f"{path} {state}: its header announces {'x'.join(map(str, shape))} = {expected} bytes "
                        f"of data, it holds {max(len(data) - header, 0)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_split(folder: Path, images_stem: str, labels_stem: str, size: int, num_classes: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (``Nx1xHxW`` uint8) and labels (int64) of one split, checked against each other."""
    paths = {stem: find_idx(folder, stem) for stem in (images_stem, labels_stem)}
    missing = [stem for stem, path in paths.items() if path is None]
    if missing:
        raise CakdError(f"{folder}: missing {', '.join(missing)} (plain, .gz, .bz2 or .xz)")
    images, labels = read_idx(paths[images_stem], 3), read_idx(paths[labels_stem], 1)
    if images.shape[1:] != (size, size):
        raise CakdError(f"{paths[images_stem]} holds {images.shape[1]}x{images.shape[2]} images, "
                        f"expected {size}x{size}")
    if len(images) != len(labels):
        raise CakdError(f"{paths[images_stem]} holds {len(images)} images but {paths[labels_stem]} "
                        f"{len(labels)} labels")
    if len(labels) and labels.max() >= num_classes:
        raise CakdError(f"{paths[labels_stem]} has label {labels.max()}; the set has {num_classes} classes")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
