"""Does the target pick other students than this machine, and does the pick hold? (issue 32; not a test)

    python benchmarks/target_check.py --dataset digits                 # the default flow: bundled digits, 12 px
    python benchmarks/target_check.py --dataset cifar10                # CIFAR-10 image folder at 32 px
    python benchmarks/target_check.py --dataset digits --candidates 3 --rounds 3 --runs 10 --epochs 1   # tiny

In a fresh project (params.yaml as shipped plus the dataset's and ``--set``'s overrides) it plays a target with
a torch-free environment (numpy, Pillow, onnxruntime only: ``tests/minimal_env.py``) at 1 thread, and reports:

- the shortlist timed here at 2 threads (``cakd shortlist``) against the one ranked from the 1-thread target's
  figures (``cakd shortlist --bundle`` -> ``run.py --bench --threads 1`` -> ``--from-target``): both tables and
  whether the top two differ;
- how often the top two change over ``--repeats`` (3) timings of the same bundle on the same target, with the
  p50-only rule (before issue 32's item 5) and with the budget line's uncertainty (after), from the same figures;
- for the top student (trained for ``--epochs`` with ``--method ce``: latency is the architecture's, not the
  method's, and exported by ``cakd export``): the target p50 the shortlist predicted against the one its export's
  ``run.py --bench`` measures there after training, with both round spreads and their ratio.

Both "machines" are this one, so the 2-thread/1-thread difference is the only hardware difference; a real
target gives the real one. Results go to ``--out`` under the dataset's key.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/minimal_env.py: the same offline torch-free environment the tests build

from cakd.export.decide.profile import judge, rank  # noqa: E402
from cakd.export.decide.target import profiled, read_manifest, read_results  # noqa: E402
from cakd.pipeline.files.fileio import read_json, write_json  # noqa: E402
from tests.minimal_env import clean_env, minimal_env  # noqa: E402

ORT_ENV = ["numpy", "pillow", "onnxruntime", "flatbuffers", "packaging", "protobuf"]
DATASETS = {"digits": [], "cifar10": ["data.name=imagefolder", "data.root=" + str(Path(
    "~/.cache/cakd/cifar10-jpg").expanduser()), "data.img_size=32"]}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cakd(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"cakd {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stderr


def project(folder: Path, args: argparse.Namespace) -> Path:
    """params.yaml as shipped, the overrides applied, the first ``--candidates`` candidates kept; prepared."""
    from cakd.pipeline.settings.overrides import apply_override

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in DATASETS[args.dataset] + [f"bench.rounds={args.rounds}", f"bench.runs={args.runs}",
                                          "bench.threads=2", f"distill.epochs={args.epochs}"] + list(args.set or []):
        apply_override(tree, item)
    if args.candidates:
        tree["shortlist"]["candidates"] = dict(list(tree["shortlist"]["candidates"].items())[:args.candidates])
    (folder / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    cakd("prepare", "--out", "artifacts/data", cwd=folder)
    return folder


def table(report: dict) -> list[dict]:
    """One line per candidate: rank, p50 and round spread, speed-up, verdict."""
    return [{"name": n, "rank": e["rank"], "p50_ms": e["row"]["p50_ms"], "rounds_ms": [e["row"]["p50_round_min_ms"],
             e["row"]["p50_round_max_ms"]], "borderline": e["borderline"], "reason": e["reason"]}
            for n, e in sorted(report["candidates"].items(), key=lambda kv: (kv[1]["rank"] or 99, kv[0]))]


def rankings(folder: Path, results: Path, cfg: dict) -> tuple[list[str], list[str]]:
    """(p50-only ranking, ranking with the budget line's uncertainty) from one target results file."""
    manifest, sha = read_manifest(folder / "bundle")
    rows, _ = read_results(results, manifest, sha)
    items = profiled(manifest, rows, manifest["settings"]["num_classes"])
    args = (items[0].row, cfg["budget_ms"], cfg["min_speedup"])
    after = [v.name for v in rank([judge(i, *args) for i in items[1:]])]
    verdicts = [judge(i, *args) for i in items[1:]]
    for v in verdicts:
        v.borderline = False  # the rule before item 5: the p50 alone decides
    return [v.name for v in rank(verdicts)], after


def target_bench(python: Path, folder: Path, out: Path, *extra: str) -> dict:
    proc = subprocess.run([str(python), "run.py", "--bench", "--threads", "1", "--out", str(out), *extra],
                          cwd=folder, env=clean_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"run.py in {folder} failed:\n{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def trained(folder: Path, name: str, python: Path, cfg: dict) -> dict:
    """The top student trained (baseline recipe), exported, and timed by its bundle's run.py on the target."""
    student = folder / "artifacts/students" / name / "baseline"
    cakd("distill", "--student", name, "--method", "ce", "--data", "artifacts/data/manifest.json", "--out",
         str(student), "--metrics", f"reports/{name}.json", cwd=folder)
    cakd("export", "--data", "artifacts/data/manifest.json", "--checkpoint", str(student / "model.pt"), "--out",
         f"artifacts/export/{name}", "-S", "deploy.runtimes=[onnxruntime]", "-S", "deploy.precisions=[fp32]",
         "-S", f"bench.batch_sizes=[{cfg['batch_size']}]", cwd=folder)
    result = target_bench(python, folder / "artifacts/export" / name, folder / f"{name}-trained.json")
    return next(r for r in result["rows"] if r["batch_size"] == cfg["batch_size"])


def check(args: argparse.Namespace, work: Path) -> dict:
    folder = project(work / args.dataset, args)
    python = minimal_env(work / "env", ORT_ENV) if not (work / "env/venv/bin/python").exists() else (
        work / "env/venv/bin/python")
    cakd("shortlist", "--metrics", "reports/local.json", cwd=folder)
    local = read_json(folder / "reports/local.json")
    cakd("shortlist", "--bundle", "bundle", cwd=folder)
    runs, before, after = [], [], []
    for i in range(args.repeats):
        target_bench(python, folder / "bundle", folder / f"target{i}.json")
        old, new = rankings(folder, folder / f"target{i}.json", local["settings"])
        before.append(old[:2])
        after.append(new[:2])
        runs.append(f"target{i}.json")
    cakd("shortlist", "--from-target", "target0.json", "--bundle", "bundle", "--apply", "1", cwd=folder)
    report = read_json(folder / "reports/shortlist.json")
    top = report["ranking"][0]
    measured = trained(folder, top, python, report["settings"])
    predicted = report["candidates"][top]["row"]
    return {"local_2_threads": table(local), "target_1_thread": table(report), "local_top2": local["shortlist"],
            "target_top2": report["shortlist"], "top2_differ": local["shortlist"] != report["shortlist"],
            "target_system": report["system"], "repeats": runs,
            "top2_per_repeat_before_item5": before, "top2_per_repeat_after_item5": after,
            "top2_changes_before": sum(b != before[0] for b in before[1:]),
            "top2_changes_after": sum(a != after[0] for a in after[1:]),
            "deployed": {"name": top, "predicted_p50_ms": predicted["p50_ms"],
                         "predicted_rounds_ms": [predicted["p50_round_min_ms"], predicted["p50_round_max_ms"]],
                         "measured_p50_ms": measured["p50_ms"],
                         "measured_rounds_ms": [measured["p50_round_min_ms"], measured["p50_round_max_ms"]],
                         "ratio": measured["p50_ms"] / predicted["p50_ms"]},
            "settings": {"candidates": args.candidates, "rounds": args.rounds, "runs": args.runs,
                         "epochs": args.epochs, "set": args.set or []}, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--candidates", type=int, default=0, help="keep the first N candidates (0: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2, help="the top student's training epochs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", help="params override, as cakd -S")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache/cakd/target_check")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/target_check.json")
    args = parser.parse_args()
    result = check(args, args.workdir)
    everything = read_json(args.out) if args.out.exists() else {}
    everything[args.dataset] = result
    write_json(args.out, everything)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith(("local_2", "target_1", "target_sys"))},
                     indent=1))


if __name__ == "__main__":
    main()
