"""Reading a params file: bounded and strict YAML, ``-S`` overrides, then the schema; every problem is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import CakdError
from ..files.fileio import bounded, read_regular
from .overrides import apply_override, override_at
from .params import KnownNames, Params, validation_line
from .safeyaml import load_yaml

MAX_PARAMS_BYTES = 1 << 20  # params.yaml is ~10 KB; a larger file is a mistake (or a bomb)


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None,
                known: KnownNames | None = None) -> Params:
    """The validated params; ``known`` holds the names the owners accept (see ``KnownNames``)."""
    path = Path(path)
    tree = read_params_file(path)
    if not isinstance(tree, dict):
        raise CakdError(f"params file {path} must be a mapping of sections")
    for assignment in overrides or []:
        apply_override(tree, assignment)
    try:
        params = Params.model_validate(tree, context=known)
    except ValidationError as err:
        culprit = override_at(overrides or [], err.errors()[0]["loc"])
        where = f"override -S {bounded(culprit)}" if culprit else f"params in {path}"
        raise CakdError(f"invalid {where}: {validation_line(err)}") from None
    return params


def read_params_file(path: Path) -> Any:
    """The YAML value of a params file: a regular UTF-8 file of at most ``MAX_PARAMS_BYTES``, read by the
    bounded loader (no duplicate keys, no alias bombs, no deep nesting); anything else is one line."""
    text = read_params_text(path)
    try:
        return load_yaml(text) or {}
    except yaml.YAMLError as err:
        raise CakdError(f"params file {path} is not valid YAML: {bounded(str(err).splitlines()[0])}") from None
    except CakdError as err:
        raise CakdError(f"params file {path}: {err}") from None


def read_params_text(path: Path) -> str:
    """The text of a params file: a regular UTF-8 file of at most ``MAX_PARAMS_BYTES``, else one line."""
    data = read_regular(path, MAX_PARAMS_BYTES, "params file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CakdError(f"params file {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                        f"{err.start})") from None
