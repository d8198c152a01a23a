"""One short check of cakd on a CUDA GPU (issue 34): the stage commands on CIFAR-10, then the bench's GPU rows.

    python benchmarks/gpu_check.py --wheels shared/wheels          # on the GPU machine, one call (<= 8 min on one GPU)
    python benchmarks/gpu_check.py --tiny --data DIR --out DIR     # the same path on the CPU, tiny (tests)

Runs ``cakd prepare``, ``cakd train-teacher``, then per student ``cakd distill --method ce`` (baseline) and
``cakd distill`` (FBT) in subprocesses, with a GPU-sized recipe on the CIFAR-10 image folder at 32 px (unpacked
from ``--archive``, ``shared/data/cifar10-jpg.tar.gz`` by default, into ``--out``). Then it times the trained
models with the bench's harness on torch and torch-cuda, and on onnxruntime-cuda / TensorRT where they import.
Writes ``--out``/gpu_check.json: per stage its seconds, images/s per epoch, peak GPU memory, accuracy and the
CUDA recipe it used; the bench rows; the device. A bare GPU machine lacks pydantic and onnx: ``--wheels DIR``
installs the wheels found there into ``--out``/site first (docs/GPU.md says which). dvclive is optional (no
``live/`` logs without it). cakd need not be installed: the script puts this checkout first on the path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("pydantic", "onnx")  # not on a bare GPU machine; torch, timm, onnxruntime, typer, rich, yaml are
# shared/ inside the checkout on a device machine, beside it on a development machine
ARCHIVE = next((p for p in (ROOT / "shared", ROOT.parent / "shared") if p.is_dir()), ROOT / "shared") / \
    "data/cifar10-jpg.tar.gz"


def put_checkout_first(out: Path, wheels: Path | None) -> dict:
    """``import cakd`` from this checkout (links under out/shim), plus the wheels' site folder; returns the
    environment the stage subprocesses get."""
    shim = out / "shim" / "cakd"
    shim.mkdir(parents=True, exist_ok=True)
    for package in ("pipeline", "export"):
        link = shim / package
        if not link.is_symlink():
            link.symlink_to(ROOT / package, target_is_directory=True)
    paths = [str(out / "shim")]
    if wheels is not None:
        site = out / "site"
        found = sorted(str(w) for w in wheels.glob("*.whl"))
        if not found:
            raise SystemExit(f"gpu_check: no .whl files in {wheels}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        str(site), *found], check=True)
        paths.append(str(site))
    sys.path[:0] = paths
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"gpu_check: {', '.join(missing)} not importable: pass --wheels DIR (docs/GPU.md)")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1"}


def image_folder(args: argparse.Namespace) -> Path:
    """--data as given, or the archive unpacked once into out/data (ImageFolder train/ and test/)."""
    if args.data is not None:
        return args.data
    target = args.out / "data"
    root = target / "cifar10-jpg"
    if not (root / "train").is_dir():
        with tarfile.open(args.archive) as tar:
            tar.extractall(target, filter="data")
    return root


def recipe(data: Path, tiny: bool) -> dict:
    """The params the stages run with: a GPU-sized recipe at 32 px, or the same shape tiny for the CPU."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(name="imagefolder", root=str(data), img_size=16 if tiny else 32, augment="pad-crop",
                          hflip=True, train_per_class=8 if tiny else 0, test_per_class=4 if tiny else 0)
    params["teacher"].update(model="resnet10t" if tiny else "resnet18", kwargs={})
    if not tiny:  # the default students' families, sized for 32 px images on a GPU
        params["students"]["deit"]["kwargs"] = {"patch_size": 4, "embed_dim": 192, "depth": 6, "num_heads": 3,
                                                "global_pool": "avg", "class_token": False}
        params["students"]["convnext"].update(kwargs={}, epochs=None)
    params["train"].update(epochs=1 if tiny else 6, batch_size=8 if tiny else 256, eval_every=2)
    params["distill"]["epochs"] = 1 if tiny else 4
    params["students"]["convnext"]["epochs"] = None
    params["machine"].update(num_workers="auto", threads=1 if tiny else 0)  # 1: shared CPU cores (tests)
    if tiny:  # one student is the same path
        params["students"] = dict(list(params["students"].items())[:1])
    return params


def run_stage(name: str, argv: list[str], work: Path, env: dict) -> dict:
    """One ``cakd`` command, timed from outside; its metrics.json and the per-epoch speed its checkpoint kept."""
    import torch

    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", *argv], cwd=work, env=env, text=True,
                          capture_output=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"gpu_check: {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = work / argv[argv.index("--out") + 1]
    metrics = json.loads((out / "metrics.json").read_text())
    history = torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")["history"]
    return {"stage": name, "seconds": round(seconds, 1), "accuracy": metrics["accuracy"],
            "images_per_s": [round(row["train/images_per_s"]) for row in history if "train/images_per_s" in row],
            "gpu_memory_mb": metrics.get("gpu_memory_mb"), "recipe": metrics.get("recipe"),
            "world_size": metrics["world_size"]}


def train_all(work: Path, params: dict, env: dict) -> tuple[list[dict], dict[str, Path]]:
    stages = [("prepare", ["prepare", "--out", "artifacts/data"])]
    stages.append(("train_teacher", ["train-teacher", "--out", "artifacts/teacher"]))
    models = {"teacher": work / "artifacts/teacher/model.pt"}
    for name in params["students"]:
        stages.append((f"baseline@{name}", ["distill", "--student", name, "--method", "ce", "--out",
                                            f"artifacts/students/{name}/baseline"]))
        stages.append((f"distill@{name}", ["distill", "--student", name, "--out",
                                           f"artifacts/students/{name}/distill"]))
        models[name] = work / f"artifacts/students/{name}/distill/model.pt"
    records = []
    for name, argv in stages:
        if name == "prepare":
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", *argv], cwd=work, env=env, check=True,
                           capture_output=True)
            records.append({"stage": name, "seconds": round(time.perf_counter() - started, 1)})
        else:
            records.append(run_stage(name, argv, work, env))
        print(json.dumps(records[-1]), flush=True)
    return records, models


def bench(models: dict[str, Path], work: Path, params: dict, tiny: bool) -> list[dict]:
    """The bench's harness on the trained checkpoints: torch and torch-cuda always (a row says why one is
    unavailable), onnxruntime-cuda and TensorRT on an FP32 ONNX where they can run."""
    import torch

    from cakd.export.exported import Exported
    from cakd.export.make.onnx_export import export_fp32
    from cakd.export.measure.bench import BenchModel, Timing, run_bench
    from cakd.export.runtimes import RUNTIMES, Settings
    from cakd.pipeline.models import load_model

    size = params["data"]["img_size"]
    gpu_onnx = [r for r in ("onnxruntime-cuda", "tensorrt") if RUNTIMES[r].unavailable() is None]
    runtimes = ["torch", "torch-cuda", *gpu_onnx]
    entries = []
    for label, path in models.items():
        files = {"checkpoint": path}
        if gpu_onnx:
            onnx_path = work / "onnx" / f"{label}.onnx"
            onnx_path.parent.mkdir(exist_ok=True)
            export_fp32(load_model(path).eval(), onnx_path, img_size=size, in_chans=3, opset=18,
                        parity_images=torch.randn(8, 3, size, size), atol=1e-3)
            files["onnx"] = onnx_path
        model = {"img_size": size, "in_chans": 3, "num_classes": load_model(path).spec.num_classes}
        entries.append(BenchModel(label, Exported(path.parent, {"source": str(path), "model": model}, files, {}),
                                  (str(path),)))
    timing = Timing((1, 8) if tiny else (1, 64, 256), 1 if tiny else 10, 3 if tiny else 50, 1 if tiny else 3)
    settings = Settings(2, work / "bench-work", timing.batch_sizes)
    settings.work_dir.mkdir(exist_ok=True)
    rows = run_bench(entries, settings, runtimes=runtimes, precisions=["fp32"], timing=timing)
    return [asdict(row) for row in rows]


def device() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda
            else None, "gpus": torch.cuda.device_count(), "cores": len(os.sched_getaffinity(0))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check")
    parser.add_argument("--data", type=Path, help="an ImageFolder root (train/, test/); default: --archive unpacked")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to install first (pydantic, onnx, ...)")
    parser.add_argument("--tiny", action="store_true", help="a tiny budget, any device (the test's)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    env = put_checkout_first(args.out.resolve(), args.wheels)
    work = args.out / "run"
    work.mkdir(exist_ok=True)
    params = recipe(image_folder(args).resolve(), args.tiny)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages, models = train_all(work, params, env)
    rows = bench(models, work, params, args.tiny)
    result = {"device": device(), "tiny": args.tiny, "stages": stages, "bench": rows,
              "total_seconds": round(time.perf_counter() - started, 1)}
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(f"gpu_check: {len(stages)} stages, {len(rows)} bench rows, {result['total_seconds']} s -> "
          f"{args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
