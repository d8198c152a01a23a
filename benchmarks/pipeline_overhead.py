"""Where the default ``dvc repro``'s wall time goes (not a test): issue 19's measurement.

    python benchmarks/pipeline_overhead.py                       # this commit, this virtualenv's cakd
    python benchmarks/pipeline_overhead.py --rev e86c723 --venv /path/to/venv-with-that-commit

Clones the repository at ``--rev`` into a temporary folder (a fresh clone: no artefacts, no DVC cache) and runs
``dvc repro`` there with ``--venv``'s ``cakd`` (install that venv from the same commit). Each stage's wall time
is taken from outside by a small ``cakd`` shim first on PATH (so any commit can be measured); processes of a
cakd that has ``cakd.pipeline.reporting.profiling`` also report, with ``CAKD_PROFILE``, their start-up/import time
and the seconds of each phase: data, training (the optimisation epochs), evaluation, export (ONNX export, parity,
INT8 calibration and gates), timing (runtime loading, accuracy per runtime, timed calls) and reports. What no
phase covers is ``other``; the time between stages is DVC's. Writes a table and ``--out`` (JSON).
Run it on an otherwise idle machine: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {  # the split: phase names as cakd.pipeline.reporting.profiling records them -> column
    "data": "data", "training": "training", "evaluation": "evaluation",
    "onnx-export": "export", "parity": "export", "int8-calibration": "export", "int8-gate": "export",
    "runtime-load": "timing", "bench-accuracy": "timing", "timing": "timing", "reports": "reports",
}
COLUMNS = ["startup", "data", "training", "evaluation", "export", "timing", "reports", "other"]
SHIM = """#!{python}
import json, os, subprocess, sys, time
start = time.time()
code = subprocess.call([{cakd!r}, *sys.argv[1:]])
with open({log!r}, "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "started": start, "wall_s": time.time() - start}}) + "\\n")
sys.exit(code)
"""


def stage_name(argv: list[str]) -> str:
    """A readable stage name from a cakd command line (``distill --student deit --method ce`` -> baseline@deit)."""
    command = argv[0]
    student = argv[argv.index("--student") + 1] if "--student" in argv else None
    out = argv[argv.index("--out") + 1] if "--out" in argv else ""
    if command == "distill":
        return f"{'baseline' if 'ce' in argv else 'distill'}@{student or out}"
    if command == "export":
        return f"export@{Path(out).name}"
    return f"{command}@{student}" if student else command


def run_pipeline(clone: Path, venv: Path, work: Path) -> tuple[float, list[dict], list[dict]]:
    """``dvc repro`` in the clone through the shim; returns (wall seconds, shim lines, profile lines)."""
    shim_dir, shim_log, profile = work / "bin", work / "shim.jsonl", work / "profile.jsonl"
    shim_dir.mkdir()
    (shim_dir / "cakd").write_text(SHIM.format(python=sys.executable, cakd=str(venv / "bin" / "cakd"),
                                               log=str(shim_log)))
    (shim_dir / "cakd").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim_dir}:{venv / 'bin'}:{os.environ['PATH']}", "CAKD_PROFILE": str(profile),
           "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []  # noqa: E731
    return wall, read(shim_log), read(profile)


def split(shim: list[dict], profile: list[dict]) -> list[dict]:
    """One row per stage: its wall time split into the columns (profile lines matched by arguments)."""
    rows = []
    by_argv = {json.dumps(p["argv"]): p for p in profile}
    for line in shim:
        prof = by_argv.get(json.dumps(line["argv"]))
        row = {"stage": stage_name(line["argv"]), "wall": line["wall_s"], **dict.fromkeys(COLUMNS, 0.0)}
        if prof is None:  # a cakd without the profiler: only the wall time is known
            row["other"] = line["wall_s"]
        else:
            row["startup"] = prof["startup_s"]
            for name, seconds in prof["phases"].items():
                row[GROUPS.get(name, "other")] += seconds
            row["other"] = line["wall_s"] - sum(row[c] for c in COLUMNS if c != "other")
        rows.append(row)
    return rows


def print_rows(rows: list[dict], wall: float) -> None:
    table = Table(title=f"dvc repro on a fresh clone: {wall:.0f} s wall (seconds per stage)")
    for col in ["stage", "wall", *COLUMNS]:
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in rows + [total_row(rows, wall)]:
        table.add_row(row["stage"], *(f"{row[c]:.1f}" for c in ["wall", *COLUMNS]))
    Console(width=160).print(table)


def total_row(rows: list[dict], wall: float) -> dict:
    total = {"stage": "all stages", "wall": sum(r["wall"] for r in rows)}
    total.update({c: sum(r[c] for r in rows) for c in COLUMNS})
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="commit to clone and run")
    parser.add_argument("--venv", type=Path, default=Path(sys.prefix), help="virtualenv whose cakd runs the stages")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/pipeline_overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cakd-overhead-") as tmp:
        work, clone = Path(tmp), Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", args.rev], cwd=clone, check=True)
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                             check=True).stdout.strip()
        load_before = os.getloadavg()[0]
        wall, shim, profile = run_pipeline(clone, args.venv.resolve(), work)
        load_after = os.getloadavg()[0]
        shutil.rmtree(clone, ignore_errors=True)
    rows = split(shim, profile)
    print_rows(rows, wall)
    total = total_row(rows, wall)
    profiled = bool(profile)  # a commit before cakd's profiling module reports no phases: its split is unknown
    training = total["training"] if profiled else None
    result = {"rev": rev, "venv": str(args.venv), "wall_s": wall, "dvc_s": wall - total["wall"], "profiled": profiled,
              "training_s": training, "non_training_share": None if training is None else (wall - training) / wall,
              "load_before": load_before, "load_after": load_after, "stages": rows, "total": total}
    share = ("unknown (this commit reports no phases)" if training is None else
             f"{100 * result['non_training_share']:.0f}% (training {training:.0f} s)")
    Console().print(f"{wall:.0f} s wall: non-training {share}; DVC between stages {result['dvc_s']:.0f} s; "
                    f"load average {load_before:.2f} -> {load_after:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
