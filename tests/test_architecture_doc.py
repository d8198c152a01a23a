"""docs/ARCHITECTURE.md is true of the tree: every module it names exists and every package module is named, so a
newcomer who reads it finds each file, and a module added without a line there fails here. The default paths are
spelled once, in `pipeline/files/layout.py`: the CLI takes them from there and dvc.yaml spells each of them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cakd.pipeline.files import layout

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ("pipeline", "export")


def named_paths(text: str) -> set[str]:
    """Every `pipeline/...` or `export/...` module or folder the text names in backticks."""
    return set(re.findall(r"`((?:pipeline|export)/[\w/]*?(?:\.py|/))`", text))


def package_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if p.name != "__init__.py"}


def test_every_module_the_page_names_exists() -> None:
    named = named_paths(PAGE.read_text())
    assert len(named) > 20  # the page names modules by their path from the repository root
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def test_every_package_module_is_on_the_page() -> None:
    unnamed = sorted(package_modules() - named_paths(PAGE.read_text()))
    assert not unnamed, f"docs/ARCHITECTURE.md does not name: {unnamed} (add a line where it belongs)"


def test_named_paths_reads_modules_and_folders_only_in_backticks() -> None:
    text = "`pipeline/cli.py`, `export/make/`, pipeline/errors.py, `pipeline/x.pyc`, `export/a/b.py` and `cakd.export`"
    assert named_paths(text) == {"pipeline/cli.py", "export/make/", "export/a/b.py"}


def test_dvc_yaml_spells_every_default_path_of_the_layout() -> None:
    dvc = (ROOT / "dvc.yaml").read_text()
    paths = {name: value for name, value in vars(layout).items()
             if isinstance(value, Path) and value not in layout.OUTSIDE_DVC}
    assert len(paths) >= 10
    for name, value in paths.items():
        assert value.as_posix() in dvc, f"layout.{name} ({value}) is not spelled in dvc.yaml"


def test_cli_takes_its_default_paths_from_the_layout() -> None:
    """A path literal under artifacts/ or reports/ in the CLI would be a second spelling that can drift."""
    tree = ast.parse((ROOT / "pipeline" / "cli.py").read_text())
    literals = [node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Path" and node.args
                and isinstance(node.args[0], ast.Constant)]
    assert literals  # params.yaml is one
    spelled = [lit for lit in literals if str(lit).startswith((f"{layout.ARTIFACTS}", f"{layout.REPORTS}"))]
    assert not spelled, f"pipeline/cli.py spells paths layout.py holds: {spelled}"


def test_the_artefact_table_on_the_page_is_the_code_s() -> None:
    """docs/ARCHITECTURE.md's artefact table says what ``ARTEFACTS`` says, row for row."""
    from cakd.export.artefacts import ARTEFACTS

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text[text.index("| artefact | file |"):].split("\n\n")[0].splitlines()[2:]
    shown = [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in table]
    expected = [[kind, row.file, row.precision, row.maker, row.form or "-", row.gate,
                 "yes" if row.untrained else "no"] for kind, row in ARTEFACTS.items()]
    assert shown == expected
