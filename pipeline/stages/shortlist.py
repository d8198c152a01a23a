"""``cakd shortlist``: choose students by measured latency before training any.

Every candidate of ``shortlist.candidates`` is built untrained at the dataset's input size and class count,
exported as ``cakd export`` would for ``shortlist.runtime`` / ``shortlist.precision``, and timed at
``shortlist.batch_size`` with the bench's harness and timing settings (``bench.warmup/runs/rounds/threads``),
the pipeline's teacher (``teacher.model``/``kwargs``, untrained: same latency) in the same rounds. The budget
(``budget_ms`` and/or ``min_speedup`` over that teacher) and the ranking rule are ``cakd.export.decide.profile``'s.
Writes ``reports/shortlist.json`` (every candidate, in budget or not, with the reason) and a latency-vs-GFLOPs
plot; prints the table. ``--apply K`` writes the top K into params.yaml's ``students:``, which DVC's
``foreach: ${students}`` reads, so the next ``dvc repro`` trains exactly those.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.markup import escape
from rich.table import Table

from ...export.decide.noise import budget_line, reference_spread
from ...export.decide.profile import (
    RULE,
    TEACHER,
    Profiled,
    Target,
    build,
    export_all,
    judge,
    profile,
    rank,
    target_artefact,
)
from ...export.decide.report import write_shortlist_plot
from ...export.decide.target import check_runtime, profiled, read_manifest, read_results, write_bundle
from ...export.decide.train_cost import forward_seconds, recipe_minutes, step_seconds
from ...export.measure.bench import Timing, pinned_threads
from ...export.measure.sysinfo import load_average, load_warning, system_info
from ...export.runtimes import Settings
from ..data import build_datasets, load_manifest, spread_sample
from ..errors import CakdError
from ..files.fileio import check_out_dir, clean_stale, file_sha256, read_json, remove_outputs, temp_beside, write_json
from ..models import ModelSpec
from ..reporting import profiling
from ..reporting.ui import console
from ..settings.fingerprint import fingerprint
from ..settings.params import KnownNames, Params
from ..settings.params_file import replace_students

TIMING_KEYS = {"warmup", "runs", "rounds", "threads", "openvino_hint"}
EXPORT_KEYS = {"opset", "atol", "fp16_atol", "int8_activations", "int8_reduce_range"}
DATA_KEYS = {"name", "root", "img_size"}  # the input size and, through the dataset, the class count


def shortlist_key(params: Params) -> str:
    """Everything a shortlist's numbers depend on: ``--from`` refuses a report measured under other settings."""
    return fingerprint(params.shortlist.model_dump(mode="json", exclude={"jobs"}), params.teacher.model,
                       params.teacher.kwargs, params.data.model_dump(mode="json", include=DATA_KEYS),
                       params.bench.model_dump(mode="json", include=TIMING_KEYS),
                       params.export.model_dump(mode="json", include=EXPORT_KEYS), params.train.batch_size,
                       recipe_epochs(params))


def _networks(params: Params, num_classes: int) -> list[Profiled]:
    """The teacher and every candidate, built untrained (bad names or kwargs stop here, before any timing)."""
    img_size = params.data.img_size
    torch.manual_seed(params.seed)  # the same untrained weights every run (latency does not depend on them)
    teacher = build(TEACHER, ModelSpec(params.teacher.model, num_classes, img_size,
                                       kwargs=dict(params.teacher.kwargs)))
    return [teacher] + [build(name, ModelSpec(c.model, num_classes, img_size, kwargs=dict(c.kwargs)))
                        for name, c in params.shortlist.candidates.items()]


def _setup(params: Params, manifest: Path) -> tuple[list[Profiled], torch.Tensor, dict]:
    """The untrained networks, the parity/calibration images and the settings of the measurement."""
    cfg, bench = params.shortlist, params.bench
    artefact = target_artefact(Target(cfg.runtime, cfg.precision, cfg.batch_size))  # one line before any build
    dataset = load_manifest(manifest)
    with profiling.phase("data"):
        train_ds, _ = build_datasets(params.data, dataset, params.seed, train_augment=False)
        images = spread_sample(train_ds, cfg.calib_images)  # parity images, and INT8's calibration images
    items = _networks(params, dataset["num_classes"])
    with profiling.phase("train-step"):
        estimate_training(params, items, len(train_ds), dataset["num_classes"])
    timed = {"runtime": cfg.runtime, "precision": cfg.precision, "artefact": artefact, "batch_size": cfg.batch_size,
             "budget_ms": cfg.budget_ms, "min_speedup": cfg.min_speedup, "top_k": cfg.top_k,
             "img_size": params.data.img_size, "num_classes": dataset["num_classes"], "calib_images": len(images),
             "warmup": bench.warmup, "runs": bench.runs, "rounds": bench.rounds, "threads": bench.threads}
    return items, images, timed


def recipe_epochs(params: Params) -> int:
    """Epochs of a shortlisted student's baseline and distillation under the default recipe."""
    return params.distill.epochs or params.train.epochs


def estimate_training(params: Params, items: list[Profiled], train_images: int, num_classes: int) -> None:
    """Each candidate's ``train_min``: one timed training step at the data's size and the training batch size."""
    spec = items[0].spec
    images = torch.randn(min(params.train.batch_size, train_images), spec.in_chans, spec.img_size, spec.img_size)
    with pinned_threads(params.bench.threads):
        teacher_s = forward_seconds(items[0].net, images)
        for item in items[1:]:
            item.train_min = recipe_minutes(step_seconds(item.net, images, num_classes), teacher_s, train_images,
                                            params.train.batch_size, recipe_epochs(params))


def _progress(started: float) -> Callable[[str], None]:
    return lambda line: console.print(escape(f"{time.perf_counter() - started:5.1f} s  {line}"), style="dim")


def measure_candidates(params: Params, manifest: Path, work: Path) -> tuple[list[Profiled], dict]:
    """Build, export and time; returns the profiled networks and the settings that were timed."""
    cfg, bench = params.shortlist, params.bench
    items, images, timed = _setup(params, manifest)
    timing = Timing((cfg.batch_size,), bench.warmup, bench.runs, bench.rounds)
    settings = Settings(bench.threads, work, (cfg.batch_size,), params.export.trt.workspace_mb, bench.openvino_hint)
    started = time.perf_counter()
    with pinned_threads(bench.threads):
        profile(items, Target(cfg.runtime, cfg.precision, cfg.batch_size), timing, settings, params.export, images,
                cfg.jobs, progress=_progress(started))
    return items, timed


def write_target_bundle(params: Params, manifest: Path, folder: Path) -> dict:
    """``--bundle DIR``: every candidate and the teacher exported as for a local shortlist, with the runner and a
    manifest, to be timed on the target; nothing is timed here."""
    check_runtime(params.shortlist.runtime)
    profiling.mark_ready()
    check_out_dir(folder, "--bundle")
    items, images, timed = _setup(params, manifest)
    with temp_beside(folder.with_name(f"{folder.name}-exports")) as work:  # not folder's: its swap cleans that
        export_all(items, timed["artefact"], work, params.export, images, params.shortlist.jobs,
                   _progress(time.perf_counter()))
        written = write_bundle(folder, items, timed, shortlist_key(params))
    count = sum(1 for m in written["models"].values() if m["file"])
    console.print(escape(f"{folder}: {count} models ({timed['artefact']} for {timed['runtime']}) and run.py; on the "
                         f"target: cd {folder.name} && python run.py --bench --out results.json; then here: cakd "
                         f"shortlist --from-target results.json --bundle {folder}"), markup=False)
    return written


def report(params: Params, items: list[Profiled], timed: dict) -> dict:
    """The shortlist as JSON: the teacher's row, every candidate with its verdict and rank, the ranking."""
    cfg = params.shortlist
    teacher, candidates = items[0], items[1:]
    verdicts = [judge(item, teacher.row, cfg.budget_ms, cfg.min_speedup, cfg.train_budget_min)
                for item in candidates]
    minutes = {item.name: item.train_min for item in candidates}
    ranking = [v.name for v in rank(verdicts)]
    line = budget_line(cfg.budget_ms, teacher.row, cfg.min_speedup) if teacher.row.p50_ms is not None else None
    entries = {v.name: {"family": v.family, "model": v.model, "kwargs": v.kwargs, "rank": v.rank,
                        "within_budget": v.within_budget, "borderline": v.borderline, "speedup": v.speedup,
                        "reason": v.reason, "train_min": minutes[v.name], "row": v.row.to_dict()} for v in verdicts}
    return {"settings": timed, "key": shortlist_key(params), "rule": RULE,
            "teacher": {"family": teacher.family, "model": teacher.spec.name, "kwargs": dict(teacher.spec.kwargs),
                        "row": teacher.row.to_dict()},
            "candidates": entries, "ranking": ranking, "shortlist": ranking[:cfg.top_k],
            "budget_line": None if line is None else {"low_ms": line.low, "high_ms": line.high, "budget": line.words,
                                                      "teacher_spread": reference_spread(teacher.row)}}


def _budget_text(settings: dict) -> str:
    parts = ([f"p50 <= {settings['budget_ms']:g} ms"] if settings["budget_ms"] else []) + (
        [f">= {settings['min_speedup']:g}x the teacher's speed"] if settings["min_speedup"] else [])
    return " and ".join(parts) or "none (every candidate fits)"


def _ms(row: dict) -> str:
    if row["p50_ms"] is None:
        return "-"
    return f"{row['p50_ms']:.3f} [{row['p50_round_min_ms']:.3f}-{row['p50_round_max_ms']:.3f}]"


def _listed(result: dict) -> list[tuple[str, dict]]:
    """Ranked candidates in rank order, then those over budget by p50, then the failed ones."""
    entries = result["candidates"]
    over = sorted((n for n, e in entries.items() if e["rank"] is None and e["row"]["p50_ms"] is not None),
                  key=lambda n: entries[n]["row"]["p50_ms"])
    failed = [n for n, e in entries.items() if e["row"]["p50_ms"] is None]
    return [(n, entries[n]) for n in result["ranking"] + over + failed]


def _architecture(model: str, kwargs: dict) -> str:
    """``resnet18 channels=[32,64,128,256] stem_width=32``: the model and its kwargs on one short line."""
    return " ".join([model] + [f"{k}={str(v).replace(' ', '')}" for k, v in kwargs.items()])


def _verdict(entry: dict) -> str:
    if entry["borderline"]:
        return ("yes" if entry["within_budget"] else "no") + " (borderline: ranked after the clear passes)"
    if not entry["within_budget"]:
        return f"[yellow]no[/yellow]: {escape(entry['reason'] or '')}"
    return "yes"


def print_shortlist(result: dict) -> None:
    s = result["settings"]
    table = Table(title=escape(f"Shortlist: untrained candidates on {s['runtime']} {s['precision']} "
                               f"({s['artefact']}), batch {s['batch_size']}, {s['img_size']} px, {s['threads']} "
                               f"threads, {s['rounds']} interleaved rounds x {s['runs']} calls; budget: "
                               f"{_budget_text(s)}"))
    for name in ("rank", "candidate", "family", "architecture (timm name, kwargs)", "params M", "GFLOPs",
                 "p50 ms [round p50s]", "speed-up", "train", "within budget"):
        table.add_column(name, justify="right" if name in ("rank", "params M", "GFLOPs", "speed-up", "train")
                         else "left",
                         no_wrap=name.startswith(("p50", "candidate")), max_width=25 if name[:4] == "arch" else None)
    teacher = result["teacher"]
    table.add_row("-", "teacher", teacher["family"], escape(_architecture(teacher["model"], teacher["kwargs"])),
                  f"{teacher['row']['params_m']:.2f}", f"{teacher['row']['gflops']:.4f}", _ms(teacher["row"]),
                  "1.00x", "-", "(reference)")
    for name, e in _listed(result):
        table.add_row(str(e["rank"] or "-"), escape(name), e["family"], escape(_architecture(e["model"], e["kwargs"])),
                      f"{e['row']['params_m']:.2f}", f"{e['row']['gflops']:.4f}", _ms(e["row"]),
                      "-" if e["speedup"] is None else f"{e['speedup']:.2f}x",
                      "-" if e.get("train_min") is None else f"~{e['train_min']:.1f}m", _verdict(e))
    console.print(table)
    if result.get("measured_on") == "target":
        t = result["target"]
        console.print(escape(f"measured on the target: {t['cpu']}, {t['threads'] or 'default'} threads "
                             f"({t['results']})"), markup=False)
    console.print(escape(f"rule: {result['rule']}"), markup=False)
    line = result.get("budget_line")
    if line is not None:
        console.print(escape(f"budget line: {line['low_ms']:.3f}-{line['high_ms']:.3f} ms ({line['budget']}; the "
                             f"teacher's rounds spread {100 * line['teacher_spread']:.0f}% of its p50)"), markup=False)
    if any(e["borderline"] for e in result["candidates"].values()):
        console.print("borderline: the budget line lies inside the candidate's round p50s; ranked after every clear "
                      "pass, time it again before relying on it", markup=False)
    for note in result.get("notes", []):
        console.print(f"[yellow]note[/yellow]: {escape(note)}")
    top = result["shortlist"]
    console.print(escape(f"shortlist (top {s['top_k']}): {', '.join(top) or 'nothing fits the budget'}"))
    if top:
        console.print(escape(f"train them: cakd shortlist --apply {len(top)} --from {result.get('path', 'PATH')} "
                             "&& dvc repro"))


def apply_top(result: dict, k: int, params_path: Path, known: KnownNames | None) -> list[str]:
    """Write the top ``k`` ranked candidates into params.yaml's ``students:`` (the rest of the file kept)."""
    ranking = result["ranking"]
    if len(ranking) < k:
        budget = _budget_text(result["settings"])
        raise CakdError(f"--apply {k}: only {len(ranking)} candidate(s) fit the budget ({budget}); apply fewer or "
                        f"relax shortlist.budget_ms / shortlist.min_speedup ({params_path} unchanged)")
    s, chosen = result["settings"], ranking[:k]
    entries = result["candidates"]
    notes = {n: (f"shortlisted #{entries[n]['rank']}: p50 {entries[n]['row']['p50_ms']:.3f} ms on {s['runtime']} "
                 f"{s['precision']}, batch {s['batch_size']}, {entries[n]['speedup']:.2f}x the teacher")
             for n in chosen}
    replace_students(params_path, {n: {"model": entries[n]["model"], "kwargs": entries[n]["kwargs"]} for n in chosen},
                     notes, known)
    console.print(escape(f"{params_path}: students are now {', '.join(chosen)}; `dvc repro` trains exactly these"))
    return chosen


def reuse(params: Params, path: Path) -> dict:
    """An earlier shortlist, refused in one line if params.yaml now says anything that would change its numbers."""
    result = read_json(path, "shortlist report")
    if not isinstance(result, dict) or result.get("key") != shortlist_key(params):
        raise CakdError(f"{path} was measured under other settings than params.yaml's now (shortlist, teacher, data, "
                        "bench timing or export): run `cakd shortlist` again")
    return result


def run(params: Params, manifest: Path, out_dir: Path, metrics: Path, params_path: Path,
        apply: int | None = None, from_report: Path | None = None, known: KnownNames | None = None,
        target: tuple[Path, Path] | None = None) -> dict:
    """Measure (or, with ``from_report``, read a shortlist measured before; with ``target``, (results, bundle),
    rank from the target's figures), print, and apply if asked."""
    profiling.mark_ready()
    if apply is not None and apply < 1:  # before the minutes of measuring and the table it prints
        raise CakdError(f"--apply takes how many candidates to train (1 or more), not {apply}")
    if params.shortlist is None:
        raise CakdError(f"{params_path} has no shortlist section: cakd shortlist needs its candidates "
                        "(shortlist.candidates, as in the shipped params.yaml)")
    if from_report is not None:
        result = reuse(params, from_report)
        result["path"] = str(from_report)
    elif target is not None:
        result = from_target(params, *target, out_dir, metrics)
    else:
        result = measure_and_write(params, manifest, out_dir, metrics)
    print_shortlist(result)
    if apply is not None:
        apply_top(result, apply, params_path, known)
    return result


def from_target(params: Params, results: Path, bundle: Path, out_dir: Path, metrics: Path) -> dict:
    """``--from-target``: the shortlist ranked from the figures the bundle's runner measured on the target, by the
    same rule and budget line, marked with the target's system info; checked in full before anything is written."""
    manifest, manifest_sha = read_manifest(bundle)
    if manifest.get("key") != shortlist_key(params):
        raise CakdError(f"{bundle} was bundled under other settings than params.yaml's now (shortlist, teacher, data, "
                        "bench timing or export): bundle and time it again")
    rows, system = read_results(results, manifest, manifest_sha)
    items = profiled(manifest, rows, manifest["settings"]["num_classes"])
    teacher = items[0].row  # the target's run settings: the runner's --threads, --rounds, --runs
    timed = {**manifest["settings"], "threads": system.get("threads"), "rounds": teacher.rounds,
             "runs": teacher.runs // max(1, teacher.rounds)}
    result = report(params, items, timed)
    plot = out_dir / "shortlist.png"
    result.update(system=system, notes=[], plot=str(plot), path=str(metrics), measured_on="target",
                  target={"results": str(results), "results_sha256": file_sha256(results), "bundle": str(bundle),
                          "manifest_sha256": manifest_sha, "cpu": system.get("cpu"), "threads": system.get("threads")})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_shortlist_plot(result, plot)
    write_json(metrics, result)
    return result


def measure_and_write(params: Params, manifest: Path, out_dir: Path, metrics: Path) -> dict:
    plot = out_dir / "shortlist.png"
    remove_outputs([metrics, plot])
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir / "work")  # what a killed run left
    started, load_before = time.perf_counter(), load_average()
    with temp_beside(out_dir / "work") as work:  # pid-marked: the next run removes it if a kill leaves it
        items, timed = measure_candidates(params, manifest, work)
    load_after = load_average()
    result = report(params, items, timed)
    warning = load_warning(load_before, load_after, params.bench.threads)
    result.update(system={**system_info(params.bench.threads), "load_before": load_before, "load_after": load_after},
                  notes=[warning] if warning else [], seconds=round(time.perf_counter() - started, 1),
                  plot=str(plot), path=str(metrics))
    write_shortlist_plot(result, plot)
    write_json(metrics, result)
    return result
