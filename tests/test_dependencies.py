"""Every third-party module the product imports comes from a distribution pyproject.toml declares.

A module installed by hand on the CI machine once hid a missing dependency (onnxscript, which
``torch.onnx.export(dynamo=True)`` imports lazily): this checks both the import statements under
pipeline/ and export/ and the modules a real ONNX export loads at run time.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, declared in the test extra
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "export")
# A tiny model's ONNX export with onnxruntime parity; prints, for each third-party module it loaded, the
# top-level package whose folder holds its file (some libraries put their own folders on sys.path).
EXPORT_SCRIPT = """
import json, sys
from pathlib import Path
before, roots = set(sys.modules), [Path(p).resolve() for p in sys.path if p and Path(p).is_dir()]
import torch
from torch import nn
from cakd.export.make.onnx_export import export_fp32
model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
export_fp32(model, Path(sys.argv[1]), img_size=8, in_chans=3, opset=18, parity_images=torch.rand(2, 3, 8, 8), atol=1e-4)
owners = set()
for name in set(sys.modules) - before:
    file = getattr(sys.modules[name], "__file__", None)
    if file is None:  # built into the interpreter or into an extension module
        continue
    path = Path(file).resolve()
    root = max((r for r in roots if path.is_relative_to(r)), key=lambda r: len(r.parts), default=None)
    if root is not None:
        owners.add(path.relative_to(root).parts[0].split(".")[0])
print(json.dumps(sorted(owners)))
"""


def declared_requirements() -> list[Requirement]:
    """Core dependencies and every extra, as written in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [req for reqs in project.get("optional-dependencies", {}).values() for req in reqs]
    return [Requirement(req) for req in project["dependencies"] + extras]


def requirement_closure(roots: list[Requirement]) -> set[str]:
    """The declared distributions plus everything they require (with their requested extras) on this Python."""
    seen: set[str] = set()
    todo = [(req, "") for req in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for wanted in {""} | req.extras:
            key = f"{name}[{wanted}]"
            if key in seen:
                continue
            seen.add(key)
            try:
                todo += [(Requirement(r), wanted) for r in md.requires(name) or []]
            except md.PackageNotFoundError:  # a declared extra not installed here (tensorrt): no children
                pass
    return {key.split("[")[0] for key in seen}


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m != "cakd" and not m.startswith("_")}


def imported_modules() -> set[str]:
    """Top-level names of every absolute import under pipeline/ and export/, including function-level ones."""
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return third_party(names)


def distributions_of(module: str) -> set[str]:
    """Installed distributions providing ``module``; for one not installed here, the same-named one."""
    return {canonicalize_name(d) for d in md.packages_distributions().get(module, [module])}


def test_every_imported_module_belongs_to_a_declared_distribution() -> None:
    declared = {canonicalize_name(req.name) for req in declared_requirements()}
    modules = imported_modules()
    assert {"torch", "timm", "onnxruntime", "yaml", "PIL"} <= modules  # the scan sees the code's imports
    undeclared = {m: sorted(distributions_of(m)) for m in modules if not distributions_of(m) & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


@pytest.mark.slow
def test_modules_loaded_by_an_onnx_export_are_declared_or_required_by_a_declared_one(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(tmp_path / "m.onnx")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = third_party(set(json.loads(proc.stdout.splitlines()[-1])))
    assert {"onnx", "onnxruntime", "torch"} <= loaded
    allowed = requirement_closure(declared_requirements())
    undeclared = {m: sorted(distributions_of(m)) for m in loaded if not distributions_of(m) & allowed}
    assert not undeclared, f"loaded at run time but neither declared nor required by a declared one: {undeclared}"
