"""The default pipeline's bundles on a "target" with nothing but a runtime (issue 31's acceptance check).

    dvc repro        # the default pipeline: artifacts/export/{deit,convnext,teacher}
    python benchmarks/bundle_target.py artifacts/export/* --manifest artifacts/data/manifest.json \\
        --out benchmarks/results/bundle_target.json

Two minimal environments are built offline from this virtualenv's files: numpy + Pillow + onnxruntime, and
numpy + Pillow + OpenVINO (each with its own dependencies; torch and cakd not importable, checked). In each, for
every bundle and every artefact the runtime runs, ``run.py`` must pass ``--self-test``, give on the test images
(written as image files) the same top-1 per image as the bench's accuracy check (cakd's runner on cakd's
torchvision-preprocessed test set), and write ``--bench`` rows in the BenchRow shape.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cakd.export.measure.rows import COLUMNS, BenchRow  # noqa: E402
from cakd.export.runtimes import RUNTIMES, Session, Settings  # noqa: E402
from cakd.pipeline.data import build_datasets, load_manifest  # noqa: E402
from cakd.pipeline.data.sources import load_pools  # noqa: E402
from cakd.pipeline.settings.loading import load_params  # noqa: E402
from tests.minimal_env import clean_env, installed, minimal_env  # noqa: E402

ENVS = {"onnxruntime": ["numpy", "pillow", "onnxruntime", "flatbuffers", "packaging", "protobuf"],
        "openvino": ["numpy", "pillow", "openvino", "openvino-telemetry", "packaging"]}


def test_folder(params: object, manifest: dict, out: Path) -> list[str]:
    """The test split as image files at their original size, DIR/<class>/<n>.png; returns their names in order."""
    if params.data.name == "imagefolder":
        raise SystemExit("an image folder's test split is already files: pass its val/ or test/ folder instead")
    pools = load_pools(params.data)
    indices = manifest["splits"]["test"]["indices"]
    images, labels = pools.images["test"][indices], pools.labels["test"][indices]
    names = []
    for n, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = out / manifest["classes"][label]
        folder.mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(folder / f"{n:05d}.png")
        names.append(f"{manifest['classes'][label]}/{n:05d}.png")
    return names


def bench_predictions(params: object, manifest: dict, folder: Path, runtime: str, entry: dict) -> list[int]:
    """What cakd bench-latency's accuracy check predicts per test image for this artefact on this runtime."""
    _, test_ds = build_datasets(params.data, manifest, params.seed, train_augment=False)
    images = torch.stack([test_ds[i][0] for i in range(len(test_ds))])
    runner = RUNTIMES[runtime].build(Session(folder / entry["file"], entry["precision"], None, images.shape[-1],
                                             images.shape[1], Settings(threads=2, work_dir=folder)))
    return torch.cat([runner.predict(chunk) for chunk in images.split(64)]).argmax(1).tolist()


def check(python: Path, folder: Path, kind: str, runtime: str, data: Path, names: list[str],
          expected: list[int], classes: list[str], work: Path) -> dict:
    run = [str(python), str(folder / "run.py"), "--artefact", kind, "--runtime", runtime]
    test = subprocess.run([*run, "--self-test"], capture_output=True, text=True, env=clean_env())
    out = work / f"{folder.name}-{kind}-{runtime}.json"
    scored = subprocess.run([*run, "--accuracy", str(data), "--bench", "--warmup", "2", "--runs", "20", "--rounds",
                             "2", "--threads", "2", "--out", str(out)], capture_output=True, text=True, env=clean_env())
    result = {"bundle": folder.name, "artefact": kind, "runtime": runtime, "self_test_exit": test.returncode,
              "self_test": (test.stdout + test.stderr).strip(), "accuracy_exit": scored.returncode}
    if scored.returncode == 0:
        got = json.loads(out.read_text())
        ours = [classes.index(got["accuracy"][kind]["predictions"][n]) for n in names]
        rows = got["rows"]
        result.update(images=len(names), top1=got["accuracy"][kind]["top1"],
                      same_top1_per_image_as_bench=sum(a == b for a, b in zip(ours, expected, strict=True)),
                      rows_valid=all(set(r) == set(COLUMNS) and BenchRow.from_dict(r).p50_ms > 0 for r in rows),
                      p50_ms={r["batch_size"]: round(r["p50_ms"], 3) for r in rows}, system=got["system"])
    else:
        result["error"] = scored.stderr.strip()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--manifest", type=Path, default=Path("artifacts/data/manifest.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bundle_target.json"))
    parser.add_argument("--note", default="", help="how the exports were made (recorded in the JSON)")
    args = parser.parse_args()
    params, manifest = load_params(args.params), load_manifest(args.manifest)
    results, envs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names = test_folder(params, manifest, work / "test")
        for runtime, dists in ENVS.items():
            python = minimal_env(work / runtime, dists)
            probes = {m: subprocess.run([str(python), "-c", f"import {m}"], capture_output=True,
                                        env=clean_env()).returncode != 0 for m in ("torch", "cakd")}
            envs[runtime] = {"installed": installed(python), "torch_missing": probes["torch"],
                             "cakd_missing": probes["cakd"]}
            for folder in args.exports:
                bundle = json.loads((folder / "export.json").read_text())["bundle"]
                for kind, entry in bundle["artefacts"].items():
                    if runtime in entry["runtimes"]:
                        expected = bench_predictions(params, manifest, folder, runtime, entry)
                        results.append(check(python, folder, kind, runtime, work / "test", names, expected,
                                             bundle["classes"], work))
                        print(json.dumps({k: v for k, v in results[-1].items() if k != "system"}), flush=True)
    passed = all(r["self_test_exit"] == 0 and r.get("same_top1_per_image_as_bench") == r.get("images")
                 and r.get("rows_valid") for r in results)
    args.out.write_text(json.dumps({"note": args.note, "environments": envs, "results": results, "passed": passed},
                                   indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
