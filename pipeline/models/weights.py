"""Weights a user already has: a local timm / Hugging Face file or folder, or timm's hub weights.

The file is read by timm (``timm.models.load_state_dict``: safetensors, pth or bin, a bare state dict
or one under ``state_dict`` / ``model`` / ``state_dict_ema``, DDP prefixes stripped), passed through the
architecture's own ``checkpoint_filter_fn`` (timm's conversion of original checkpoints, position-embedding
and patch-embedding resampling) and loaded into the freshly built timm model before cakd splits it. Tensors
whose shape differs (a 1,000-class ImageNet head on a 10-class task, a 7x7 stem on a CIFAR stem) are left
out and stay newly initialised; which ones is said in one line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import timm
from torch import nn

from ..errors import CakdError
from ..files.fileio import bounded

# What a Hugging Face model folder (or a timm hub repo) holds, in timm's order of preference.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
SHOWN_KEYS = 6  # a report names this many keys per list, then counts the rest
BN_COUNTER = "num_batches_tracked"
# Share of a model's parameter tensors a weights file must fill (names and shapes): a replaced head and stem
# leave out a few percent, a file of another architecture fits almost none.
MIN_MATCHED = 0.5  # BatchNorm's step counter: not a weight, never worth a mention


@dataclass
class WeightsLoad:
    """One weights file going into a new model, and what became of its tensors (filled while building)."""

    file: Path
    loaded: dict[int, str] = field(default_factory=dict)  # id(parameter or buffer) -> its key in the file
    left_out: list[str] = field(default_factory=list)  # keys of the file that were not loaded

    def report(self, model: nn.Module) -> str:
        """One line: how many tensors came from the file, which were left out, which are new.

        Left out are the file's tensors that did not fit, and those that fitted a part the builder then
        replaced (a CIFAR stem instead of timm's); new is every tensor of ``model`` not from the file.
        """
        tensors = list(chain(model.named_parameters(), model.named_buffers()))
        kept = {id(t) for _, t in tensors}
        dropped = [key for ident, key in self.loaded.items() if ident not in kept]
        left_out = sorted(k for k in self.left_out + dropped if not k.endswith(BN_COUNTER))
        new = [name for name, t in tensors if id(t) not in self.loaded and not name.endswith(BN_COUNTER)]
        return (f"weights {self.file}: {len(self.loaded) - len(dropped)} tensors loaded; "
                f"left out: {_some(left_out)}; new: {_some(new)}")


def _some(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def resolve_weights_file(path: str | Path) -> Path:
    """The weights file itself, or the one a Hugging Face / timm model folder holds."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise CakdError(f"weights not found: {path}")
    for name in HF_WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if len(found) != 1:
        raise CakdError(f"weights folder {path} holds {len(found)} weight files ({', '.join(WEIGHT_SUFFIXES)}); "
                        f"point 'weights' at one of them")
    return found[0]


def hub_weights_file(name: str) -> Path:
    """timm's default hub weights for ``name``, from the local Hugging Face cache when offline."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        raise CakdError(f"timm has no Hugging Face hub weights for '{name}'; point 'weights' at a local file")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    for filename in HF_WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo, filename))
        except RemoteEntryNotFoundError:
            continue  # the repo has the other format
        except LocalEntryNotFoundError:
            if offline:
                continue  # maybe the cache holds the other format
            raise CakdError(f"pretrained weights for '{name}' ({repo}) could not be fetched from the Hugging Face "
                            f"hub and are not in its local cache; set pretrained: false or point 'weights' at "
                            f"a local file") from None
        except OSError as err:
            raise CakdError(f"pretrained weights for '{name}' ({repo}) could not be fetched: "
                            f"{type(err).__name__}") from None
    where = "in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "on the hub"
    raise CakdError(f"pretrained weights for '{name}' ({repo}) are not {where}; download them once with "
                    f"network, or point 'weights' at a local file")


def _check_match(net: nn.Module, fits: dict, state: dict, file: Path) -> None:
    """Weights must be the architecture's: at least ``MIN_MATCHED`` of its parameter tensors loaded with their
    shapes. Sharing a tensor is not enough (a MobileNetV2 file shares only ``bn1.num_batches_tracked`` with a
    ResNet and would pass as "loaded" with every weight new)."""
    names = [name for name, _ in net.named_parameters()]
    matched = sum(name in fits for name in names)
    if matched < MIN_MATCHED * len(names):
        raise CakdError(f"weights {file} fit only {matched} of the {len(names)} parameter tensors of "
                        f"{type(net).__name__} ({100 * matched / max(len(names), 1):.0f}%; at least "
                        f"{100 * MIN_MATCHED:.0f}% must load with matching names and shapes): is it the right "
                        f"architecture? (its first keys: {bounded(', '.join(list(state)[:3]))})")


def load_into(net: nn.Module, load: WeightsLoad) -> None:
    """Load the file into a timm model: what fits by name and shape, through timm's own filter."""
    try:
        state = timm.models.load_state_dict(str(load.file))
    except Exception as err:  # safetensors / torch raise many types for foreign or truncated files
        raise CakdError(f"weights {load.file} cannot be read ({type(err).__name__}: {bounded(str(err))})") from None
    converter = getattr(sys.modules[type(net).__module__], "checkpoint_filter_fn", None)
    if converter is not None:
        try:
            state = converter(state, net)
        except Exception as err:  # a foreign checkpoint can trip any of timm's per-family conversions
            raise CakdError(f"weights {load.file} do not convert to {type(net).__name__}: "
                            f"{bounded(str(err))}") from None
    own = dict(chain(net.named_parameters(), net.named_buffers()))
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    _check_match(net, fits, state, load.file)
    net.load_state_dict(fits, strict=False)
    load.left_out = [k for k in state if k not in fits]
    load.loaded = {id(own[k]): k for k in fits}

