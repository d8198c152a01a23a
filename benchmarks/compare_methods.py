"""Distillation methods side by side on real images (not a test): the comparison of issue 3.

    python benchmarks/compare_methods.py --budget default --seeds 0 1 \\
        --out benchmarks/results/compare_methods.json

Drives the real ``cakd`` command line in subprocesses, as a user would: prepares the CIFAR-10 image folder
subsets once, trains (or reuses) each pair's teacher, then trains the student of each pair with every method
(ce, kd, dkd, fitnet, ofa, fbt) under the same recipe, epochs and seeds, and collects each run's
``metrics.json``. Every method runs with its defaults from params.yaml: nothing is tuned per method.

Runs are cached by output folder under ``--cache-dir``: a folder with a ``metrics.json`` is read, not re-run,
and a killed run continues from its checkpoint, so an interrupted benchmark picks up where it stopped.
Teachers are trained on the whole training split (standing in for the pre-trained teachers of the paper),
students on a per-class subset of it; both are scored on the same test subset.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.distill.fbt import load_assistant
from pipeline.fileio import read_json, write_json
from pipeline.models import load_model
from pipeline.params import load_params

HEADLINE, OTHERS = ("ce", "kd", "fbt", "ofa"), ("dkd", "fitnet")  # run order
METHODS = HEADLINE + OTHERS
SHOWN = ("ce", "kd", "dkd", "fitnet", "ofa", "fbt")


@dataclass(frozen=True)
class Pair:
    """A heterogeneous teacher -> student pair and the teacher's own (cached) training recipe."""

    teacher: str
    student: str
    teacher_epochs: int
    teacher_lr: float
    teacher_batch_size: int = 128
    teacher_kwargs: dict = field(default_factory=dict)  # extra timm kwargs (replace params.yaml's)
    student_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    train_per_class: int  # students' training subset
    test_per_class: int  # everyone's test subset
    epochs: int  # every student method
    teacher_train_per_class: int  # 0 = the whole training split
    teacher_epochs: int | None = None  # None = each pair's own


PAIRS = {
    # (A) attention teacher -> CNN student (the paper's Swin-T -> ResNet18, with a student 2 CPU cores can train:
    # ResNet18's CIFAR stem costs ~1.7 GFLOP per training image at 32 px)
    "swin-convnext": Pair("swin_tiny_patch4_window7_224", "convnext_atto", teacher_epochs=2, teacher_lr=1e-3,
                          teacher_kwargs={"patch_size": 4}),
    # (B) CNN teacher -> ViT student (the paper's ConvNeXt-T -> DeiT-T, at patch 8 (16 tokens) and 8 blocks)
    "convnext-deit": Pair("convnext_atto", "deit_tiny_patch16_224", teacher_epochs=4, teacher_lr=2e-3,
                          student_kwargs={"patch_size": 8, "depth": 8}),
}
BUDGETS = {
    # a few minutes end to end: checks the plumbing, measures nothing
    "smoke": Budget(train_per_class=20, test_per_class=10, epochs=1, teacher_train_per_class=20, teacher_epochs=1),
    # <= 60 min on 2 CPU cores with the teachers cached (2 pairs x 6 methods x 2 seeds)
    "default": Budget(train_per_class=300, test_per_class=250, epochs=4, teacher_train_per_class=0),
}


def cakd(args: list[str], log: Path) -> None:
    """One ``cakd`` command in a subprocess, its output kept in ``log``; a failure ends the benchmark."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        last = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"compare_methods: `cakd {' '.join(args[:1])}` failed ({log}): {last[0]}")


def kwargs_overrides(role: str, kwargs: dict) -> list[str]:
    """The whole kwargs mapping (JSON is YAML), so none of params.yaml's own kwargs leak into the pair."""
    return ["-S", f"{role}.kwargs={json.dumps(kwargs)}"]


def kwargs_tag(kwargs: dict) -> str:
    return "".join(f"-{key}{value}" for key, value in kwargs.items())


class Bench:
    def __init__(self, args: argparse.Namespace, budget: Budget, console: Console) -> None:
        self.cache = args.cache_dir.expanduser()
        self.budget = budget
        self.console = console
        self.base = ["--params", str(args.params),
                     "-S", "data.name=imagefolder", "-S", f"data.root={args.data_root.expanduser()}",
                     "-S", "data.img_size=32", "-S", "data.hflip=true",
                     "-S", f"data.test_per_class={budget.test_per_class}", "-S", f"runtime.threads={args.threads}"]

    def prepare(self, train_per_class: int) -> Path:
        out = self.cache / f"data-train{train_per_class}-test{self.budget.test_per_class}"
        if not (out / "manifest.json").exists():
            cakd(["prepare", *self.base, "-S", f"data.train_per_class={train_per_class}", "--out", str(out)],
                 out.with_suffix(".log"))
        return out / "manifest.json"

    def teacher(self, pair: Pair) -> dict:
        """Train the pair's teacher once; later calls (and later benchmarks) reuse its folder."""
        b = self.budget
        epochs = b.teacher_epochs or pair.teacher_epochs
        out = self.cache / (f"teacher-{pair.teacher}{kwargs_tag(pair.teacher_kwargs)}"
                            f"-train{b.teacher_train_per_class}-test{b.test_per_class}-e{epochs}")
        if not (out / "metrics.json").exists():
            self.console.print(f"training teacher {pair.teacher} ({epochs} epochs) -> {out}")
            manifest = self.prepare(b.teacher_train_per_class)
            cakd(["train-teacher", *self.base, "-S", f"data.train_per_class={b.teacher_train_per_class}",
                  "-S", f"teacher.model={pair.teacher}", *kwargs_overrides("teacher", pair.teacher_kwargs),
                  "-S", f"train.epochs={epochs}", "-S", f"train.lr={pair.teacher_lr}",
                  "-S", f"train.batch_size={pair.teacher_batch_size}",
                  "--data", str(manifest), "--out", str(out), "--resume"], out / "run.log")
        return {"path": str(out / "model.pt"), **read_json(out / "metrics.json", "teacher metrics")}

    def student(self, name: str, pair: Pair, teacher: Path, method: str, seed: int) -> dict:
        """One student run (cached by folder); adds the load average around it and FBT's L2G size."""
        b = self.budget
        out = self.cache / "runs" / name / f"train{b.train_per_class}-test{b.test_per_class}-e{b.epochs}" / \
            f"{method}-seed{seed}"
        if not (out / "metrics.json").exists():
            manifest = self.prepare(b.train_per_class)
            load_before, t0 = os.getloadavg()[0], time.perf_counter()
            cakd(["distill", *self.base, "-S", f"data.train_per_class={b.train_per_class}",
                  "-S", f"students.bench={json.dumps({'model': pair.student, 'kwargs': pair.student_kwargs})}",
                  "--student", "bench",
                  "-S", f"train.epochs={b.epochs}", "-S", f"distill.epochs={b.epochs}", "-S", f"seed={seed}",
                  "--method", method,
                  "--data", str(manifest), "--teacher", str(teacher), "--out", str(out), "--resume"],
                 out / "run.log")
            write_json(out / "bench.json", {"load_before": load_before, "load_after": os.getloadavg()[0],
                                            "wall_seconds": time.perf_counter() - t0})
            self.console.print(f"{name} {method} seed {seed} done")
        metrics = read_json(out / "metrics.json", "run metrics")
        bench = read_json(out / "bench.json", "run timing") if (out / "bench.json").exists() else {}
        if method == "fbt":
            assistant = load_assistant(out / "extras.pt", load_model(teacher), load_model(out / "model.pt"))
            metrics["assistant_new_parameters"] = assistant.num_new_parameters
        return {**metrics, **bench, "seed": seed, "dir": str(out)}


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(pair: Pair, teacher: dict, runs: list[dict]) -> dict:
    """Per method: top-1 mean and std over seeds, gain over CE, s/epoch, extra params; then the targets."""
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)
    rows = {}
    for method in SHOWN:
        found = by_method.get(method, [])
        if not found:
            continue
        acc = [r["accuracy"] for r in found]
        row = {"seeds": [r["seed"] for r in found], "accuracy": acc, "mean": statistics.mean(acc),
               "std": spread(acc), "seconds_per_epoch": statistics.mean(r["seconds_per_epoch"] for r in found),
               "extra_parameters": found[0]["extra_parameters"],
               "student_parameters": found[0]["student_parameters"]}
        if method == "fbt":
            row["assistant_accuracy"] = [r["assistant_accuracy"] for r in found]
            row["assistant_mean"] = statistics.mean(row["assistant_accuracy"])
            row["assistant_new_parameters"] = found[0]["assistant_new_parameters"]
        rows[method] = row
    if "ce" in rows:
        for row in rows.values():
            row["gain_over_ce"] = row["mean"] - rows["ce"]["mean"]
    return {"teacher": pair.teacher, "student": pair.student, "teacher_accuracy": teacher["accuracy"],
            "teacher_epochs": teacher["epochs"], "methods": rows, "targets": targets(teacher, rows, runs)}


def targets(teacher: dict, rows: dict, runs: list[dict]) -> dict:
    """Issue 3's targets, each with the measured value (None when a needed method has not run)."""
    out: dict[str, dict] = {}
    fbt = rows.get("fbt")
    if fbt is None:
        return out
    for other, margin in (("ofa", 1.0), ("kd", 2.0)):
        if other in rows:
            gap = fbt["mean"] - rows[other]["mean"]
            out[f"fbt_minus_{other}"] = {"value": gap, "target": f">= {margin}", "met": gap >= margin}
    a = fbt["assistant_mean"]
    out["assistant_between"] = {"value": {"teacher": teacher["accuracy"], "assistant": a, "student": fbt["mean"]},
                                "target": "student < assistant < teacher",
                                "met": fbt["mean"] < a < teacher["accuracy"]}
    # step-time ratio from runs of the same seed done back to back (KD then FBT), so both see the same load
    seconds = {(r["method"], r["seed"]): r["seconds_per_epoch"] for r in runs}
    ratios = [seconds["fbt", s] / seconds["kd", s] for m, s in seconds if m == "fbt" and ("kd", s) in seconds]
    if ratios:
        ratio = statistics.mean(ratios)
        out["fbt_step_over_kd_step"] = {"value": ratio, "target": "<= 1.5", "met": ratio <= 1.5}
    share = fbt["assistant_new_parameters"] / fbt["student_parameters"]
    out["assistant_new_params_share"] = {"value": share, "target": "<= 0.10", "met": share <= 0.10}
    return out


def table(name: str, result: dict) -> Table:
    t = Table(title=f"{name}: {result['teacher']} (teacher, {result['teacher_accuracy']:.2f}%) -> "
                    f"{result['student']}")
    for col in ("method", "top-1 % (mean ± std)", "gain over CE", "s/epoch", "extra params", "assistant top-1 %"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for method, row in result["methods"].items():
        gain = row.get("gain_over_ce")
        t.add_row(method, f"{row['mean']:.2f} ± {row['std']:.2f}", "-" if gain is None else f"{gain:+.2f}",
                  f"{row['seconds_per_epoch']:.1f}", f"{row['extra_parameters']:,}",
                  f"{row['assistant_mean']:.2f}" if "assistant_mean" in row else "")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default")
    parser.add_argument("--epochs", type=int, help="override the budget's student epochs")
    parser.add_argument("--train-per-class", type=int, help="override the budget's student subset")
    parser.add_argument("--test-per-class", type=int, help="override the budget's test subset")
    parser.add_argument("--teacher-epochs", type=int, help="override every pair's teacher epochs")
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (runtime.threads)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data-root", type=Path, default=Path("~/.cache/cakd/cifar10-jpg"))
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/cakd/bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compare_methods.json"))
    args = parser.parse_args()

    recipe = load_params(args.params)  # what every run reads besides the overrides here: recorded in the JSON
    budget = BUDGETS[args.budget]
    overrides = {"epochs": args.epochs, "train_per_class": args.train_per_class,
                 "test_per_class": args.test_per_class, "teacher_epochs": args.teacher_epochs}
    budget = replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    console = Console(stderr=True, soft_wrap=True)
    bench = Bench(args, budget, console)
    start = time.perf_counter()

    with ThreadPoolExecutor(args.jobs) as pool:  # one cakd process per job; threads only wait on them
        teachers = dict(zip(args.pairs, pool.map(lambda name: bench.teacher(PAIRS[name]), args.pairs),
                            strict=True))
        teachers_done = time.perf_counter()
        # the headline methods first, seed by seed, so an interrupted benchmark still compares CE, KD, OFA and
        # FBT over every seed; KD and FBT of a seed go back to back so their step times see the same load
        jobs = [(name, method, seed) for group in (HEADLINE, OTHERS) for seed in args.seeds for name in args.pairs
                for method in group if method in args.methods]
        done = pool.map(lambda job: bench.student(job[0], PAIRS[job[0]], Path(teachers[job[0]]["path"]), job[1],
                                                  job[2]), jobs)
        runs: dict[str, list[dict]] = {name: [] for name in args.pairs}
        for (name, method, seed), run in zip(jobs, done, strict=True):
            runs[name].append(run)
            console.print(f"{name} {method} seed {seed}: top-1 {run['accuracy']:.2f}%  "
                          f"{run['seconds_per_epoch']:.1f} s/epoch")

    results = {name: summarise(PAIRS[name], teachers[name], runs[name]) for name in args.pairs}
    for name, result in results.items():
        Console().print(table(name, result))
    write_json(args.out, {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "budget": {"name": args.budget, **asdict(budget)}, "seeds": args.seeds, "threads": args.threads,
        "jobs": args.jobs,
        "pairs": {name: asdict(PAIRS[name]) for name in args.pairs},
        "recipe": {"train": recipe.train.model_dump(exclude={"epochs"}),
                   "distill": recipe.distill.model_dump(),
                   "augment": recipe.data.model_dump(include={"augment", "mixup", "cutmix", "label_smoothing"})},
        "wall_seconds": {"teachers": teachers_done - start, "students": time.perf_counter() - teachers_done,
                         "student_runs_when_trained": sum(r.get("wall_seconds", 0.0) for rs in runs.values()
                                                          for r in rs)},
        "load_average_end": os.getloadavg(), "results": results, "runs": runs,
    })
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
