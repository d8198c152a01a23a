"""Distillation methods side by side on real CIFAR-10 images (not a test): the comparison of issue 9.

    python benchmarks/compare_methods.py                       # default budget, both pairs, seeds 0 1 2
    python benchmarks/compare_methods.py --budget smoke --cache-dir /tmp/cakd-smoke --results /tmp/smoke

Drives the real ``cakd`` command line in subprocesses, as a user would: prepares the CIFAR-10 subsets,
trains each pair's teacher (stopping if it is below ``--min-teacher-top1`` on the test subset), then trains
the student of each pair with every method under the same recipe, epochs and seeds. Every method runs with
its defaults from params.yaml (each the reference's, see README's method section): nothing is tuned per
method or per pair.

Each finished run is written at once to ``<results>/runs/<key>.json``, the key a hash of the product code
(pipeline/**/*.py), params.yaml's recipe, the pair, budget, method and seed; a later invocation, on this
machine or another with the same code and settings, reads those and runs only what is missing. Checkpoints
and logs live in ``--cache-dir`` (a killed run resumes there).

At the end, in one process and on random images, KD and FBT training steps are timed interleaved (same load)
and FBT's assistant's new parameters counted against the student's; then one table per pair: mean ± std over
seeds, the paired difference FBT - X per seed, and issue 9's targets with the measured values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cakd.pipeline.distill import build_distiller
from cakd.pipeline.files.fileio import file_sha256, read_json, write_json
from cakd.pipeline.models import ModelSpec, create_model
from cakd.pipeline.settings.loading import load_params
from cakd.pipeline.settings.params import Params

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ce", "kd", "dkd", "fitnet", "ofa", "fbt")
DEFAULT_METHODS = ("ce", "kd", "ofa", "fbt", "dkd")  # run order: the headline methods first


@dataclass(frozen=True)
class Pair:
    """A heterogeneous teacher -> student pair and the teacher's own training recipe."""

    teacher: str
    student: str
    teacher_epochs: int
    teacher_lr: float
    teacher_batch_size: int = 128
    teacher_kwargs: dict = field(default_factory=dict)  # timm kwargs (replace params.yaml's)
    student_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    train_per_class: int  # students' training subset
    test_per_class: int  # everyone's test subset (of CIFAR-10's test split)
    epochs: int  # every student method
    teacher_train_per_class: int  # 0 = the whole training split
    teacher_epochs: int | None = None  # None = each pair's own
    min_teacher_top1: float = 60.0  # a weaker teacher stops the benchmark


PAIRS = {
    # (A) attention teacher -> CNN student (the paper's Swin-T -> ResNet18): a Swin-T narrowed and made
    # shallower (patch 4 at 32 px: 8x8 tokens, window 4) and the smallest ConvNeXt, both fast on 2 CPU cores
    "A": Pair("swin_tiny_patch4_window7_224", "convnext_atto", teacher_epochs=10, teacher_lr=1e-3,
              teacher_kwargs={"patch_size": 4, "embed_dim": 64, "depths": [2, 2, 2, 2], "num_heads": [2, 4, 8, 16]}),
    # (B) CNN teacher -> ViT student (the paper's ConvNeXt-T -> DeiT-T): DeiT-T at patch 8 (16 tokens), 8 blocks
    "B": Pair("convnext_atto", "deit_tiny_patch16_224", teacher_epochs=10, teacher_lr=2e-3,
              student_kwargs={"patch_size": 8, "depth": 8}),
}
BUDGETS = {
    # a few minutes end to end: checks the plumbing, measures nothing
    "smoke": Budget(train_per_class=20, test_per_class=10, epochs=1, teacher_train_per_class=20, teacher_epochs=1,
                    min_teacher_top1=0.0),
    # twice issue 3's image-steps (300 x 4): 600 images per class x 4 epochs, 3 seeds
    "default": Budget(train_per_class=600, test_per_class=250, epochs=4, teacher_train_per_class=0),
}


def code_hash() -> str:
    """sha256 of the product code (pipeline/**/*.py), independent of the machine and of git state."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def key_of(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cakd(args: list[str], log: Path, threads: int) -> None:
    """One ``cakd`` command in a subprocess, its output kept in ``log``; a failure ends the benchmark.
    Threads go through OMP_NUM_THREADS (torch's default when no thread count is configured)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                              env=env, cwd=ROOT)
    if done.returncode != 0:
        last = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"compare_methods: `cakd {args[0]}` failed ({log}): {last[0]}")


def kwargs_overrides(role: str, kwargs: dict) -> list[str]:
    """The whole kwargs mapping (JSON is YAML), so none of params.yaml's own kwargs leak into the pair."""
    return ["-S", f"{role}.kwargs={json.dumps(kwargs)}"]


def student_override(model: str, kwargs: dict) -> list[str]:
    """params.yaml's whole students list replaced by the pair's one student (JSON is YAML)."""
    return ["-S", f"students={json.dumps({'student': {'model': model, 'kwargs': kwargs}})}"]


class Bench:
    """The runs of one invocation: cached results under ``results``, checkpoints under ``cache``."""

    def __init__(self, args: argparse.Namespace, budget: Budget, recipe: Params, console: Console) -> None:
        self.cache, self.results = args.cache_dir.expanduser(), args.results
        self.budget, self.console, self.threads = budget, console, args.threads
        self.params = args.params
        self.code = code_hash()
        self.recipe = recipe.model_dump(mode="json", exclude={  # what a run's result depends on, not how fast
            "students": True, "teacher": True, "export": True, "deploy": True, "bench": True, "machine": True})
        self.base = ["--params", str(args.params.resolve()),
                     "-S", "data.name=imagefolder", "-S", f"data.root={args.data_root.expanduser()}",
                     "-S", "data.img_size=32", "-S", "data.hflip=true",
                     "-S", f"data.test_per_class={budget.test_per_class}"]
        self.locks = {name: threading.Lock() for name in PAIRS}
        self.prepare_lock = threading.Lock()
        self.teachers: dict[str, dict] = {}
        self.given_teachers: dict[str, Path] = dict(getattr(args, "teacher", None) or {})

    def prepare(self, train_per_class: int) -> Path:
        out = self.cache / f"data-train{train_per_class}-test{self.budget.test_per_class}"
        with self.prepare_lock:  # one preparation at a time (both pairs share the folders)
            if not (out / "manifest.json").exists():
                cakd(["prepare", *self.base, "-S", f"data.train_per_class={train_per_class}", "--out", str(out)],
                     out.with_suffix(".log"), self.threads)
        return out / "manifest.json"

    def teacher_key(self, name: str) -> str:
        """The trained teacher's identity: the given checkpoint's content, else what it was trained with."""
        if name in self.given_teachers:
            return "file-" + file_sha256(self.given_teachers[name])[:16]
        b = self.budget
        return key_of("teacher", self.code, self.recipe, asdict(PAIRS[name]), b.teacher_train_per_class,
                      b.test_per_class, b.teacher_epochs)

    def given_teacher(self, name: str) -> dict:
        """A teacher checkpoint given with --teacher PAIR=PATH, scored by the metrics.json beside it."""
        path = self.given_teachers[name]
        metrics = read_json(path.parent / "metrics.json", f"metrics of the given teacher {path}")
        return {"key": self.teacher_key(name), "path": str(path), "accuracy": metrics["accuracy"],
                "epochs": metrics.get("epochs")}

    def teacher(self, name: str) -> dict:
        """The pair's teacher: given, or trained once (its checkpoint in the cache); its result kept under results."""
        pair, b = PAIRS[name], self.budget
        with self.locks[name]:
            if name in self.teachers:
                return self.teachers[name]
            if name in self.given_teachers:
                self.teachers[name] = self.given_teacher(name)
                return self.teachers[name]
            key = self.teacher_key(name)
            out, epochs = self.cache / "teachers" / key, b.teacher_epochs or pair.teacher_epochs
            if not (out / "metrics.json").exists():
                self.console.print(f"training teacher {pair.teacher} ({epochs} epochs) -> {out}")
                manifest = self.prepare(b.teacher_train_per_class)
                cakd(["train-teacher", *self.base, "-S", f"data.train_per_class={b.teacher_train_per_class}",
                      "-S", f"teacher.model={pair.teacher}", *kwargs_overrides("teacher", pair.teacher_kwargs),
                      "-S", f"train.epochs={epochs}", "-S", f"train.lr={pair.teacher_lr}",
                      "-S", f"train.batch_size={pair.teacher_batch_size}",
                      "--data", str(manifest), "--out", str(out), "--resume"], out / "run.log", self.threads)
            metrics = read_json(out / "metrics.json", "teacher metrics")
            result = {"key": key, "path": str(out / "model.pt"), "accuracy": metrics["accuracy"], "epochs": epochs}
            write_json(self.results / "teachers" / f"{key}.json", result)
            if result["accuracy"] < b.min_teacher_top1:
                sys.exit(f"compare_methods: teacher {pair.teacher} reaches {result['accuracy']:.2f}% < "
                         f"{b.min_teacher_top1}% on the test subset; train it longer (--teacher-epochs)")
            self.teachers[name] = result
            return result

    def student(self, name: str, method: str, seed: int, overrides: tuple[str, ...] = ()) -> dict:
        """One student run (``overrides``: extra ``-S key=value`` settings, e.g. an ablation's), read from
        ``results/runs/<key>.json`` when an earlier invocation finished it."""
        pair, b = PAIRS[name], self.budget
        parts = (asdict(pair), asdict(b), method, seed) + ((list(overrides),) if overrides else ())
        if name in self.given_teachers:
            parts += (self.teacher_key(name),)
        key = key_of("student", self.code, self.recipe, *parts)
        done = self.results / "runs" / f"{key}.json"
        if done.exists():
            return read_json(done, "run result")
        teacher = self.teacher(name)
        out = self.cache / "runs" / key
        manifest = self.prepare(b.train_per_class)
        t0 = time.perf_counter()
        cakd(["distill", *self.base, "-S", f"data.train_per_class={b.train_per_class}",
              *student_override(pair.student, pair.student_kwargs),
              "-S", f"train.epochs={b.epochs}", "-S", f"distill.epochs={b.epochs}", "-S", f"seed={seed}",
              *(arg for override in overrides for arg in ("-S", override)), "--method", method,
              "--data", str(manifest), "--teacher", teacher["path"], "--out", str(out), "--resume"],
             out / "run.log", self.threads)
        metrics = read_json(out / "metrics.json", "run metrics")
        result = {"key": key, "pair": name, "method": method, "seed": seed, "overrides": list(overrides),
                  "code": self.code,
                  "teacher_key": teacher["key"], "wall_seconds": time.perf_counter() - t0,
                  "load_average": os.getloadavg()[0],
                  **{k: metrics[k] for k in ("accuracy", "assistant_accuracy", "seconds_per_epoch",
                                             "extra_parameters", "student_parameters")}}
        write_json(done, result)
        self.console.print(f"{name} {method} seed {seed}: top-1 {result['accuracy']:.2f}%")
        return result

    def teacher_accuracy(self, name: str) -> float | None:
        """From this invocation, or from the result an earlier one left (no need to retrain it)."""
        if name in self.teachers:
            return self.teachers[name]["accuracy"]
        if name in self.given_teachers:
            return self.given_teacher(name)["accuracy"]
        saved = self.results / "teachers" / f"{self.teacher_key(name)}.json"
        return read_json(saved, "teacher result")["accuracy"] if saved.exists() else None


def step_costs(pair: Pair, recipe: Params, rounds: int, threads: int) -> dict:
    """KD and FBT training steps interleaved in one process (batch of the recipe, random 32 px images, fresh
    models: the cost does not depend on the weights), median FBT/KD ratio; FBT's new parameters."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {role: create_model(ModelSpec(name, 10, 32, kwargs=kw)) for role, name, kw in (
        ("teacher", pair.teacher, pair.teacher_kwargs), ("student", pair.student, pair.student_kwargs))}
    steps, times = {}, {"kd": [], "fbt": []}
    for method in times:
        student = create_model(ModelSpec(pair.student, 10, 32, kwargs=pair.student_kwargs))
        distiller = build_distiller(method, student, models["teacher"], recipe.distill).train()
        steps[method] = (distiller, torch.optim.AdamW(distiller.trainable_parameters(), lr=1e-3))
    x = torch.randn(recipe.train.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (recipe.train.batch_size,))
    for r in range(rounds + 2):  # two warm-up rounds
        for method, (distiller, opt) in steps.items():
            t0 = time.perf_counter()
            _, losses = distiller(x, y)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            if r >= 2:
                times[method].append(time.perf_counter() - t0)
    fbt = steps["fbt"][0]
    student_params = sum(p.numel() for p in fbt.student.parameters())
    return {"kd_step_ms": 1000 * statistics.median(times["kd"]), "fbt_step_ms": 1000 * statistics.median(times["fbt"]),
            "fbt_over_kd": statistics.median(f / k for f, k in zip(times["fbt"], times["kd"], strict=True)),
            "assistant_new_parameters": fbt.assistant.num_new_parameters, "student_parameters": student_params,
            "assistant_share": fbt.assistant.num_new_parameters / student_params, "rounds": rounds}


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], teacher_accuracy: float | None, costs: dict) -> dict:
    """Per method: top-1 by seed, mean and std; per method X: FBT - X per seed; then issue 9's targets."""
    by = {(r["method"], r["seed"]): r for r in runs}
    methods = [m for m in METHODS if any(k[0] == m for k in by)]
    rows = {}
    for m in methods:
        acc = {s: r["accuracy"] for (mm, s), r in sorted(by.items()) if mm == m}
        rows[m] = {"accuracy": acc, "mean": statistics.mean(acc.values()), "std": spread(list(acc.values())),
                   "seconds_per_epoch": statistics.mean(by[m, s]["seconds_per_epoch"] for s in acc),
                   "extra_parameters": by[m, next(iter(acc))]["extra_parameters"]}
    paired = {}
    if "fbt" in rows:
        for m in methods:
            seeds = [s for s in rows["fbt"]["accuracy"] if s in rows[m]["accuracy"]]
            if m == "fbt" or not seeds:
                continue
            diff = {s: rows["fbt"]["accuracy"][s] - rows[m]["accuracy"][s] for s in seeds}
            paired[m] = {"per_seed": diff, "mean": statistics.mean(diff.values()), "std": spread(list(diff.values())),
                         "fbt_ahead_every_seed": all(d > 0 for d in diff.values())}
        assistant = [by["fbt", s]["assistant_accuracy"] for s in rows["fbt"]["accuracy"]]
        rows["fbt"]["assistant_mean"] = statistics.mean(assistant)
    return {"teacher_accuracy": teacher_accuracy, "methods": rows, "fbt_minus": paired, "costs": costs,
            "targets": targets(rows, paired, teacher_accuracy, costs)}


def targets(rows: dict, paired: dict, teacher: float | None, costs: dict) -> dict:
    """Issue 9's targets, each with its measured value."""
    out: dict[str, dict] = {}
    for m in ("ofa", "kd"):
        if m in paired:
            d = paired[m]
            out[f"fbt_minus_{m}"] = {"value": d["mean"], "target": ">= 1 and ahead on every seed",
                                     "met": d["mean"] >= 1.0 and d["fbt_ahead_every_seed"]}
    if "fbt" in rows and teacher is not None:
        a, s = rows["fbt"]["assistant_mean"], rows["fbt"]["mean"]
        out["assistant_between"] = {"value": [s, a, teacher], "target": "student < assistant < teacher",
                                    "met": s < a < teacher}
    out["fbt_step_over_kd"] = {"value": costs["fbt_over_kd"], "target": "<= 1.5", "met": costs["fbt_over_kd"] <= 1.5}
    out["assistant_new_params_share"] = {"value": costs["assistant_share"], "target": "<= 0.10",
                                         "met": costs["assistant_share"] <= 0.10}
    return out


def tables(name: str, pair: Pair, result: dict) -> list[Table]:
    teacher = result["teacher_accuracy"]
    t = Table(title=f"{name}: {pair.teacher} (teacher, {'?' if teacher is None else f'{teacher:.2f}'}%) -> "
                    f"{pair.student}")
    for col in ("method", "top-1 % mean ± std", "per seed", "FBT - X per seed", "FBT - X mean ± std", "s/epoch",
                "extra params"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m, row in result["methods"].items():
        d = result["fbt_minus"].get(m)
        t.add_row(m, f"{row['mean']:.2f} ± {row['std']:.2f}", " ".join(f"{v:.2f}" for v in row["accuracy"].values()),
                  "" if d is None else " ".join(f"{v:+.2f}" for v in d["per_seed"].values()),
                  "" if d is None else f"{d['mean']:+.2f} ± {d['std']:.2f}", f"{row['seconds_per_epoch']:.1f}",
                  f"{row['extra_parameters']:,}")
    goals = Table(title=f"{name}: targets")
    for col in ("target", "value", "goal", "met"):
        goals.add_column(col)
    for key, goal in result["targets"].items():
        value = goal["value"]
        shown = " < ".join(f"{v:.2f}" for v in value) if isinstance(value, list) else f"{value:.3f}"
        goals.add_row(key, shown, goal["target"], "yes" if goal["met"] else "NO")
    return [t, goals]


def teacher_item(item: str) -> tuple[str, Path]:
    pair, sep, path = item.partition("=")
    if not sep or pair not in PAIRS or not Path(path).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"--teacher takes PAIR=PATH with PAIR in {sorted(PAIRS)} and an existing "
                                         f"checkpoint, got {item!r}")
    return pair, Path(path).expanduser()


def add_bench_options(parser: argparse.ArgumentParser, name: str) -> None:
    """The options every script driving ``Bench`` shares; ``name`` names its results folder and JSON."""
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default")
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--data-root", type=Path, default=Path("~/.cache/cakd/cifar10-jpg"))
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/cakd/bench"))
    parser.add_argument("--results", type=Path, default=ROOT / f"benchmarks/results/{name}",
                        help="one JSON per finished run (kept in git: a later run continues from them)")
    parser.add_argument("--out", type=Path, default=ROOT / f"benchmarks/results/{name}.json")
    parser.add_argument("--teacher", type=teacher_item, action="append", default=[], metavar="PAIR=PATH",
                        help="use this trained teacher checkpoint for the pair (its metrics.json beside it gives "
                             "its accuracy) instead of training one; runs are then keyed by its content")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_options(parser, "compare_methods")
    parser.add_argument("--epochs", type=int, help="override the budget's student epochs")
    parser.add_argument("--train-per-class", type=int, help="override the budget's student subset")
    parser.add_argument("--teacher-epochs", type=int, help="override every pair's teacher epochs")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--step-rounds", type=int, default=20, help="timed KD/FBT step pairs per pair")
    args = parser.parse_args()

    recipe = load_params(args.params)
    overrides = {"epochs": args.epochs, "train_per_class": args.train_per_class, "teacher_epochs": args.teacher_epochs}
    budget = replace(BUDGETS[args.budget], **{k: v for k, v in overrides.items() if v is not None})
    console = Console(stderr=True, soft_wrap=True)
    bench = Bench(args, budget, recipe, console)
    start = time.perf_counter()
    # headline methods first, seed by seed: an interrupted benchmark still compares them over every seed
    jobs = [(name, m, seed) for seed in args.seeds for m in args.methods for name in args.pairs]
    with ThreadPoolExecutor(args.jobs) as pool:  # one cakd process per job; threads only wait on them
        runs = list(pool.map(lambda job: bench.student(*job), jobs))
    results = {}
    for name in args.pairs:
        costs = step_costs(PAIRS[name], recipe, args.step_rounds, args.threads)
        results[name] = summarise([r for r in runs if r["pair"] == name], bench.teacher_accuracy(name), costs)
        for t in tables(name, PAIRS[name], results[name]):
            Console(width=150).print(t)
    write_json(args.out, {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "code": bench.code,
        "budget": {"name": args.budget, **asdict(budget)}, "seeds": args.seeds, "threads": args.threads,
        "jobs": args.jobs, "pairs": {name: asdict(PAIRS[name]) for name in args.pairs}, "recipe": bench.recipe,
        "wall_seconds": time.perf_counter() - start, "results": results, "runs": runs,
    })
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
