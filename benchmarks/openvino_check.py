"""Does cakd's OpenVINO runner time a file as OpenVINO's own ``benchmark_app`` does? (not a test; issue 33)

    python benchmarks/openvino_check.py /work/fresh/artifacts/export/{teacher,deit,convnext} \\
        --out benchmarks/results/openvino_check.json

For every ONNX file of each export folder (FP32 and each INT8 file), at batch 1, three timings with the same
thread count, interleaved (each round runs every file in turn, the tools in rotated order, so load on a shared
machine falls on all):

- ``cakd``: cakd's runner (``RUNTIMES["openvino"]``: a static batch-1 compile, ``INFERENCE_PRECISION_HINT`` f32,
  ``PERFORMANCE_HINT`` LATENCY), wall clock around the bench's timed call, as the bench measures it;
- ``openvino_latency``: the same compile, OpenVINO's own ``request.latency`` after ``infer()`` on a tensor set once;
- ``benchmark_app -api sync -hint latency -infer_precision f32`` (shipped with the openvino wheel), its median,
  which is ``request.latency`` too.

Each round's median goes into the JSON; the table gives the median of the round medians and their spread.
Run it on an otherwise idle machine.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cakd.export.exported import read_export
from cakd.export.measure.bench import time_call
from cakd.export.measure.sysinfo import load_average, system_info
from cakd.export.runtimes import RUNTIMES, Session, Settings
from cakd.export.runtimes.openvino_cpu import options as ov_options
from cakd.pipeline.errors import CakdError
from cakd.pipeline.files.fileio import write_json

TOOLS = ("cakd", "openvino_latency", "benchmark_app")
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


def internal_latency(path: Path, shape: tuple[int, ...], threads: int) -> Callable[[int], float]:
    """``runs`` -> the median of OpenVINO's own ``request.latency`` (ms) over that many ``infer()`` calls on a tensor
    set once: what ``benchmark_app`` reports, compiled with cakd's runner settings (static shape, f32, latency)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({0: list(shape)})
    config = {k: v for k, v in ov_options(Settings(threads, path.parent)).items() if k not in ("device", "shape")}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    request.set_input_tensor(ov.Tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32)))

    def median_ms(runs: int) -> float:
        times = []
        for _ in range(runs):
            request.infer()
            times.append(request.latency)
        return statistics.median(times)

    return median_ms


def prepare(args: argparse.Namespace, work: Path, config: Path) -> list[tuple[str, str, dict[str, Callable]]]:
    """(model, artefact, tool -> a call timing ``runs`` calls and returning their median in ms) per file."""
    jobs = []
    for folder in args.exports:
        exported = read_export(folder)
        shape = (1, exported.in_chans, exported.img_size, exported.img_size)
        settings = Settings(args.threads, work, (1,), openvino_hint="f32")
        for kind, path in files_of(folder).items():
            precision = "int8" if "int8" in kind else "fp32"
            call = RUNTIMES["openvino"].build(Session(path, precision, None, exported.img_size, exported.in_chans,
                                                      settings)).timed_call(1)
            time_call(call, args.warmup)
            tools = {"cakd": lambda runs, c=call: statistics.median(time_call(c, runs)) * 1e3,
                     "openvino_latency": internal_latency(path, shape, args.threads),
                     "benchmark_app": lambda runs, p=path, s=shape: benchmark_app(p, s, config, runs)}
            tools["openvino_latency"](args.warmup)
            jobs.append((folder.name, kind, tools))
    return jobs


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="openvino_check-") as work:
        config = Path(work) / "threads.json"
        config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(args.threads)}}))
        jobs = prepare(args, Path(work), config)
        rounds = {(label, kind): {tool: [] for tool in TOOLS} for label, kind, _ in jobs}
        for r in range(args.rounds):  # every file in turn, starting one further along, and the tools rotated too
            for label, kind, tools in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
                for tool in TOOLS[r % len(TOOLS):] + TOOLS[:r % len(TOOLS)]:
                    rounds[label, kind][tool].append(tools[tool](args.runs))
    rows = [{"model": label, "artefact": kind, **{f"{tool}_round_p50_ms": times for tool, times in by.items()},
             **{f"{tool}_p50_ms": statistics.median(times) for tool, times in by.items()}}
            for (label, kind), by in rounds.items()]
    return {"rows": rows, "threads": args.threads, "runs": args.runs, "rounds": args.rounds,
            "load_average": load_average(), "system": system_info(args.threads), "command": " ".join(sys.argv)}


def print_table(result: dict) -> None:
    table = Table(title="OpenVINO CPU, batch 1: median of round p50s, ms [round spread]; ratio = cakd / benchmark_app")
    for col in ("model", "artefact", "cakd (wall clock)", "OpenVINO request.latency", "benchmark_app", "ratio"):
        table.add_column(col, justify="left" if col in ("model", "artefact") else "right")
    for row in result["rows"]:
        said = [f"{row[f'{t}_p50_ms']:.3f} [{min(row[f'{t}_round_p50_ms']):.3f}-{max(row[f'{t}_round_p50_ms']):.3f}]"
                for t in TOOLS]
        table.add_row(row["model"], row["artefact"], *said, f"{row['cakd_p50_ms'] / row['benchmark_app_p50_ms']:.2f}")
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
