"""``-S key.path=value`` overrides (as in ``dvc exp run -S``), applied to the params tree before validation."""

from __future__ import annotations

import yaml

from ..errors import CakdError
from ..files.fileio import bounded
from .safeyaml import load_yaml


def apply_override(tree: dict, assignment: str) -> None:
    """Apply one ``key.path=value`` (as in ``dvc exp run -S``); the value is parsed as YAML."""
    if "=" not in assignment:
        raise CakdError(f"override '{bounded(assignment)}' must look like key.path=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise CakdError(f"override '{bounded(assignment)}' has an empty key")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    except CakdError as err:
        raise CakdError(f"override -S {bounded(assignment, 80)}: {err}") from None
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise CakdError(f"override '{bounded(assignment)}': '{bounded(part)}' is not a section")
        node = child
    node[parts[-1]] = value


def override_at(overrides: list[str], loc: tuple) -> str | None:
    """The last ``-S`` override that set the failing key, or a key inside/above it: the error is there,
    not in the file."""
    failing = [str(part) for part in loc]
    for assignment in reversed(overrides):
        key = assignment.split("=", 1)[0].strip().split(".")
        if key[:len(failing)] == failing or failing[:len(key)] == key:
            return assignment
    return None
