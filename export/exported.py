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
