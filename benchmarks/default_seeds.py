"""The default run's students over seeds (not a test): does FBT beat each student alone by more than the seeds'
spread? Issue 19's benchmark.

    python benchmarks/default_seeds.py                  # params.yaml as shipped, seeds 0 1 2

For each seed, the default pipeline's training part through the real ``cakd`` command line, as ``dvc repro``
runs it: ``cakd prepare``, ``cakd train-teacher`` (the teacher of that seed), then for every student of
params.yaml ``cakd distill --method ce`` (the baseline) and ``cakd distill`` (params.yaml's method, FBT).
Every run is written at once to ``<results>/runs/<key>.json`` (the key: product code, params.yaml, seed,
role) and read back by a later invocation, which runs only what is missing.
Reports per student: baseline and distilled top-1 per seed, mean ± std, the paired gain per seed, and whether
the mean gain exceeds the larger of the two spreads; also each run's training seconds per epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_methods import code_hash, spread  # noqa: E402

from cakd.pipeline.files.fileio import read_json, write_json  # noqa: E402


def key_of(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Runs:
    """The runs of one invocation: results kept in ``results``, checkpoints and logs in ``work``."""

    def __init__(self, params: Path, work: Path, results: Path, threads: int) -> None:
        self.params, self.work, self.results, self.threads = params.resolve(), work, results, threads
        self.settings = key_of(code_hash(), params.read_text())

    def cakd(self, args: list[str], cwd: Path, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with log.open("w") as out:
            done = subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", *args, "--params", str(self.params)],
                                  cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        if done.returncode != 0:
            sys.exit(f"default_seeds: `cakd {args[0]}` failed, see {log}")

    def run(self, seed: int, role: str, student: str | None = None) -> dict:
        """One training run (teacher, or a student's baseline / distillation) of one seed, kept as it ends."""
        key = key_of(self.settings, seed, role, student)
        done = self.results / "runs" / f"{key}.json"
        if done.exists():
            return read_json(done, "run result")
        seed_dir = self.work / f"seed{seed}"
        if not (seed_dir / "artifacts/data/manifest.json").exists():
            self.cakd(["prepare", "-S", f"seed={seed}"], seed_dir, seed_dir / "prepare.log")
        out = seed_dir / ("artifacts/teacher" if role == "teacher" else f"artifacts/students/{student}/{role}")
        args = (["train-teacher"] if role == "teacher" else
                ["distill", "--student", student, *(["--method", "ce"] if role == "baseline" else [])])
        t0 = time.perf_counter()
        self.cakd([*args, "-S", f"seed={seed}", "--out", str(out), "--resume"], seed_dir, out / "run.log")
        metrics = read_json(out / "metrics.json", "run metrics")
        result = {"key": key, "seed": seed, "role": role, "student": student, "accuracy": metrics["accuracy"],
                  "seconds_per_epoch": metrics["seconds_per_epoch"], "epochs": metrics["epochs"],
                  "wall_seconds": time.perf_counter() - t0, "load_average": os.getloadavg()[0]}
        write_json(done, result)
        return result


def summarise(runs: list[dict], students: list[str]) -> dict:
    out = {"teacher": [r["accuracy"] for r in runs if r["role"] == "teacher"], "students": {}}
    for name in students:
        acc = {role: {r["seed"]: r["accuracy"] for r in runs if r["student"] == name and r["role"] == role}
               for role in ("baseline", "distill")}
        gain = {s: acc["distill"][s] - acc["baseline"][s] for s in acc["distill"] if s in acc["baseline"]}
        noise = max(spread(list(acc["baseline"].values())), spread(list(acc["distill"].values())))
        mean_gain = statistics.mean(gain.values())
        out["students"][name] = {
            **{role: {"per_seed": a, "mean": statistics.mean(a.values()), "std": spread(list(a.values()))}
               for role, a in acc.items()},
            "gain": {"per_seed": gain, "mean": mean_gain, "std": spread(list(gain.values()))},
            "gain_exceeds_seed_spread": mean_gain > noise and all(g > 0 for g in gain.values()),
            "seconds_per_epoch": {role: statistics.mean(r["seconds_per_epoch"] for r in runs
                                                        if r["student"] == name and r["role"] == role)
                                  for role in ("baseline", "distill")}}
    return out


def print_table(result: dict) -> None:
    teacher = result["teacher"]
    t = Table(title=f"default run over seeds (teacher {statistics.mean(teacher):.2f} ± {spread(teacher):.2f}%)")
    for col in ("student", "alone %", "with FBT %", "gain per seed", "gain mean ± std", "gain > seed spread"):
        t.add_column(col, justify="left" if col == "student" else "right")
    for name, s in result["students"].items():
        t.add_row(name, f"{s['baseline']['mean']:.2f} ± {s['baseline']['std']:.2f}",
                  f"{s['distill']['mean']:.2f} ± {s['distill']['std']:.2f}",
                  " ".join(f"{g:+.2f}" for g in s["gain"]["per_seed"].values()),
                  f"{s['gain']['mean']:+.2f} ± {s['gain']['std']:.2f}",
                  "yes" if s["gain_exceeds_seed_spread"] else "NO")
    Console(width=140).print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--work", type=Path, default=Path("~/.cache/cakd/default_seeds"))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/default_seeds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/default_seeds.json")
    args = parser.parse_args()
    import yaml

    students = list(yaml.safe_load(args.params.read_text())["students"])
    runs_of = Runs(args.params, args.work.expanduser(), args.results, args.threads)
    runs = []
    for seed in args.seeds:
        runs.append(runs_of.run(seed, "teacher"))
        runs += [runs_of.run(seed, role, name) for name in students for role in ("baseline", "distill")]
    result = summarise(runs, students)
    print_table(result)
    write_json(args.out, {"command": " ".join(sys.argv), "code": code_hash(), "seeds": args.seeds,
                          "params": yaml.safe_load(args.params.read_text()), **result, "runs": runs})


if __name__ == "__main__":
    main()
