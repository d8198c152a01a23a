"""Is training input-bound? Training-input images/s next to the training step's own (issue 34).

    python benchmarks/dataloader.py                         # CIFAR-10 folder, 32 and 224 px, 0/1/2 workers
    python benchmarks/dataloader.py --images 512 --steps 3  # a quick run that only checks the script works

The input side is cakd's own training loader (``cakd.pipeline.data.loading.train_loader`` over the dataset
``build_datasets`` makes from a prepared image folder: JPEG decode, resize, pad-crop, flip, normalise, item
seeding) with 0, 1 and 2 worker processes. The step side is one optimisation step (forward, backward, AdamW) of
each default student of params.yaml on random images of the same size, on this machine's device (CUDA when
present). A size is input-bound for a student when the fastest loader gives fewer images/s than its step takes.
Run it on idle cores: the loader and the step are timed one after the other, never together. Writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import time
from pathlib import Path

import torch
import yaml

from cakd.pipeline.data import build_datasets, prepare_data
from cakd.pipeline.data.loading import train_loader
from cakd.pipeline.models import model_from_params
from cakd.pipeline.settings.params import Params

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path("~/.cache/cakd").expanduser()


def cifar_folder(archive: Path) -> Path:
    root = CACHE / "cifar10-jpg"
    if not (root / "train").is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    return root


def input_rate(dataset: torch.utils.data.Dataset, workers: int, images: int, batch: int) -> float:
    """Images/s of the training loader over ``images`` images (worker start-up included: one per run)."""
    loader, sampler = train_loader(dataset, batch, 0, 1, workers, torch.device("cpu"))
    sampler.set_epoch_seed(0)
    seen, started = 0, time.perf_counter()
    for batch_images, _ in loader:
        seen += batch_images.shape[0]
        if seen >= images:
            break
    return seen / (time.perf_counter() - started)


def step_rate(params: Params, name: str, size: int, batch: int, steps: int, device: torch.device) -> float:
    """Images/s of forward + backward + AdamW on one student (after one untimed warm-up step)."""
    model, _ = model_from_params(params.students[name], 10, size)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - started)


def measure(args: argparse.Namespace, size: int, base: dict, device: torch.device) -> dict:
    tree = {**base, "data": {**base["data"], "name": "imagefolder", "root": str(args.data), "img_size": size,
                             "hflip": True, "train_per_class": args.per_class, "test_per_class": 1}}
    params = Params.model_validate(tree)
    manifest = prepare_data(params.data, params.seed, args.work / f"data-{size}")
    train, _ = build_datasets(params.data, manifest, params.seed)
    inputs = {w: round(input_rate(train, w, args.images, args.batch)) for w in args.workers}
    steps = {name: round(step_rate(params, name, size, args.batch, args.steps, device)) for name in params.students}
    best = max(inputs.values())
    verdict = {name: ("input-bound" if best < rate else "compute-bound") for name, rate in steps.items()}
    print(f"{size} px: input {inputs} images/s by workers; step {steps} images/s; {verdict}", flush=True)
    return {"img_size": size, "input_images_per_s": inputs, "step_images_per_s": steps, "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="CIFAR-10 ImageFolder root (default: unpacked from --archive)")
    parser.add_argument("--archive", type=Path, default=ROOT.parent / "shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=4096, help="images read per loader measurement")
    parser.add_argument("--per-class", type=int, default=500, help="training images per class prepared")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--work", type=Path, default=CACHE / "dataloader-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/dataloader.json")
    args = parser.parse_args()
    args.data = args.data or cifar_folder(args.archive)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    rows = [measure(args, size, base, device) for size in args.sizes]
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "batch": args.batch, "images": args.images, "rows": rows,
              "load_average": list(os.getloadavg())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
