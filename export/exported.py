"""An export folder as its readers (bench, summary) see it: ``export.json`` and the files that passed their gates.

Light on purpose: reading a report imports neither torch nor any runtime, so ``cakd summary`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..pipeline.errors import CakdError
from ..pipeline.files.reports import artefact_file, read_export_report
from .artefacts import ARTEFACTS, Artefact

REPORT = "export.json"


@dataclass(frozen=True)
class Exported:
    """An export folder as readers see it: the files that passed their gates, and why the others are missing."""

    folder: Path
    report: dict
    files: dict[Artefact, Path]
    missing: dict[Artefact, tuple[str, str]]  # kind -> (status, reason): rejected or skipped

    def refused(self, artefact: str, runtime: str, batch: int) -> str | None:
        """Why the export's gate refused ``artefact`` on ``runtime`` at ``batch`` (``runtime_gate``), or None:
        passed there, or not checked (the bench's runtime check is then its only check)."""
        checks = self.report.get("artefacts", {}).get(artefact, {}).get("runtimes", {}).get(runtime, {})
        return checks.get("checked", {}).get(str(batch), {}).get("reason")

    @property
    def img_size(self) -> int:
        return int(self.report["model"]["img_size"])

    @property
    def in_chans(self) -> int:
        return int(self.report["model"].get("in_chans", 3))

    @property
    def num_classes(self) -> int:
        return int(self.report["model"]["num_classes"])


def read_export(folder: Path) -> Exported:
    """Open an export folder; a report that is not one (``files.reports.ExportReport``: an artefact is a plain
    file name in the folder), or names files that are gone, is one line. Nothing here opens an artefact."""
    path = folder / REPORT
    report = read_export_report(path)
    entries = report["artefacts"]
    unknown = sorted(kind for kind, entry in entries.items() if entry["status"] == "ok" and kind not in ARTEFACTS)
    if unknown:
        raise CakdError(f"{path} names unknown artefacts {', '.join(unknown)} (re-run cakd export)")
    files = {kind: artefact_file(folder, entry, path) for kind, entry in entries.items() if entry["status"] == "ok"}
    missing = {kind: (entry["status"], entry["reason"]) for kind, entry in entries.items() if entry["status"] != "ok"}
    return Exported(folder, report, files, missing)


def runtime_refusals(entry: dict) -> dict[str, str]:
    """Per runtime the export's gate refused an INT8 entry on at some batch size (``runtime_gate``): which batch
    sizes it keeps and why the others were refused, e.g. ``only at batch 1, 8 (at batch 64: <gate reason>)``."""
    said = {}
    for runtime, result in entry.get("runtimes", {}).items():
        refused = {b: at["reason"] for b, at in result.get("checked", {}).items() if at["reason"] is not None}
        if refused:
            kept = ", ".join(map(str, result["batch_sizes"]))
            why = "; ".join(f"at batch {b}: {reason}" for b, reason in refused.items())
            said[runtime] = f"only at batch {kept} ({why})" if kept else f"at no batch size ({why})"
    return said
