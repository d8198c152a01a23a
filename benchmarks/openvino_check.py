"""Does cakd's OpenVINO runner time a file as OpenVINO's own ``benchmark_app`` does? (not a test; issue 33)

    python benchmarks/openvino_check.py /work/fresh/artifacts/export/{teacher,deit,convnext} \\
        --out benchmarks/results/openvino_check.json

For every ONNX file of each export folder (FP32 and each INT8 file), at batch 1: cakd's runner
(``RUNTIMES["openvino"]``: a static batch-1 compile, ``INFERENCE_PRECISION_HINT`` f32, ``PERFORMANCE_HINT``
LATENCY, the bench's timed call) and ``benchmark_app -api sync -hint latency -infer_precision f32`` (shipped with
the openvino wheel), the same thread count, interleaved: each round runs every file once on each, in turn, so
load on a shared machine falls on both. Each round's median goes into the JSON; the table gives the median of the
round medians and their spread. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cakd.export.exported import read_export
from cakd.export.measure.bench import time_call
from cakd.export.measure.sysinfo import load_average, system_info
from cakd.export.runtimes import RUNTIMES, Session, Settings
from cakd.pipeline.errors import CakdError
from cakd.pipeline.files.fileio import write_json

MEDIAN = re.compile(r"Median:\s+([0-9.]+)\s*(ms|us)")  # benchmark_app switches to us below 1 ms


def benchmark_app(path: Path, shape: tuple[int, ...], config: Path, runs: int) -> float:
    """``benchmark_app``'s median latency (ms) of ``runs`` synchronous calls at ``shape``; ``config`` pins the
    threads (its UI refuses ``-nthreads`` beside ``-hint latency``, ``-load_config`` is allowed)."""
    exe = shutil.which("benchmark_app")
    if exe is None:
        raise CakdError("benchmark_app is not on PATH (it ships with the openvino wheel: pip install openvino)")
    cmd = [exe, "-m", str(path), "-d", "CPU", "-api", "sync", "-hint", "latency", "-infer_precision", "f32",
           "-shape", "[" + ",".join(map(str, shape)) + "]", "-load_config", str(config), "-niter", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = MEDIAN.search(out.stdout)
    if out.returncode != 0 or found is None:
        raise CakdError(f"benchmark_app failed on {path}: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return float(found.group(1)) / (1000.0 if found.group(2) == "us" else 1.0)


def files_of(folder: Path) -> dict[str, Path]:
    """The export's ONNX files that passed their gates (FP32 and each INT8 kind)."""
    exported = read_export(folder)
    return {kind: path for kind, path in exported.files.items() if path.suffix == ".onnx"}


def run(args: argparse.Namespace) -> dict:
    jobs = []  # (label, kind, path, cakd timed call, shape)
    with tempfile.TemporaryDirectory(prefix="openvino_check-") as work:
        config = Path(work) / "threads.json"
        config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(args.threads)}}))
        for folder in args.exports:
            exported = read_export(folder)
            shape = (1, exported.in_chans, exported.img_size, exported.img_size)
            settings = Settings(args.threads, Path(work), (1,), openvino_hint="f32")
            for kind, path in files_of(folder).items():
                precision = "int8" if "int8" in kind else "fp32"
                runner = RUNTIMES["openvino"].build(Session(path, precision, None, exported.img_size,
                                                            exported.in_chans, settings))
                call = runner.timed_call(1)
                time_call(call, args.warmup)
                jobs.append((folder.name, kind, path, call, shape))
        rounds: dict[tuple[str, str], dict[str, list[float]]] = {(j[0], j[1]): {"cakd": [], "benchmark_app": []}
                                                                  for j in jobs}
        for r in range(args.rounds):
            for label, kind, path, call, shape in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
                first_cakd = r % 2 == 0  # which tool goes first alternates too
                for tool in (("cakd", "benchmark_app") if first_cakd else ("benchmark_app", "cakd")):
                    if tool == "cakd":
                        ms = statistics.median(time_call(call, args.runs)) * 1e3
                    else:
                        ms = benchmark_app(path, shape, config, args.runs)
                    rounds[label, kind][tool].append(ms)
    rows = [{"model": label, "artefact": kind, **{f"{tool}_round_p50_ms": times for tool, times in by.items()},
             **{f"{tool}_p50_ms": statistics.median(times) for tool, times in by.items()}}
            for (label, kind), by in rounds.items()]
    return {"rows": rows, "threads": args.threads, "runs": args.runs, "rounds": args.rounds,
            "load_average": load_average(), "system": system_info(args.threads), "command": " ".join(sys.argv)}


def print_table(result: dict) -> None:
    table = Table(title="OpenVINO CPU, batch 1: cakd's runner vs benchmark_app (median of round p50s, ms)")
    for col in ("model", "artefact", "cakd", "cakd rounds", "benchmark_app", "benchmark_app rounds", "ratio"):
        table.add_column(col, justify="left" if col in ("model", "artefact") else "right")
    for row in result["rows"]:
        spread = {t: f"{min(row[f'{t}_round_p50_ms']):.3f}-{max(row[f'{t}_round_p50_ms']):.3f}"
                  for t in ("cakd", "benchmark_app")}
        table.add_row(row["model"], row["artefact"], f"{row['cakd_p50_ms']:.3f}", spread["cakd"],
                      f"{row['benchmark_app_p50_ms']:.3f}", spread["benchmark_app"],
                      f"{row['cakd_p50_ms'] / row['benchmark_app_p50_ms']:.2f}")
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", type=Path, nargs="+", help="export folders (cakd export's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/openvino_check.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200, help="calls per round, on each tool")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args)
    write_json(args.out, result)
    print_table(result)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
