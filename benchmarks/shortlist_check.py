"""Is the shortlist's latency the trained student's? (issue 21; not a test)

    python benchmarks/shortlist_check.py --dataset digits               # the default pipeline on digits, 12 px
    python benchmarks/shortlist_check.py --dataset cifar10              # CIFAR-10 image folder at 32 px
    python benchmarks/shortlist_check.py --dataset digits --epochs 1 --teacher-epochs 1 \\
        --set 'deploy.runtimes=[onnxruntime]' --set 'bench.batch_sizes=[1]'     # a quick end-to-end check

In a fresh git + DVC project (this repository's dvc.yaml and code, params.yaml as shipped plus the dataset's
and ``--set``'s overrides) it runs the documented flow as a user would:

    dvc repro shortlist                                             # prepare, then the shortlist, recorded by DVC
    cakd shortlist --apply K --from reports/shortlist.json          # the top K become params.yaml's students
    dvc repro                                                       # trains, exports and benches exactly those

then compares, per trained student, the shortlist's p50 (untrained network, ``shortlist.runtime`` /
``precision`` / ``batch_size``) with the bench's p50 of the trained student's export on the same runtime,
precision, artefact and batch. A student agrees when the bench's p50 lies within the shortlist's round spread
(min-max of its per-round p50s) or within ``--tolerance`` (15%) of the shortlist's p50. Both measurements
record the machine's load average; numbers taken on a loaded machine say little (see benchmarks/README.md).
Results go to ``--out`` under the dataset's key (a second dataset's run adds its entry).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from cakd.pipeline.files.fileio import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
MARK = ".shortlist_check"  # a work folder this script made (and may empty)
DATASETS = {
    "digits": [],  # params.yaml as shipped: bundled digits at 12 px
    "cifar10": ["data.name=imagefolder", f"data.root={Path('~/.cache/cakd/cifar10-jpg').expanduser()}",
                "data.img_size=32", "data.hflip=true"],
}
GIT = ["git", "-c", "user.name=cakd", "-c", "user.email=cakd@localhost"]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}


def sh(cmd: list[str], cwd: Path, log: Path) -> float:
    """Run one command of the flow, its output appended to the log; stop with the log's tail if it fails."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed ({code}); the end of {log}:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started


def overrides(args: argparse.Namespace) -> list[str]:
    sizes = [] if args.dataset == "digits" else [f"data.train_per_class={args.train_per_class}",
                                                 f"data.test_per_class={args.test_per_class}"]
    epochs = [f"distill.epochs={args.epochs}"] if args.epochs else []
    epochs += [f"train.epochs={args.teacher_epochs}"] if args.teacher_epochs is not None else []
    return DATASETS[args.dataset] + sizes + epochs + [f"shortlist.top_k={args.top_k}"] + list(args.set or [])


def new_project(folder: Path, assignments: list[str]) -> Path:
    """A git + DVC repository holding this repository's pipeline, with the overrides written into params.yaml."""
    from cakd.pipeline.settings.overrides import apply_override

    if folder.exists():
        if not (folder / MARK).exists():
            sys.exit(f"{folder} exists and was not made by this script: give another --workdir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARK).touch()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, folder / name)
    for package in ("pipeline", "export"):
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    for assignment in assignments:
        apply_override(tree, assignment)
    (folder / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=folder, check=True, env=ENV)
    subprocess.run([*GIT, "add", "-A"], cwd=folder, check=True)
    subprocess.run([*GIT, "commit", "-qm", "pipeline"], cwd=folder, check=True)
    return folder


def compare(short: dict, bench: dict, students: list[str], tolerance: float) -> list[dict]:
    """Per student: the shortlist's p50 and spread, the bench's p50 and spread on the same runtime, precision,
    artefact and batch, and whether they agree."""
    s = short["settings"]
    key = (s["runtime"], s["precision"], s["artefact"], s["batch_size"])
    rows = {r["model"]: r for r in bench["rows"]
            if (r["runtime"], r["precision"], r["artefact"], r["batch_size"]) == key}
    found = []
    for name in students:
        predicted, measured = short["candidates"][name]["row"], rows.get(name)
        entry = {"student": name, "model": short["candidates"][name]["model"],
                 "kwargs": short["candidates"][name]["kwargs"], "shortlist_p50_ms": predicted["p50_ms"],
                 "shortlist_round_p50s_ms": [predicted["p50_round_min_ms"], predicted["p50_round_max_ms"]],
                 "bench_p50_ms": None, "bench_round_p50s_ms": None, "ratio": None, "agrees": False,
                 "why": f"the bench has no {'/'.join(map(str, key))} row for it"}
        if measured and measured.get("p50_ms") is not None:
            p50 = measured["p50_ms"]
            in_spread = predicted["p50_round_min_ms"] <= p50 <= predicted["p50_round_max_ms"]
            ratio = p50 / predicted["p50_ms"]
            close = abs(ratio - 1) <= tolerance
            entry.update(bench_p50_ms=p50, bench_round_p50s_ms=[measured["p50_round_min_ms"],
                                                                 measured["p50_round_max_ms"]],
                         ratio=ratio, agrees=in_spread or close,
                         why="within the shortlist's round spread" if in_spread else
                         f"{'within' if close else 'outside'} {tolerance:.0%} of the shortlist's p50")
        found.append(entry)
    return found


def print_comparison(result: dict) -> None:
    s = result["shortlist_settings"]
    table = Table(title=f"{result['dataset']}: shortlisted (untrained) vs trained student, {s['runtime']} "
                        f"{s['precision']} batch {s['batch_size']}, p50 ms [round p50s]")
    for name in ("student", "architecture", "shortlist", "bench (trained)", "bench / shortlist", "agrees"):
        table.add_column(name)
    for e in result["students"]:
        spread = e["shortlist_round_p50s_ms"]
        bench = "-" if e["bench_p50_ms"] is None else (
            f"{e['bench_p50_ms']:.3f} [{e['bench_round_p50s_ms'][0]:.3f}-{e['bench_round_p50s_ms'][1]:.3f}]")
        verdict = f"{'yes' if e['agrees'] else 'no'}: {e['why']}"
        table.add_row(e["student"], f"{e['model']} {e['kwargs']}",
                      f"{e['shortlist_p50_ms']:.3f} [{spread[0]:.3f}-{spread[1]:.3f}]", bench,
                      "-" if e["ratio"] is None else f"{e['ratio']:.2f}", verdict)
    console = Console(width=200)
    console.print(table)
    console.print(f"load average: shortlist {result['load']['shortlist']}, bench {result['load']['bench']}; "
                  f"shortlist stage {result['shortlist_seconds']} s for {result['candidates']} candidates of "
                  f"{result['families']} families; whole flow {result['seconds']['total']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--top-k", type=int, default=2, help="students to apply and train")
    parser.add_argument("--epochs", type=int, default=None, help="distill.epochs (default: params.yaml's)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="train.epochs (default: params.yaml's)")
    parser.add_argument("--train-per-class", type=int, default=100, help="cifar10: training images per class")
    parser.add_argument("--test-per-class", type=int, default=20, help="cifar10: test images per class")
    parser.add_argument("--tolerance", type=float, default=0.15)
    parser.add_argument("--set", action="append", help="another params override key.path=value (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="the project folder (default: ~/.cache/cakd/shortlist_check/DATASET)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/shortlist_check.json")
    args = parser.parse_args()

    assignments = overrides(args)
    project = new_project(args.workdir or Path(f"~/.cache/cakd/shortlist_check/{args.dataset}").expanduser(),
                          assignments)
    log = project / "run.log"
    seconds = {"shortlist": sh(["dvc", "repro", "shortlist"], project, log)}
    seconds["apply"] = sh(["cakd", "shortlist", "--apply", str(args.top_k), "--from", "reports/shortlist.json"],
                          project, log)
    seconds["repro"] = sh(["dvc", "repro"], project, log)
    seconds["total"] = sum(seconds.values())
    short = read_json(project / "reports/shortlist.json")
    bench = read_json(project / "artifacts/bench/bench.json")
    trained = list(json.loads((project / "reports/summary.json").read_text())["students"])
    applied = short["ranking"][:args.top_k]
    result = {"dataset": args.dataset, "overrides": assignments, "tolerance": args.tolerance,
              "trained_exactly_the_applied": sorted(trained) == sorted(applied), "applied": applied,
              "students": compare(short, bench, applied, args.tolerance), "shortlist_settings": short["settings"],
              "candidates": len(short["candidates"]),
              "families": len({e["family"] for e in short["candidates"].values()}),
              "shortlist_seconds": short["seconds"], "seconds": seconds,
              "load": {"shortlist": [short["system"]["load_before"], short["system"]["load_after"]],
                       "bench": [bench["system"]["load_before"], bench["system"]["load_after"]]},
              "cpu": short["system"].get("cpu"), "timestamp": bench["system"].get("timestamp"),
              "shortlist": short, "workdir": str(project)}
    print_comparison(result)
    everything = read_json(args.out) if args.out.is_file() else {}
    write_json(args.out, {**everything, args.dataset: result})
    print(f"written: {args.out} [{args.dataset}]; the project and its run.log: {project}")


if __name__ == "__main__":
    main()
