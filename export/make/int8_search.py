"""Each CPU runtime's INT8 file, its form chosen by measurement on that runtime (issue 33).

For a kind made for one runtime (``ARTEFACTS[kind].chosen_on``: ``onnx-int8`` for onnxruntime,
``onnx-int8-openvino`` for OpenVINO), every form of ``export.int8_forms`` that runtime may take is made (once:
a QDQ file two runtimes try is shared), gated on that runtime at every serving batch size
(``runtime_gate.check_on_runtime``), and the passing ones are timed with the bench's harness (the runtime's
``timed_call``, interleaved rounds, the bundle runner's statistics) at batch 1 and the largest bench batch,
FP32 in the same rounds. ``int8_choice.choose`` picks the fastest that passed; its file becomes the kind's
file. Every form's numbers go into ``export.json`` (``forms``, ``chosen``, ``quantiser``, ``fp32_p50_ms``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from ...pipeline.reporting import profiling
from ...pipeline.reporting.metrics import top1_hits
from ...pipeline.settings.params import ExportParams
from ..artefacts import ARTEFACTS, FILES, Artefact
from ..measure.bench import Timing, failure_line, measure
from ..measure.bench_accuracy import rebatched
from ..measure.sysinfo import cpu_flags, cpu_model
from ..runtimes import RUNTIMES
from .int8_choice import choose, none_passed
from .int8_forms import FORMS, FormJob, FormUnavailable
from .runtime_gate import Serving, check_on_runtime, serving_runner

Loader = Iterable[tuple[torch.Tensor, torch.Tensor]]
Found = tuple[str, str | None, dict]  # (status, reason, details for the export.json entry)
WARMUP = 2  # untimed calls per form and batch size before the rounds


def search(folder: Path, kinds: list[Artefact], cfg: ExportParams, calib: torch.Tensor, loader: Loader,
           fp32: tuple[torch.Tensor, torch.Tensor], serving: Serving, spec: tuple[int, int]) -> dict[str, Found]:
    """Per kind: the chosen form's file written as the kind's file, or why there is none; the forms' work
    files are removed."""
    work = folder / ".int8-forms"
    work.mkdir()
    loader = rebatched(loader, max(serving.batch_sizes))  # the test split read once, not per form and batch
    try:
        job = FormJob(folder / FILES["onnx"], work, calib, cfg,
                      check=lambda path, rt: check_on_runtime(path, rt, serving, spec, loader, fp32, cfg, work),
                      score=lambda path, rt, batches: top1_per_batch(path, rt, serving, spec, batches, work),
                      test_batches=loader)
        return {kind: _for_runtime(folder, kind, job, serving, spec, fp32) for kind in kinds}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def top1_per_batch(path: Path, runtime: str, serving: Serving, spec: tuple[int, int],
                   batches: list[tuple[torch.Tensor, torch.Tensor]], work: Path) -> list[float]:
    """Top-1 (percent) of an INT8 file on ``runtime`` on each test batch, run at that batch's size."""
    predict = serving_runner(path, "int8", runtime, serving, spec, work, serving.batch_sizes).predict
    return [100.0 * top1_hits(predict(x), y) / len(y) for x, y in batches]


def _for_runtime(folder: Path, kind: Artefact, job: FormJob, serving: Serving, spec: tuple[int, int],
                 fp32: tuple[torch.Tensor, torch.Tensor]) -> Found:
    """One runtime's file: its forms tried, the passing ones timed, the fastest copied in as ``kind``'s file."""
    runtime = ARTEFACTS[kind].chosen_on
    why = RUNTIMES[runtime].unavailable()
    if why is not None:
        return "skipped", why, {}
    rows, paths = {}, {}
    for name in job.cfg.int8_forms:
        form = FORMS[name]
        if form.runtimes is None or runtime in form.runtimes:
            with profiling.phase("int8-forms"):
                rows[name], paths[name] = try_form(form.name, job, runtime)
    fp32_p50 = _time(folder / FILES["onnx"], {n: paths[n] for n, r in rows.items() if r["status"] == "passed"},
                     rows, runtime, serving, spec, job)
    chosen = choose(rows)
    # the CPU decides whether 8-bit weights are right (VNNI): its flags beside the forms, as the bench's ``system``
    details = {"forms": rows, "fp32_p50_ms": fp32_p50, "cpu": {"model": cpu_model(), "flags": cpu_flags()}}
    if chosen is None:
        return "rejected", none_passed(runtime, rows), details
    shutil.copyfile(paths[chosen], folder / FILES[kind])
    row = rows[chosen]
    return "ok", None, {"gate": _gate(row, fp32, job), "chosen": chosen, "quantiser": row["quantiser"],
                        "runtimes": {runtime: {"batch_sizes": row["batch_sizes"], "checked": row["checked"]}},
                        **details}


def try_form(name: str, job: FormJob, runtime: str) -> tuple[dict, Path | None]:
    """One form made and gated on ``runtime``: its row (``status`` passed, failed, unavailable or error) and file."""
    form = FORMS[name]
    row: dict = {"quantiser": form.quantiser}
    try:
        path, row["recipe"] = form.make(job, runtime)
    except FormUnavailable as err:
        return {**row, "status": "unavailable", "reason": str(err)}, None
    except Exception as err:  # a quantiser's own error types (onnxruntime, NNCF): the form fails alone
        return {**row, "status": "error", "reason": failure_line(err)}, None
    result = job.check(path, runtime)
    checked = result["checked"]
    refused = {b: at["reason"] for b, at in checked.items() if at["reason"] is not None}
    largest = max(checked, key=int)
    row.update(top1=checked[largest]["top1"], agreement=min(at["agreement"] for at in checked.values()),
               batch_sizes=result["batch_sizes"], checked=checked, status="failed" if refused else "passed",
               reason="; ".join(f"at batch {b}: {why}" for b, why in refused.items()) or None)
    return row, path


def _time(fp32_onnx: Path, passing: dict[str, Path], rows: dict[str, dict], runtime: str, serving: Serving,
          spec: tuple[int, int], job: FormJob) -> dict[str, float]:
    """Time the passing forms and FP32 in the same interleaved rounds; each passing row gets ``p50_ms`` and
    ``p50_round_ms`` (per-round p50 range) per batch size; returns FP32's p50 per batch size."""
    if not passing:
        return {}
    bench = serving.bench_batch_sizes or serving.batch_sizes
    batches = tuple(sorted({min(serving.batch_sizes), max(bench)}))
    files = [fp32_onnx, *passing.values()]
    runners = [serving_runner(path, "fp32" if i == 0 else "int8", runtime, serving, spec, job.work, batches)
               for i, path in enumerate(files)]
    with profiling.phase("int8-forms-timing"):
        stats = measure(runners, Timing(batches, WARMUP, job.cfg.int8_form_runs, job.cfg.int8_form_rounds))
    for i, name in enumerate(passing, start=1):
        rows[name]["p50_ms"] = {str(b): stats[i, b]["p50_ms"] for b in batches}
        rows[name]["p50_round_ms"] = {str(b): [stats[i, b]["p50_round_min_ms"], stats[i, b]["p50_round_max_ms"]]
                                      for b in batches}
    return {str(b): stats[0, b]["p50_ms"] for b in batches}


def _gate(row: dict, fp32_logits: tuple[torch.Tensor, torch.Tensor], job: FormJob) -> dict:
    """The chosen form's gate figures (top-1 at the largest serving batch size, the lowest agreement of any)."""
    fp32, labels = fp32_logits
    n = len(labels)
    fp32_top1 = 100.0 * top1_hits(fp32, labels) / n
    return {"top1": row["top1"], "fp32_top1": fp32_top1, "drop": fp32_top1 - row["top1"],
            "agreement": row["agreement"], "images": n, "max_drop": job.cfg.int8_max_drop,
            "min_agreement": job.cfg.int8_min_agreement, "calib_images": len(job.calib_images)}
