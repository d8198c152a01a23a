#!/usr/bin/env python3
"""Run, check and time this exported model on the target with Python, numpy, Pillow and one runtime
(onnxruntime, OpenVINO or TensorRT): no torch, no cakd. cakd copies this file into every export folder.

    python run.py IMAGE...               top-k classes of each image
    python run.py --self-test            every golden vector at batch 1 and the largest shipped batch
    python run.py --bench [--out FILE]   latency rows in cakd's BenchRow shape, with this machine's details
    python run.py --accuracy DIR         top-1 on DIR/<class name>/<image>

In a shortlist bundle (``cakd shortlist --bundle``: ``manifest.json``, no ``export.json``), ``--bench`` times
every model of the manifest in interleaved rounds and writes one results file for ``cakd shortlist
--from-target``.

It reads ``export.json``'s ``bundle`` document (version 1) and preprocesses exactly as ``cakd evaluate``
does, so a deployment that feeds the model differently fails ``--self-test`` instead of answering wrongly.
Exit status: 0 ok, 1 a self-test mismatch, 2 a bad bundle, input or runtime (one line on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

BUNDLE_KEY = "cakd.bundle"
BUNDLE_VERSION = 1
REPORT = "export.json"
GOLDEN = Path("golden")
RUNTIMES = ("onnxruntime", "openvino", "tensorrt")
# The interpolations cakd's torchvision path uses that Pillow reproduces (antialiased when shrinking, as
# torchvision's ``antialias=True``); cakd refuses to export a bundle whose resize is not listed here.
PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
MAX_PIXELS = 40_000_000
P99_MIN_RUNS = 100  # below this many timed calls the 99th percentile is the slowest call, not a percentile

Predict = Callable[[np.ndarray], np.ndarray]


class BundleError(Exception):
    """A problem with the bundle, the input or the runtime: one line for the user, exit status 2."""


def load_bundle(folder: Path) -> dict:
    """``export.json``'s bundle document, refused when it is missing or of a version this runner does not know."""
    path = folder / REPORT
    if not path.is_file():
        raise BundleError(f"{path} is missing: this folder is not a cakd export bundle")
    try:
        doc = json.loads(path.read_text())["bundle"]
        version = doc["version"]
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{path} has no readable '{BUNDLE_KEY}' document ({type(err).__name__}: {err})") from None
    if version != BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle metadata version {version!r} is not one this runner reads "
                          f"({BUNDLE_VERSION}); use the run.py shipped with that bundle")
    return doc


def choose_artefact(bundle: dict, folder: Path, name: str | None) -> tuple[str, dict]:
    """The artefact by kind (``onnx-int8``) or file name (``model.int8.onnx``); default: the FP32 ONNX."""
    table = bundle["artefacts"]
    name = name or "onnx"
    kind = name if name in table else next((k for k, e in table.items() if e["file"] == name), None)
    if kind is None:
        raise BundleError(f"no artefact {name!r} in this bundle (it has: {', '.join(sorted(table))})")
    entry = table[kind]
    if not (folder / entry["file"]).is_file():
        raise BundleError(f"{folder / entry['file']} is missing from the bundle (artefact {kind})")
    return kind, entry


def choose_runtime(entry: dict, kind: str, asked: str | None) -> str:
    """The runtime asked for, or the first installed one that runs this artefact."""
    usable = [rt for rt in RUNTIMES if rt in entry["runtimes"]]
    if asked is not None and asked not in usable:
        raise BundleError(f"artefact {kind} ({entry['file']}) is not made for {asked} "
                          f"(it runs on: {', '.join(usable) or 'none of ' + ', '.join(RUNTIMES)})")
    for runtime in [asked] if asked else usable:
        if runtime_missing(runtime) is None:
            return runtime
        if asked:
            raise BundleError(f"{asked} cannot run here: {runtime_missing(asked)}")
    raise BundleError(f"no installed runtime runs artefact {kind}: install one of {', '.join(usable)}")


def runtime_missing(runtime: str) -> str | None:
    """Why ``runtime`` cannot run here, or None."""
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}[runtime]
    try:
        __import__(module)
    except ImportError:
        return f"the Python package {module} is not installed"
    return None


def load_runtime(runtime: str, path: Path, threads: int | None) -> Predict:
    """A float32 NCHW batch -> logits, on ``runtime``; a file it cannot load is one line."""
    try:
        return {"onnxruntime": _onnxruntime, "openvino": _openvino, "tensorrt": _tensorrt}[runtime](path, threads)
    except BundleError:
        raise
    except Exception as err:  # runtimes raise their own (pybind, C++) error types with multi-line messages
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BundleError(f"{runtime} cannot run {path.name}: {first[:300]}") from None


def _onnxruntime(path: Path, threads: int | None) -> Predict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino(path: Path, threads: int | None) -> Predict:
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    output = compiled.output(0)
    return lambda x: np.asarray(compiled(x)[output]).copy()


def _tensorrt(path: Path, threads: int | None) -> Predict:
    """The engine ``<stem>.trtexec.sh`` built on this GPU from ``path`` (refused when built on another GPU or TensorRT
    version); CUDA memory through cuda-python. Not run on cakd's development machines (no GPU there)."""
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

    engine_path, sidecar = engine_for(path, trt.__version__, _gpu_name(cudart))
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    out_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def cuda(result: tuple) -> object:
        if int(result[0]) != 0:
            raise BundleError(f"CUDA call failed: {result[0]}")
        return result[1] if len(result) > 1 else None

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        context.set_input_shape(sidecar["input"], x.shape)
        out = np.empty(tuple(context.get_tensor_shape(out_name)), dtype=np.float32)
        d_in, d_out = cuda(cudart.cudaMalloc(x.nbytes)), cuda(cudart.cudaMalloc(out.nbytes))
        try:
            cuda(cudart.cudaMemcpy(d_in, x.ctypes.data, x.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            context.set_tensor_address(sidecar["input"], d_in)
            context.set_tensor_address(out_name, d_out)
            if not context.execute_async_v3(0):  # the default stream: the copies below wait for it
                raise BundleError(f"TensorRT could not run {engine_path.name}")
            cuda(cudart.cudaMemcpy(out.ctypes.data, d_out, out.nbytes,
                                   cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return out

    return predict


def _gpu_name(cudart: object) -> str:
    _, props = cudart.cudaGetDeviceProperties(0)
    return props.name.decode().rstrip("\x00")


def engine_for(onnx_path: Path, trt_version: str, gpu: str) -> tuple[Path, dict]:
    """The engine built from ``onnx_path`` and its sidecar, refused unless built by this TensorRT on this GPU."""
    engine = onnx_path.with_suffix(".engine")
    sidecar_path = engine.with_name(engine.name + ".json")
    if not engine.is_file() or not sidecar_path.is_file():
        raise BundleError(f"no TensorRT engine {engine.name} here: run ./{onnx_path.stem}.trtexec.sh on this machine "
                          "first")
    sidecar = json.loads(sidecar_path.read_text())
    built = str(sidecar.get("tensorrt_version", "")).split(".")[:3]
    if sidecar.get("gpu") != gpu or built != trt_version.split(".")[:3]:
        raise BundleError(f"{engine.name} was built for {sidecar.get('gpu')} with TensorRT "
                          f"{sidecar.get('tensorrt_version')}, this is {gpu} with TensorRT {trt_version}: "
                          f"rebuild it with ./{onnx_path.stem}.trtexec.sh")
    return engine, sidecar


def read_image(path: Path) -> Image.Image:
    """The file decoded as RGB; anything that is not a readable image is one line naming it."""
    if not path.is_file():
        raise BundleError(f"{path} is not a file")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise BundleError(f"{path}: {img.width}x{img.height} pixels, more than {MAX_PIXELS:,}")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BundleError(f"{path} is not an image Pillow can read ({type(err).__name__})") from None


def resize_crop(img: Image.Image, pre: dict) -> np.ndarray:
    """torchvision's ``Resize(size)`` (shorter side to ``size``, the longer one truncated as torchvision does)
    then ``CenterCrop(size)``, as uint8 HxWx3."""
    size, filt = pre["resize"]["shorter_side"], PIL_FILTERS[pre["resize"]["interpolation"]]
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), filt)
    crop = pre["crop"]["size"]
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def normalise(images: np.ndarray, pre: dict) -> np.ndarray:
    """uint8 NxHxWx3 (RGB) -> float32 NCHW as the model takes it: scale, mean, std, in the colour order the
    metadata gives."""
    x = images.astype(np.float32) * np.float32(pre["scale"])
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    if pre["colour_order"] == "BGR":
        x = x[..., ::-1]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_files(paths: list[Path], pre: dict) -> np.ndarray:
    return normalise(np.stack([resize_crop(read_image(p), pre) for p in paths]), pre)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_golden(folder: Path, bundle: dict) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """golden/golden.json, its uint8 images and each artefact's expected logits, shape-checked against the
    bundle's input size and class count."""
    index_path = folder / GOLDEN / "golden.json"
    if not index_path.is_file():
        raise BundleError(f"{index_path} is missing: this bundle has no golden vectors")
    try:
        index = json.loads(index_path.read_text())
        with np.load(folder / GOLDEN / index["images"]) as data:
            images = data["images"]
        with np.load(folder / GOLDEN / index["logits"]) as data:
            logits = {kind: data[kind] for kind in data.files}
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise BundleError(f"golden data in {folder / GOLDEN} cannot be read ({type(err).__name__}: {err})") from None
    size, classes = bundle["input"]["size"], len(bundle["classes"])
    if images.dtype != np.uint8 or images.shape[1:] != (size[0], size[1], 3) or len(images) != index["count"]:
        raise BundleError(f"golden images are {images.dtype} {images.shape}, expected uint8 "
                          f"({index['count']}, {size[0]}, {size[1]}, 3)")
    for kind, expected in logits.items():
        if expected.shape != (len(images), classes):
            raise BundleError(f"golden logits of {kind} are {expected.shape}, expected ({len(images)}, {classes})")
    return index, images, logits


def batches(images: np.ndarray, batch: int) -> list[tuple[list[int], np.ndarray]]:
    """Every golden image in batches of ``batch``, repeating golden images to fill the last one."""
    order = list(range(len(images)))
    out = []
    for start in range(0, len(order), batch):
        idx = [order[(start + i) % len(order)] for i in range(batch)]
        out.append((idx, images[idx]))
    return out


def check_batch(got: np.ndarray, want: np.ndarray, tolerance: dict) -> tuple[int, str] | None:
    """The first image (position in the batch) that breaks the tolerance and how, or None."""
    if tolerance["kind"] == "atol":
        diff = np.abs(got - want).max(axis=1)
        bad = np.flatnonzero(diff > tolerance["allowed"])
        return None if not len(bad) else (int(bad[0]), f"max |logit diff| {diff[bad[0]]:.3g} > allowed "
                                                        f"{tolerance['allowed']:.3g}")
    agree = got.argmax(1) == want.argmax(1)
    if 100.0 * agree.mean() >= tolerance["min_percent"]:
        return None
    first = int(np.flatnonzero(~agree)[0])
    return first, (f"top-1 {got[first].argmax()} != expected {want[first].argmax()}; agreement "
                   f"{100 * agree.mean():.1f}% < {tolerance['min_percent']}%")


def self_test(folder: Path, bundle: dict, kind: str, runtime: str, predict: Predict) -> str | None:
    """Every golden vector at batch 1 and the largest shipped batch; the first mismatch with its likely cause."""
    index, images, logits = load_golden(folder, bundle)
    if kind not in logits or kind not in index["artefacts"]:
        raise BundleError(f"golden data has no expected logits for artefact {kind}")
    record = index["artefacts"][kind]
    x = normalise(images, bundle["preprocessing"])
    shipped = bundle["tensorrt"]["batch_sizes"] if runtime == "tensorrt" else index["batch_sizes"]
    for batch in sorted({1, max(shipped)}):
        for idx, _ in batches(images, batch):
            found = check_batch(predict(x[idx]), logits[kind][idx], record["tolerance"])
            if found is not None:
                pos, how = found
                label = bundle["classes"][index["labels"][idx[pos]]]
                return (f"{record['file']} on {runtime}, golden image {idx[pos]} ('{label}') at batch {batch}: "
                        f"{how}{likely_cause(folder, bundle, index, record)}")
    return None


def likely_cause(folder: Path, bundle: dict, index: dict, record: dict) -> str:
    """What differs from when the golden logits were recorded: the file, or the preprocessing metadata."""
    if sha256(folder / record["file"]) != record["sha256"]:
        return (f" — {record['file']} is not the file the golden logits were recorded with (sha256 differs: "
                "replaced by another model or modified)")
    changed = [k for k in sorted(set(index["preprocessing"]) | set(bundle["preprocessing"]))
               if index["preprocessing"].get(k) != bundle["preprocessing"].get(k)]
    if changed:
        return (f" — the preprocessing in {REPORT} ({', '.join(changed)}) differs from the one the golden "
                "logits were recorded with")
    return " — the file and the preprocessing are as exported: this runtime computes other answers"


def percentiles(rounds: list[list[float]], batch: int) -> dict:
    """The statistics of cakd bench-latency and of this runner alike (the bench imports this function): p50/p90
    over all calls, the spread of per-round p50s, p99 from 100 calls."""
    ms = np.concatenate([np.asarray(r) for r in rounds]) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    per_round = [float(np.median(np.asarray(r) * 1e3)) for r in rounds]
    return {"p50_ms": float(p50), "p50_round_min_ms": min(per_round), "p50_round_max_ms": max(per_round),
            "p90_ms": float(p90), "p99_ms": float(p99) if len(ms) >= P99_MIN_RUNS else None,
            "mean_ms": float(statistics.fmean(ms)), "runs": len(ms), "rounds": len(rounds),
            "throughput_ips": float(batch * 1e3 / p50)}


def bench(bundle: dict, kind: str, runtime: str, predict: Predict, path: Path, timing: dict) -> list[dict]:
    """Warm-up, then interleaved rounds over the bundle's batch sizes: one BenchRow per batch size."""
    c, (h, w) = bundle["input"]["channels"], bundle["input"]["size"]
    inputs = {b: np.random.default_rng(0).standard_normal((b, c, h, w), dtype=np.float32)
              for b in bundle["batch_sizes"]}
    for x in inputs.values():
        for _ in range(timing["warmup"]):
            predict(x)
    times: dict[int, list[list[float]]] = {b: [] for b in inputs}
    for r in range(timing["rounds"]):
        order = list(inputs)[r % len(inputs):] + list(inputs)[:r % len(inputs)]
        for b in order:
            calls = []
            for _ in range(timing["runs"]):
                start = time.perf_counter()
                predict(inputs[b])
                calls.append(time.perf_counter() - start)
            times[b].append(calls)
    entry = bundle["artefacts"][kind]
    return [{"model": bundle["origin"]["student"], "runtime": runtime, "precision": entry["precision"],
             "artefact": kind, "batch_size": b, "status": "ok", "reason": None, **percentiles(t, b), "top1": None,
             "max_abs_diff": None, "params_m": None, "gflops": None, "file_mb": path.stat().st_size / 2**20,
             "activations": entry.get("activations"), "source": str(path)} for b, t in times.items()]


def system_info(runtime: str, threads: int | None) -> dict:
    """What a latency number depends on: CPU model and flags, cores, threads, runtime version, GPU."""
    fields = _cpuinfo()
    versions = {}
    for name in ("numpy", "Pillow", "onnxruntime", "openvino", "tensorrt"):
        try:
            from importlib import metadata

            versions[name] = metadata.version(name)
        except Exception:  # noqa: BLE001 - not installed (any metadata error): simply not listed
            continue
    return {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpu": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_flags": sorted(set(fields.get("flags", "").split()) & CPU_FLAGS), "logical_cpus": os.cpu_count(),
            "threads": threads, "os": platform.platform(), "python": platform.python_version(),
            "runtime": runtime, "gpu": _nvidia_gpu(), "versions": versions}


CPU_FLAGS = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "amx_bf16", "avx512_fp16", "asimd", "sve"}


def _cpuinfo() -> dict[str, str]:
    path = Path("/proc/cpuinfo")
    found: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            found.setdefault(key.strip(), value.strip())
    return found


def _nvidia_gpu() -> str | None:
    names = sorted(Path("/proc/driver/nvidia/gpus").glob("*/information"))
    for info in names:
        for line in info.read_text().splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return None


def image_folder(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """DIR/<class name>/<image> with the bundle's class names; a folder named after no class is one line."""
    if not root.is_dir():
        raise BundleError(f"{root} is not a folder (expected {root}/<class name>/<image>)")
    items = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name not in classes:
            raise BundleError(f"{sub} names no class of this model (classes: {', '.join(classes)})")
        items += [(p, classes.index(sub.name)) for p in sorted(sub.rglob("*")) if p.is_file()]
    if not items:
        raise BundleError(f"no images in {root}/<class name>/")
    return items


def accuracy(root: Path, bundle: dict, predict: Predict, batch: int = 32) -> dict:
    """Top-1 over an image folder, with each file's prediction."""
    items = image_folder(root, bundle["classes"])
    predictions = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        x = preprocess_files([p for p, _ in chunk], bundle["preprocessing"])
        predictions += predict(x).argmax(1).tolist()
    correct = sum(int(p == label) for p, (_, label) in zip(predictions, items, strict=True))
    named = {str(p.relative_to(root)): bundle["classes"][c] for (p, _), c in zip(items, predictions, strict=True)}
    return {"images": len(items), "top1": 100.0 * correct / len(items), "predictions": named}


def top_k(paths: list[Path], bundle: dict, predict: Predict, k: int) -> list[str]:
    """One line per image: its k most likely classes with softmax probabilities."""
    logits = predict(preprocess_files(paths, bundle["preprocessing"])).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    lines = []
    for path, p in zip(paths, probs, strict=True):
        best = np.argsort(-p)[:k]
        lines.append(f"{path}: " + ", ".join(f"{bundle['classes'][c]} {100 * p[c]:.1f}%" for c in best))
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help="image files: prints the top-k of each")
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent,
                        help="the export folder (default: this file's folder)")
    parser.add_argument("--artefact", help="artefact kind (onnx, onnx-int8, ...), file name, or all (default: onnx)")
    parser.add_argument("--runtime", choices=RUNTIMES, help="default: the first installed one that runs it")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    parser.add_argument("--self-test", action="store_true", help="check every golden vector")
    parser.add_argument("--bench", action="store_true", help="time the artefact at the bundle's batch sizes")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--accuracy", type=Path, metavar="DIR", help="top-1 on DIR/<class name>/<image>")
    parser.add_argument("--out", type=Path, help="write --bench or --accuracy results as JSON here")
    return parser.parse_args(argv)


TARGET_MANIFEST = "manifest.json"
TARGET_FORMAT = "cakd.target-bundle"


def bench_target(folder: Path, args: argparse.Namespace) -> dict:
    """Every model of a shortlist bundle in the same interleaved rounds (a burst of load falls on all alike), each
    file's sha256 beside its row so cakd can tell that these are the files it bundled."""
    manifest_path = folder / TARGET_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        s, runtime = manifest["settings"], manifest["runtime"]
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{manifest_path} cannot be read ({type(err).__name__}: {err})") from None
    if manifest.get("format") != TARGET_FORMAT or manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{manifest_path} is not a version-{BUNDLE_VERSION} {TARGET_FORMAT} manifest")
    if runtime_missing(runtime):
        raise BundleError(f"{runtime} cannot run here: {runtime_missing(runtime)}")
    models = {name: m for name, m in manifest["models"].items() if m["file"]}
    timing = {key: getattr(args, key) if getattr(args, key) is not None else s[key]
              for key in ("warmup", "runs", "rounds")}
    predicts = {name: load_runtime(runtime, folder / m["file"], args.threads) for name, m in models.items()}
    x = np.random.default_rng(0).standard_normal((s["batch_size"], *manifest["input"]), dtype=np.float32)
    for predict in predicts.values():
        for _ in range(timing["warmup"]):
            predict(x)
    times = _interleaved(predicts, x, timing)
    rows = [{"model": name, "runtime": s["runtime"], "precision": s["precision"], "artefact": s["artefact"],
             "batch_size": s["batch_size"], "status": "ok", "reason": None, **percentiles(times[name], len(x)),
             "file_mb": (folder / m["file"]).stat().st_size / 2**20, "source": f"target bundle {m['file']}"}
            for name, m in models.items()]
    return {"format": "cakd.target-results", "version": BUNDLE_VERSION, "manifest_sha256": sha256(manifest_path),
            "files": {name: sha256(folder / m["file"]) for name, m in models.items()},
            "system": system_info(runtime, args.threads), "rows": rows}


def _interleaved(predicts: dict[str, Predict], x: np.ndarray, timing: dict) -> dict[str, list[list[float]]]:
    """``rounds`` rounds; in each, every model's ``runs`` calls, the starting model rotating round by round."""
    names = list(predicts)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(timing["rounds"]):
        for name in names[r % len(names):] + names[:r % len(names)]:
            calls = []
            for _ in range(timing["runs"]):
                start = time.perf_counter()
                predicts[name](x)
                calls.append(time.perf_counter() - start)
            times[name].append(calls)
    return times


def write_out(path: Path, results: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    """Each asked artefact in turn (``--artefact all``: every one the runtime runs); the first self-test
    failure sets the exit status, the others still run so one report lists them all."""
    folder = args.bundle
    if args.bench and (folder / TARGET_MANIFEST).is_file() and not (folder / REPORT).is_file():
        results = bench_target(folder, args)
        for row in results["rows"]:
            print(f"{row['model']}: p50 {row['p50_ms']:.3f} ms (rounds {row['p50_round_min_ms']:.3f}-"
                  f"{row['p50_round_max_ms']:.3f})")
        if args.out is not None:
            write_out(args.out, results)
        return 0
    bundle = load_bundle(folder)
    names = [args.artefact] if args.artefact != "all" else [
        k for k, e in bundle["artefacts"].items() if args.runtime is None or args.runtime in e["runtimes"]]
    results: dict = {"rows": [], "accuracy": {}}
    status = 0
    for name in names:
        status = run_artefact(args, folder, bundle, name, results) or status
    if args.out is not None and (args.bench or args.accuracy is not None):
        write_out(args.out, results)
    return status


def run_artefact(args: argparse.Namespace, folder: Path, bundle: dict, name: str, results: dict) -> int:
    """Self-test, bench, score and/or label images with one artefact; 1 on a self-test mismatch."""
    kind, entry = choose_artefact(bundle, folder, name)
    runtime = choose_runtime(entry, kind, args.runtime)
    predict = load_runtime(runtime, folder / entry["file"], args.threads)
    status = 0
    if args.self_test:
        failure = self_test(folder, bundle, kind, runtime, predict)
        if failure is not None:
            print(f"self-test FAILED: {failure}", file=sys.stderr)
            status = 1
        else:
            print(f"self-test passed: {entry['file']} on {runtime}")
    if args.bench:
        timing = {key: getattr(args, key) if getattr(args, key) is not None else bundle["bench"][key]
                  for key in ("warmup", "runs", "rounds")}
        rows = bench(bundle, kind, runtime, predict, folder / entry["file"], timing)
        results["system"] = system_info(runtime, args.threads)
        results["rows"] += rows
        for row in rows:
            print(f"{entry['file']} on {runtime}, batch {row['batch_size']}: p50 {row['p50_ms']:.3f} ms "
                  f"(rounds {row['p50_round_min_ms']:.3f}-{row['p50_round_max_ms']:.3f}), p90 {row['p90_ms']:.3f} ms")
    if args.accuracy is not None:
        scored = results["accuracy"][kind] = accuracy(args.accuracy, bundle, predict)
        print(f"{entry['file']} on {runtime}: top-1 {scored['top1']:.2f}% on {scored['images']} images")
    if args.images:
        print("\n".join(top_k(args.images, bundle, predict, args.top_k)))
    return status


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, IndexError) as err:  # export.json or golden.json edited into another shape
        print(f"error: the bundle's metadata or golden data is malformed ({type(err).__name__}: {err})",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
