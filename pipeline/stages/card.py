"""``cakd model-card``: an export's MODEL_CARD.md with the bench's accuracy and latency per runtime.

``cakd export`` already puts a card in the bundle (what the export measured); this one adds what the bench
measured afterwards. It writes outside the export folder (DVC's output), by default ``reports/cards/NAME.md``.
"""

from __future__ import annotations

from pathlib import Path

from ...export.bundle.card import model_card
from ...export.exported import read_export
from ..data import load_manifest
from ..errors import CakdError
from ..files.fileio import read_json, write_text
from ..reporting.ui import console


def run(export_dir: Path, bench: Path, manifest: Path, out: Path) -> str:
    """Write the card of ``export_dir`` from its export.json, ``bench`` (bench.json) and the manifest's counts."""
    report = read_export(export_dir).report
    if "bundle" not in report:
        raise CakdError(f"{export_dir}/export.json has no bundle metadata (an export of an older cakd): "
                        "re-run cakd export")
    bench_doc = read_json(bench, "bench report (run cakd bench-latency first)")
    label = report["bundle"]["origin"]["student"]
    if not any(row.get("model") == label for row in bench_doc.get("rows", [])):
        raise CakdError(f"{bench} has no rows of {label}: bench its export first")
    text = model_card(report, bench_doc, int(load_manifest(manifest)["counts"]["test"]))
    write_text(out, text)
    console.print(f"model card of {label}: {out}", markup=False)
    return text
