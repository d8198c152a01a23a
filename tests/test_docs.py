"""The README and docs stand on their own in a user's clone, and name the files the code really writes."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cakd.export.artefacts import FILES
from cakd.export.runtimes.tensorrt_gpu import write_trtexec_script
from cakd.pipeline.settings.params import ExportParams, Params

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


README_MAX_LINES = 150  # the front page is read in two minutes; the detail lives in docs/


def _headings(doc: Path) -> Iterator[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens, a repeated
    heading numbered; lines inside code fences are not headings."""
    seen: dict[str, int] = {}
    fenced = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} +(.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


def _links(doc: Path) -> list[tuple[str, str]]:
    """(target, anchor) of every Markdown link outside code, web addresses left out."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return [(t, a) for t, a in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text) if "://" not in t]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    for target, anchor in _links(doc):
        path = (doc.parent / target).resolve() if target else doc
        assert path.is_relative_to(ROOT), f"{doc.name} links outside the clone: {target}"  # nothing beside it
        assert path.exists(), f"{doc.name} links to missing {target}"
        if anchor:
            assert anchor in set(_headings(path)), f"{doc.name} links to {target}#{anchor}: no such heading"


def test_link_checker_catches_a_broken_anchor_and_a_missing_file(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Latency benchmarks (`cakd bench`)\n\n## Two\n\n## Two\n```\n# not a heading\n```\n"
                    "[a](#two-1) [b](missing.md) [c](https://x.org/y.md)\n")
    assert list(_headings(page)) == ["latency-benchmarks-cakd-bench", "two", "two-1"]
    assert _links(page) == [("", "two-1"), ("missing.md", "")]


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in "\n".join(lines), f"README.md does not lead to docs/{page.name}"


def test_readme_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[test]" && dvc repro' in readme
    assert 'pip install -e ".[test]" && pytest -q' in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci and 'pytest -q "$@"' in ci


def test_readme_example_params_validate() -> None:
    """The README's YAML, laid over params.yaml as a user would, is accepted by the schema."""
    block = re.search(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in yaml.safe_load(block).items():
        tree[section] = values if section == "students" else {**tree[section], **values}
    params = Params.model_validate(tree)
    assert params.data.name == "imagefolder" and list(params.students) == ["convnext"]


def test_readme_links_the_method_written_in_the_repository() -> None:
    assert "](docs/METHOD.md)" in (ROOT / "README.md").read_text()
    assert "InfoNCE" in (ROOT / "docs" / "METHOD.md").read_text()


def test_export_page_names_the_trtexec_script_export_writes_by_default(tmp_path: Path) -> None:
    precision = ExportParams().trt.precision
    onnx_path = tmp_path / FILES["onnx-fp16" if precision == "fp16" else "onnx"]  # what --format trt builds from
    script = write_trtexec_script(onnx_path, tmp_path / f"model.{precision}.engine", [1, 8], 32, 256)
    page = (ROOT / "docs" / "EXPORT.md").read_text()
    assert f"`{script.name}` by default" in page


@pytest.mark.parametrize("path", ["dvc_plots/index.html", ".ci/venv/bin/python", "gpu-check/gpu_check.json"])
def test_generated_folders_are_git_ignored(path: str) -> None:
    proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert proc.returncode == 0, f"{path} is not git-ignored"
