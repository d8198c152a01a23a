"""The shape of the code: no import circle, stages that talk only through files, short functions, the installed
package names, and one set of defaults for params.yaml and its schema."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cakd.pipeline.settings.params import Params, ShortlistParams

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, declared in the test extra
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"pipeline": "cakd.pipeline", "export": "cakd.export"}
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    """Every module of the product by its installed name (cakd.pipeline.stages.train -> its file)."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def package_of(name: str, path: Path) -> str:
    """The package a module's relative imports start from (a package's __init__ is its own package)."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The product modules a file imports anywhere in it (function-level imports included), relative imports
    resolved as Python resolves them: ``from a.b import c`` counts a.b.c when c is a module, else a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package_of(name, path).split(".")
                anchor = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {n for n in names if n in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])


def test_stages_talk_only_through_files() -> None:
    """A stage (one CLI command, one DVC stage) never imports another stage's module."""
    for name, targets in graph().items():
        if name.startswith("cakd.pipeline.stages."):
            assert not {t for t in targets if t.startswith("cakd.pipeline.stages.")}, name


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, long


def test_the_distribution_lists_every_package_under_its_cakd_name() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert listed == folders


def test_no_generic_top_level_module_is_installed(tmp_path: Path) -> None:
    """Outside the repository (no folder on sys.path holds pipeline/ or export/), only cakd.* imports."""
    code = ("import importlib.util as u; print([n for n in ('pipeline', 'export', 'cakd.pipeline', 'cakd.export')"
            " if u.find_spec(n) is not None])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['cakd.pipeline', 'cakd.export']"


def test_params_yaml_and_the_schema_have_one_set_of_defaults() -> None:
    """Every section with defaults in the schema holds exactly params.yaml's values: one source of truth."""
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    checked = []
    for name, field in Params.model_fields.items():
        if field.is_required() or field.default_factory is None:
            continue
        default = field.default_factory().model_dump(mode="json")
        assert default == shipped[name], name
        checked.append(name)
    assert Params.model_fields["seed"].default == shipped["seed"]
    assert {"data", "train", "distill", "export", "deploy", "bench", "machine"} <= set(checked)
    # the candidate grid has no default in code: params.yaml's is the only copy; the rest of the section is checked
    candidates = shipped["shortlist"]["candidates"]
    assert ShortlistParams(candidates=candidates).model_dump(mode="json") == shipped["shortlist"]


def test_the_bench_only_reads_artefacts() -> None:
    """The bench's modules reach no exporter or quantiser, directly or through what they import; a file given
    by hand is exported by the bench stage through cakd export's own function, before the bench sees it."""
    edges = graph()
    makers = {"cakd.export.make.onnx_export", "cakd.export.make.int8", "cakd.export.make.artefacts",
              "cakd.export.make.qat"}
    bench = {"cakd.export.measure.bench", "cakd.export.measure.bench_inputs", "cakd.export.measure.bench_accuracy",
             "cakd.export.decide.picks", "cakd.export.decide.report", "cakd.export.measure.rows"}
    reached, todo = set(), list(bench)
    while todo:
        for target in edges[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    assert not reached & makers, f"the bench reaches {sorted(reached & makers)}"
    for name in bench:
        source = modules()[name].read_text()
        assert "torch.onnx" not in source and "quantize_static" not in source, name


# Modules that cannot change what a stage writes, so dvc.yaml need not list them (a change re-runs nothing):
NO_RESULTS = {
    "cakd.pipeline": "the package: its version string and switching the runtimes' telemetry off",
    "cakd.export": "the package: imports cakd.pipeline only to switch telemetry off first",
    "cakd.pipeline.errors": "the one-line error type: what a failure says, never what a success writes",
    "cakd.pipeline.files.telemetry": "switches onnxruntime's and OpenVINO's telemetry off",
    "cakd.pipeline.reporting.ui": "the console: what is printed, not what is written",
    "cakd.pipeline.reporting.profiling": "where a process spends its time (CAKD_PROFILE), not its results",
    "cakd.pipeline.training.launch": "cli.py's torchrun relaunch from machine.* (listed by no stage: the global batch "
                                     "is kept whatever the process count)",
}


def loaded_by(start: str) -> set[str]:
    """The product modules Python loads to run ``start``: its imports, transitively, and each module's
    packages (whose ``__init__`` runs first and loads what it imports)."""
    edges, seen, todo = graph(), {start}, [start]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        packages = {".".join(parts[:k]) for k in range(2, len(parts))} & set(edges)
        for target in (edges[name] | packages) - seen:
            seen.add(target)
            todo.append(target)
    return seen


def stage_modules() -> dict[str, str]:
    """``cakd`` command -> the stage module its function in cli.py imports."""
    found = {}
    for fn in ast.parse((ROOT / "pipeline" / "cli.py").read_text()).body:
        for dec in getattr(fn, "decorator_list", []):
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "command":
                command = dec.args[0].value if dec.args else fn.name.replace("_", "-")
                found[command] = next(f"cakd.pipeline.stages.{node.names[0].name}" for node in ast.walk(fn)
                                      if isinstance(node, ast.ImportFrom) and node.module == "stages")
    return found


def inert(path: Path) -> bool:
    """A module with nothing but its docstring (most package ``__init__`` files)."""
    return len(ast.parse(path.read_text()).body) <= 1


def test_dvc_code_deps_are_what_each_stage_loads() -> None:
    """Each dvc.yaml stage lists, as files or folders, every product module its stage module loads (a change
    there re-runs it) and nothing it does not load (a change there would re-run it for nothing)."""
    files = {name: str(path.relative_to(ROOT)) for name, path in modules().items()}
    ignored = {files[name] for name in NO_RESULTS} | {f for f in files.values() if inert(ROOT / f)}
    commands = stage_modules()
    for stage, spec in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        spec = spec.get("do", spec)  # a foreach stage
        loaded = {files[m] for m in loaded_by(commands[spec["cmd"].split()[1]])} - ignored
        deps = [d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]]
        code = [d for d in deps if d.split("/")[0] in FOLDERS]
        uncovered = sorted(f for f in loaded if not any(f == d or f.startswith(f"{d}/") for d in code))
        assert not uncovered, f"dvc.yaml stage {stage} loads but does not list {uncovered}"
        for dep in code:
            listed = {f for f in files.values() if f == dep or f.startswith(f"{dep}/")} - ignored
            assert listed, f"dvc.yaml stage {stage} lists {dep}, which holds no module that can change results"
            assert listed <= loaded, f"dvc.yaml stage {stage} lists {dep} but does not load {sorted(listed - loaded)}"


def test_imports_inside_the_package_are_relative() -> None:
    """``from ..files.fileio import ...`` names the file it reads (``..`` is the folder above); an absolute
    ``cakd.pipeline...`` import needs the reader to know that ``cakd.pipeline`` is the folder ``pipeline/``."""
    absolute = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            named = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            absolute += [f"{name}: {n}" for n in named if n == "cakd" or n.startswith("cakd.")]
    assert not absolute, absolute
