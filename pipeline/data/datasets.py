"""The two dataset shapes every source ends up in: uint8 tensors in memory, or image files read per item."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import CakdError
from ..files.fileio import read_regular

# An image costs at most this much to read and decode, whatever the file claims: a 140 KB PNG of 12000x12000
# decodes to 432 MB (PIL only warns below 179 M pixels), a symlink to /dev/zero reads forever.
MAX_IMAGE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 40_000_000  # 40 megapixels (e.g. 7300x5500): 120 MB as RGB


def read_image(path: Path) -> tuple[Image.Image, bytes]:
    """Decode the whole file, not just its header, so a truncated image fails here with its name.

    Only a regular file of at most ``MAX_IMAGE_BYTES`` is read, and only an image of at most
    ``MAX_IMAGE_PIXELS`` (its header's size) is decoded. Returns the RGB image and the raw bytes
    (``prepare`` hashes them).
    """
    try:
        data = read_regular(path, MAX_IMAGE_BYTES, "corrupt or unreadable image")
    except OSError as err:  # unreadable (permissions, I/O error): the file's problem, skippable like corruption
        raise CakdError(f"corrupt or unreadable image {path} ({err.strerror or type(err).__name__})") from None
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the check below says it, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise CakdError(f"corrupt or unreadable image {path}: {width}x{height} pixels, more than the "
                                f"{MAX_IMAGE_PIXELS:,} allowed")
            return eight_bit(img).convert("RGB"), data
    except UnidentifiedImageError:  # its own text would name the in-memory buffer, not the file
        raise CakdError(f"corrupt or unreadable image {path} (not an image format PIL recognises)") from None
    except CakdError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise CakdError(f"corrupt or unreadable image {path} ({reason[:200]})") from None


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (PNG, TIFF) scaled to 8 bits: PIL's ``convert("RGB")`` clips every value above
    255, so all but the darkest 0.4% of its range became white."""
    if img.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return img
    values = np.asarray(img, dtype=np.int64)
    return Image.fromarray(np.clip(values >> 8, 0, 255).astype(np.uint8), "L")


class TensorImageDataset(Dataset):
    """Images held as one uint8 ``NxCxHxW`` tensor: an item costs only its transforms, no decoding."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable, presized: bool = False
                 ) -> None:
        self.images = images
        self.targets = labels.tolist()
        self.transform = transform
        self.presized = presized  # already at the training size: an item is a crop and a flip, no resize

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), self.targets[index]


class ImageFileDataset(Dataset):
    """The files ``prepare`` selected (paths relative to ``root``); a file broken since then names itself."""

    def __init__(self, root: Path, files: list[tuple[str, int]], transform: Callable) -> None:
        self.root = root
        self.paths = [rel for rel, _ in files]
        self.targets = [int(label) for _, label in files]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = read_image(self.root / self.paths[index])
        return self.transform(pil_to_tensor(image)), self.targets[index]
