"""``cakd bench-latency``: time and score exported models on every deployment runtime, and say what to deploy.

Export folders are read as they are. A checkpoint or an FP32 ONNX file given by hand is first exported,
explicitly and through ``cakd export``'s own function (same gates), into ``OUT/exports/LABEL``; an INT8 or FP16
ONNX file is timed as it is. Writes ``bench.json``, ``bench.csv`` and, when a dataset gives accuracies,
``pareto.png`` into ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

from ...export.artefacts import ARTEFACTS, int8_kinds
from ...export.decide.int8_pays import unpaid_lines
from ...export.decide.picks import TEACHER, picks, reference_batch
from ...export.decide.report import print_table, write_csv, write_pareto_plot
from ...export.exported import REPORT, Exported, read_export
from ...export.make.gate_data import GateData, gate_data
from ...export.measure.bench import BenchModel, Timing, pinned_threads, run_bench
from ...export.measure.bench_inputs import Item, folder_name, resolve
from ...export.measure.sysinfo import load_average, load_warning, system_info
from ...export.measure.target_rows import merge_target, read_target
from ...export.onnx_inspect import onnx_artefact, onnx_shape
from ...export.runtimes import RUNTIMES, Settings
from ..data import load_manifest
from ..errors import CakdError
from ..files.fileio import clean_stale, remove_outputs, temp_beside, write_json
from ..files.reports import check_sha256
from ..reporting import profiling
from ..reporting.ui import console
from ..settings.params import Params


def read_checked(folder: Path) -> Exported:
    """An export folder given to the bench, its files checked against the sha256 export.json recorded: a file
    swapped since the export would be timed under the folder's name."""
    exported = read_export(folder)
    for kind, path in exported.files.items():
        check_sha256(path, exported.report["artefacts"][kind], folder / REPORT)
    return exported


def as_export(item: Item, params: Params, data: GateData | None, exports: Path) -> Exported:
    """A file given by hand as an export folder: exported first (checkpoint, FP32 ONNX), or an INT8 / FP16 ONNX
    file standing alone (export folders are read by ``read_checked``)."""
    kind = onnx_artefact(item.path) if item.kind == "onnx" else "checkpoint"
    if kind in ("onnx-int8", "onnx-fp16"):
        in_chans, img_size, num_classes = onnx_shape(item.path)
        model = {"img_size": img_size, "in_chans": in_chans, "num_classes": num_classes}
        # an INT8 file given by hand is every CPU runtime's own INT8 file: each runs it as given
        kinds = [k for k in int8_kinds("cpu") if ARTEFACTS[k].chosen_on] if kind == "onnx-int8" else [kind]
        return Exported(item.path.parent, {"source": str(item.path), "model": model},
                        dict.fromkeys(kinds, item.path), {})
    from ...export.make.artefacts import artefacts_for, export_model  # the exporter loads only when a file needs it
    from ...export.make.runtime_gate import serving_of

    folder = exports / folder_name(item.label)
    console.print(f"exporting {item.path} for the bench through cakd export's gates -> {folder}", markup=False)
    if data is None:
        import torch

        in_chans, img_size = _input_of(item)
        data = GateData(torch.randn(8, in_chans, img_size, img_size))
    export_model(item.path, folder, artefacts_for(params.deploy.runtimes, params.deploy.precisions),
                 params.export, data, serving=serving_of(params))
    return read_export(folder)


def teacher_note(models: list[BenchModel], teacher: str) -> list[str]:
    """The label ``teacher`` makes a model the reference of every speed-up (``bench.min_speedup``): say so when
    that model is not params.yaml's ``teacher.model`` (a student labelled teacher by mistake)."""
    labelled = next((m for m in models if m.label == TEACHER), None)
    name = labelled.exported.report.get("model", {}).get("name") if labelled is not None else None
    if name is None or name == teacher:
        return []
    return [f"the model labelled {TEACHER} is a {name}, not params.yaml's teacher.model {teacher}: every speed-up "
            "and bench.min_speedup is measured against it"]


def _input_of(item: Item) -> tuple[int, int]:
    """(in_chans, img_size) of a checkpoint or ONNX file, for random parity images when no dataset is given."""
    if item.kind == "onnx":
        in_chans, img_size, _ = onnx_shape(item.path)
        return in_chans, img_size
    from ..models import load_model

    spec = load_model(item.path).spec
    return spec.in_chans, spec.img_size


def read_targets(paths: list[Path]) -> list[tuple[str, dict, list, dict, Path]]:
    """Every target's results, checked before anything is timed or removed; two files of one name are refused
    (the name labels the target's rows)."""
    targets = [(*read_target(path), path) for path in paths]
    names = [t[0] for t in targets]
    for name in names:
        if names.count(name) > 1:
            raise CakdError(f"two --target-results files are named {name}: a target is named by its file's name")
    return targets


def run(params: Params, items: list[str], out_dir: Path, manifest: Path | None = None,
        target_results: list[Path] | None = None) -> dict:
    profiling.mark_ready()
    bench, deploy = params.bench, params.deploy
    targets = read_targets(list(target_results or []))
    json_path, csv_path, png_path = out_dir / "bench.json", out_dir / "bench.csv", out_dir / "pareto.png"
    remove_outputs([json_path, csv_path, png_path])
    resolved, notes = resolve(items)
    data = gate_data(params, manifest) if manifest is not None else None
    dataset = load_manifest(manifest) if manifest is not None else None
    folders = {item.label: read_checked(item.path) for item in resolved if item.kind == "export"}  # every folder
    models = [BenchModel(item.label, folders[item.label] if item.kind == "export"  # checked before any export
                         else as_export(item, params, data, out_dir / "exports"), tuple(str(p) for p in item.given))
              for item in resolved]
    notes += teacher_note(models, params.teacher.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    clean_stale(out_dir / "work")  # what a killed bench left: compiled engines, runtimes' temporary files
    with temp_beside(out_dir / "work") as work, pinned_threads(bench.threads):
        settings = Settings(bench.threads, work, tuple(bench.batch_sizes), params.export.trt.workspace_mb,
                            bench.openvino_hint)
        rows = run_bench(models, settings, runtimes=list(deploy.runtimes), precisions=list(deploy.precisions),
                         timing=Timing(tuple(bench.batch_sizes), bench.warmup, bench.runs, bench.rounds),
                         loader=data.test_loader if data else None,
                         img_size=params.data.img_size if dataset else None,
                         num_classes=dataset["num_classes"] if dataset else None, max_drop=bench.runtime_max_drop)
    load_after = load_average()
    warning = load_warning(load_before, load_after, bench.threads)
    runtimes = list(deploy.runtimes)
    for name, _, target_rows, scores, _ in targets:
        merged = merge_target(rows, name, target_rows, scores, bench.runtime_max_drop)
        rows += merged
        runtimes += sorted({r.runtime for r in merged} - set(runtimes))
    chosen = picks(rows, runtimes, bench.budget_ms, bench.pick_tolerance, bench.min_speedup,
                   bench.keep_slower_int8)
    result = {
        "system": {**system_info(bench.threads), "load_before": load_before, "load_after": load_after,
                   "load_warning": warning},
        "settings": {**bench.model_dump(mode="json"), **deploy.model_dump(mode="json"),
                     "sessions": {r: RUNTIMES[r].options(settings) for r in deploy.runtimes}},
        "models": [{"label": m.label, "given": list(m.given)} for m in models],
        "targets": {name: {"results": str(path), "system": system} for name, system, _, _, path in targets},
        "notes": notes + ([warning] if warning else []),
        "rows": [row.to_dict() for row in rows],
        "picks": [pick.to_dict() for pick in chosen],
        "int8_unpaid": unpaid_lines(rows, reference_batch(rows), bench.keep_slower_int8),
    }
    has_accuracy = any(row.top1 is not None for row in rows)
    result["pareto_png"] = str(png_path) if has_accuracy else None
    with profiling.phase("reports"):
        if has_accuracy:
            write_pareto_plot(rows, png_path, bench.budget_ms)
        write_json(json_path, result)
        write_csv(rows, csv_path)
    print_table(result, rows, console)
    for line in [*result["int8_unpaid"], *(pick.line for pick in chosen)]:
        console.print(line, markup=False)
    return result
