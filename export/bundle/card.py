"""MODEL_CARD.md, written from the reports only (the export's bundle document and gates, the bench's rows and
machine, the data manifest's counts): every number in it is one a stage measured, none is typed by hand."""

from __future__ import annotations

from ..measure.rows import BenchRow


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _purpose(doc: dict, test_images: int | None) -> list[str]:
    inp, pre, origin = doc["input"], doc["preprocessing"], doc["origin"]
    classes = ", ".join(f"`{c}`" for c in doc["classes"])
    return [f"# Model card: {origin['student']}", "",
            "## What it is for", "",
            f"Image classification into {len(doc['classes'])} classes: {classes}.", "",
            f"- Input `{inp['name']}`: {inp['dtype']} {inp['layout']}, {inp['channels']} channels in "
            f"{inp['colour_order']} order, {inp['size'][0]}x{inp['size'][1]} px, dynamic batch.",
            f"- Preprocessing: decode to {pre['convert']}, resize the shorter side to {pre['resize']['shorter_side']} "
            f"px ({pre['resize']['interpolation']}, antialiased), centre crop {pre['crop']['size']} px, scale by "
            f"1/255, subtract mean {pre['mean']} and divide by std {pre['std']} (per channel).",
            f"- Data: `{origin['data']}`" + (f", scored on {test_images} test images." if test_images else "."), "",
            "## How it was made", "",
            f"- Model: timm `{doc['model']['timm_name']}` with kwargs `{doc['model']['kwargs']}`.",
            (f"- Teacher `{origin['teacher']}`, distillation method `{origin['method']}`" if origin["teacher"]
             else f"- Trained on the labels (`{origin['method']}`), no teacher: this is the teacher itself")
            + f"; cakd {origin['cakd_version']}; checkpoint sha256 `{origin['checkpoint_sha256']}`.", ""]


def _gates(report: dict) -> list[str]:
    lines = ["## Gates", "", "| artefact | file | status | check |", "|---|---|---|---|"]
    for kind, entry in report["artefacts"].items():
        check = entry.get("reason") or ""
        if entry.get("parity"):
            p = entry["parity"]
            check = (f"parity on {p['images']} images: max abs logit diff {p['max_abs_diff']:.2e} "
                     f"(allowed {p['allowed_abs_diff']:.2e}), top-1 agreement {100 * p['top1_agreement']:.1f}%")
        elif entry.get("gate") and entry["status"] == "ok":
            g = entry["gate"]
            check = (f"INT8 gate on {g['images']} test images: top-1 {g['top1']:.2f}% vs FP32 {g['fp32_top1']:.2f}%"
                     f", agreement {g['agreement']:.1f}%")
        lines.append(f"| {kind} | {entry['file'] or '-'} | {entry['status']} | {check} |")
    return [*lines, ""]


def _measured(rows: list[BenchRow], bench: dict) -> list[str]:
    system = bench.get("system", {})
    lines = ["## Accuracy and latency per runtime", "",
             f"Measured by `cakd bench-latency` on {system.get('cpu', '?')} ({system.get('logical_cpus', '?')} "
             f"logical CPUs, {system.get('threads', '?')} threads, GPU {system.get('gpu') or 'none'}), "
             f"{system.get('timestamp', '?')}."]
    if system.get("load_warning"):
        lines.append(f"Note: {system['load_warning']}.")
    lines += ["", "| runtime | precision | artefact | batch | test top-1 | p50 ms | p90 ms | status |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.runtime} | {r.precision} | {r.artefact or '-'} | {r.batch_size} | {_fmt(r.top1, '%')} "
                     f"| {_fmt(r.p50_ms, '', 3)} | {_fmt(r.p90_ms, '', 3)} | {r.status} |")
    return [*lines, ""]


def _gated_accuracy(report: dict) -> list[str]:
    """Before the bench: the test-set top-1 the export's INT8 gates measured on onnxruntime."""
    lines = ["## Accuracy", "", "Not benchmarked yet: `cakd model-card` adds each runtime's accuracy and latency "
             "once `cakd bench-latency` has run. The export's INT8 gates measured, on onnxruntime:", ""]
    gated = [(kind, e["gate"]) for kind, e in report["artefacts"].items() if e["status"] == "ok" and e.get("gate")]
    if gated:
        lines.append(f"- FP32 (model.onnx): top-1 {gated[0][1]['fp32_top1']:.2f}% on {gated[0][1]['images']} "
                     "test images")
    lines += [f"- {kind} ({report['artefacts'][kind]['file']}): top-1 {g['top1']:.2f}% on {g['images']} test "
              f"images, {g['agreement']:.1f}% agreement with FP32" for kind, g in gated]
    return [*lines, *([] if gated else ["- (no INT8 gate ran: no test-set accuracy recorded at export)"]), ""]


def _limits(report: dict, rows: list[BenchRow]) -> list[str]:
    """What not to do with it: INT8 forms the gate rejected, runtimes on which an artefact failed its check."""
    limits = [f"- {kind} is not shipped ({entry['status']}): {entry['reason']}"
              for kind, entry in report["artefacts"].items() if entry["status"] in ("rejected", "skipped")]
    seen = set()
    for r in rows:
        if r.status in ("failed", "unavailable") and (r.runtime, r.artefact) not in seen:
            seen.add((r.runtime, r.artefact))
            limits.append(f"- {r.artefact or r.precision} on {r.runtime}: {r.status} ({r.reason})")
    return ["## Known limits", "", *(limits or ["- none found by the export's gates or the bench"]), ""]


def _how_to_run(doc: dict) -> list[str]:
    lines = ["## How to run it", "", "With Python, numpy, Pillow and one runtime (no torch, no cakd), in the export "
             "folder:", "", "```bash", "pip install numpy pillow onnxruntime      # or openvino",
             "python run.py --self-test                  # every golden vector, batch 1 and the largest",
             "python run.py IMAGE.jpg                    # top-5 classes",
             "python run.py --bench --out bench.json     # latency on this machine",
             "python run.py --accuracy DIR               # DIR/<class name>/<image>"]
    for script in doc.get("tensorrt", {}).get("scripts", []):
        lines.append(f"./{script}   # TensorRT engine, on the target GPU")
    return [*lines, "```", ""]


def model_card(report: dict, bench: dict | None, test_images: int | None) -> str:
    """The card of one export (``report``: its export.json) with the bench's rows of that model, if any."""
    doc = report["bundle"]
    label = doc["origin"]["student"]
    rows = [BenchRow.from_dict(r) for r in (bench or {}).get("rows", []) if r.get("model") == label]
    measured = _measured(rows, bench) if rows else _gated_accuracy(report)
    return "\n".join([*_purpose(doc, test_images), *_gates(report), *measured, *_limits(report, rows),
                      *_how_to_run(doc)])
