"""The export bundle: metadata in every ONNX file, golden vectors, and run.py on a target with only numpy, Pillow
and one runtime (no torch, no cakd), failing loudly when the model, its weights or its preprocessing changed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from cakd.export.artefacts import FILES
from cakd.export.bundle import run as runner
from cakd.export.bundle.card import model_card
from cakd.export.bundle.golden import spread_over_classes
from cakd.export.measure.rows import COLUMNS, BenchRow
from cakd.export.runtimes import RUNTIMES, Session, Settings
from cakd.pipeline.data import build_datasets, load_manifest, prepare_data
from cakd.pipeline.data.digits import load_digits
from cakd.pipeline.errors import CakdError
from cakd.pipeline.models import ModelSpec, create_model, save_model
from cakd.pipeline.settings.params import Params
from cakd.pipeline.stages import export
from tests.conftest import run_cakd, write_params
from tests.minimal_env import clean_env, installed, minimal_env

IMG = 16
CLASSES = ("blue", "green", "red")
ORT_ENV = ["numpy", "pillow", "onnxruntime", "flatbuffers", "packaging", "protobuf"]
OPENVINO_ENV = ["numpy", "pillow", "openvino", "openvino-telemetry", "packaging"]


def colour_folder(root: Path, per_split: dict[str, int]) -> Path:
    """Colour images of several sizes and aspect ratios (none at the model's 16 px), PNG and JPEG, whose class is
    their dominant channel: an exported model must resize, crop and order the channels as cakd does."""
    rng = np.random.default_rng(0)
    sizes = [(20, 28), (33, 21), (40, 40), (17, 45), (64, 48)]
    for split, count in per_split.items():
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                w, h = sizes[(i + c) % len(sizes)]
                pixels = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
                pixels[..., 2 - c] += rng.integers(60, 135, (h, w)).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}", quality=95)
    return root


def params_for(data: dict) -> Params:
    return Params.model_validate({
        "data": data, "teacher": {"model": "resnet18"}, "students": {"student": {"model": "resnet10t"}},
        "export": {"parity_images": 16, "calib_images": 16, "int8_max_drop": 100.0, "int8_min_agreement": 50.0},
        "deploy": {"runtimes": ["onnxruntime", "openvino"], "precisions": ["fp32", "int8"]},
        "bench": {"batch_sizes": [1, 4], "warmup": 1, "runs": 3, "rounds": 2}, "qat": {"mode": "off"}})


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, Path]:
    """A colour image folder exported at 16 px by ``cakd export``'s stage: (params, manifest, bundle)."""
    root = tmp_path_factory.mktemp("bundle")
    data = colour_folder(root / "images", {"train": 6, "val": 6})
    params = params_for({"name": "imagefolder", "root": str(data), "img_size": IMG})
    prepare_data(params.data, params.seed, root / "data")
    torch.manual_seed(0)
    checkpoint = root / "student.pt"
    save_model(create_model(ModelSpec("resnet10t", len(CLASSES), IMG)), checkpoint)
    export.run(params, checkpoint, root / "data/manifest.json", root / "student", "onnx", ["fp32", "int8"])
    return params, root / "data/manifest.json", root / "student"


@pytest.fixture
def bundle(made: tuple[Params, Path, Path], tmp_path: Path) -> Path:
    """A copy of the bundle a test may damage."""
    return Path(shutil.copytree(made[2], tmp_path / "student"))


def call(python: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    """run.py in the minimal environment, as a user on the target runs it."""
    return subprocess.run([str(python), str(folder / "run.py"), *args], capture_output=True, text=True,
                          env=clean_env(), timeout=120)


@pytest.fixture(scope="module")
def ort_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return minimal_env(tmp_path_factory.mktemp("ort-env"), ORT_ENV)


@pytest.fixture(scope="module")
def openvino_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return minimal_env(tmp_path_factory.mktemp("openvino-env"), OPENVINO_ENV)


def test_spread_over_classes_takes_every_class_before_any_twice() -> None:
    assert spread_over_classes([0, 0, 0, 1, 1, 2], 4) == [0, 3, 5, 1]
    assert spread_over_classes([2, 2, 1], 16) == [2, 0, 1]


def test_runner_preprocessing_equals_cakds_on_an_image_folder_at_another_size(tmp_path: Path) -> None:
    data = colour_folder(tmp_path / "images", {"train": 2, "val": 4})
    for size in (12, 24):
        params = params_for({"name": "imagefolder", "root": str(data), "img_size": size})
        manifest = prepare_data(params.data, params.seed, tmp_path / f"data{size}")
        _, test_ds = build_datasets(params.data, manifest, params.seed, train_augment=False)
        pre = {"resize": {"shorter_side": size, "interpolation": "bilinear"}, "crop": {"size": size},
               "scale": 1 / 255, "mean": manifest["mean"], "std": manifest["std"], "colour_order": "RGB"}
        ours = runner.preprocess_files([test_ds.root / p for p in test_ds.paths], pre)
        theirs = torch.stack([test_ds[i][0] for i in range(len(test_ds))]).numpy()
        scaled = np.abs(ours - theirs) * np.asarray(manifest["std"]).reshape(1, 3, 1, 1)
        assert ours.shape == theirs.shape == (12, 3, size, size)
        assert scaled.max() <= 1 / 255 + 1e-6, f"{size} px: max difference {scaled.max() * 255:.2f}/255"


def test_runner_preprocessing_equals_cakds_on_the_digits(tmp_path: Path) -> None:
    params = params_for({"name": "digits", "img_size": 12, "train_per_class": 5, "test_per_class": 5})
    manifest = prepare_data(params.data, params.seed, tmp_path / "data")
    _, test_ds = build_datasets(params.data, manifest, params.seed, train_augment=False)
    originals = load_digits().images["test"][manifest["splits"]["test"]["indices"]]
    files = []
    for i, image in enumerate(originals):  # the 8x8 grey originals as the files a user would have
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image[0].numpy(), mode="L").save(files[-1])
    pre = {"resize": {"shorter_side": 12, "interpolation": "bilinear"}, "crop": {"size": 12}, "scale": 1 / 255,
           "mean": manifest["mean"], "std": manifest["std"], "colour_order": "RGB"}
    ours = runner.preprocess_files(files, pre)
    theirs = torch.stack([test_ds[i][0] for i in range(len(test_ds))]).numpy()
    assert np.abs(ours - theirs).max() * max(manifest["std"]) <= 1 / 255 + 1e-6


@pytest.mark.slow
def test_metadata_is_in_every_onnx_file_and_export_json(made: tuple[Params, Path, Path]) -> None:
    params, manifest_path, folder = made
    manifest = load_manifest(manifest_path)
    report = json.loads((folder / "export.json").read_text())
    doc = report["bundle"]
    assert doc["version"] == 1 and doc["classes"] == list(CLASSES)
    assert doc["preprocessing"]["mean"] == manifest["mean"] and doc["preprocessing"]["resize"]["interpolation"]
    assert doc["origin"]["checkpoint_sha256"] == report["checkpoint_sha256"]
    assert (folder / "labels.txt").read_text().split() == list(CLASSES)
    for kind in ("onnx", "onnx-int8", "onnx-int8-openvino"):
        path = folder / report["artefacts"][kind]["file"]
        meta = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
        assert json.loads(meta["classes"]) == list(CLASSES)
        assert json.loads(meta["mean"]) == manifest["mean"] and json.loads(meta["std"]) == manifest["std"]
        embedded = json.loads(meta["cakd.bundle"])
        assert embedded["artefact"] == kind and embedded["model"]["timm_name"] == "resnet10t"
        assert report["artefacts"][kind]["size_bytes"] == path.stat().st_size
    golden = json.loads((folder / "golden/golden.json").read_text())
    assert golden["count"] == 16 and sorted(set(golden["labels"])) == [0, 1, 2]
    assert golden["batch_sizes"] == [1, 4] and len(golden["originals"]) == 16
    assert all((folder / "golden" / name).is_file() for name in golden["originals"])
    assert golden["artefacts"]["onnx-int8"]["tolerance"] == {"kind": "agreement", "min_percent": 50.0}


def _bench_predictions(params: Params, manifest: Path, folder: Path, runtime: str, kind: str) -> list[int]:
    """What the bench's accuracy check predicts for each test image (cakd's torchvision path, cakd's runner)."""
    _, test_ds = build_datasets(params.data, load_manifest(manifest), params.seed, train_augment=False)
    precision = "fp32" if kind == "onnx" else "int8"
    settings = Settings(threads=1, work_dir=folder)
    built = RUNTIMES[runtime].build(Session(folder / json.loads((folder / "export.json").read_text())[
        "artefacts"][kind]["file"], precision, None, IMG, 3, settings))
    images = torch.stack([test_ds[i][0] for i in range(len(test_ds))])
    return built.predict(images).argmax(1).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("env", ["onnxruntime", "openvino"])
def test_a_target_with_only_a_runtime_self_tests_benches_and_scores(
        env: str, made: tuple[Params, Path, Path], request: pytest.FixtureRequest, tmp_path: Path) -> None:
    params, manifest, folder = made
    python = request.getfixturevalue("ort_python" if env == "onnxruntime" else "openvino_python")
    names = {line.split("==")[0].lower() for line in installed(python)}
    assert names == {n.lower() for n in (ORT_ENV if env == "onnxruntime" else OPENVINO_ENV)}
    for module in ("torch", "cakd"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, env=clean_env(),
                               cwd=python.parent)
        assert probe.returncode != 0, f"{module} is importable in the minimal environment"
    data = Path(params.data.root) / "val"
    checked = call(python, folder, "--self-test", "--artefact", "all", "--runtime", env)
    assert checked.returncode == 0, checked.stderr
    int8 = "onnx-int8" if env == "onnxruntime" else "onnx-int8-openvino"  # each runtime's own INT8 file
    assert checked.stdout.split("\n")[:2] == [f"self-test passed: {f} on {env}" for f in ("model.onnx",
                                                                                          FILES[int8])]
    for kind in ("onnx", int8):
        out = tmp_path / f"{kind}.json"
        scored = call(python, folder, "--accuracy", str(data), "--bench", "--artefact", kind, "--out", str(out))
        assert scored.returncode == 0, scored.stderr
        result = json.loads(out.read_text())
        files = sorted(result["accuracy"][kind]["predictions"])
        ours = [CLASSES.index(result["accuracy"][kind]["predictions"][f]) for f in files]
        assert ours == _bench_predictions(params, manifest, folder, env, kind)
        assert [r["batch_size"] for r in result["rows"]] == [1, 4]
        for row in result["rows"]:
            assert set(row) == set(COLUMNS) and BenchRow.from_dict(row).p50_ms > 0 and row["runtime"] == env
        assert result["system"]["runtime"] == env and result["system"]["versions"][env]


def _swap_model(folder: Path) -> None:
    torch.manual_seed(1)
    other = create_model(ModelSpec("resnet10t", len(CLASSES), IMG)).eval()
    torch.onnx.export(other, (torch.zeros(1, 3, IMG, IMG),), str(folder / "model.onnx"), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, dynamo=False)


def _perturb_one_weight(folder: Path) -> None:
    proto = onnx.load(str(folder / "model.onnx"))
    weight = next(t for t in reversed(proto.graph.initializer) if len(t.dims) == 2)
    values = onnx.numpy_helper.to_array(weight).copy()
    values.flat[0] += 0.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(proto, str(folder / "model.onnx"))


def _edit_bundle(folder: Path, change: dict) -> None:
    report = json.loads((folder / "export.json").read_text())
    report["bundle"]["preprocessing"].update(change(report["bundle"]["preprocessing"]))
    (folder / "export.json").write_text(json.dumps(report))


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "named"), [
    (_swap_model, "not the file the golden logits were recorded with"),
    (_perturb_one_weight, "not the file the golden logits were recorded with"),
    (lambda f: _edit_bundle(f, lambda p: {"mean": [m + 0.05 for m in p["mean"]], "std": p["std"][::-1]}),
     "preprocessing in export.json (mean, std) differs"),
    (lambda f: _edit_bundle(f, lambda p: {"colour_order": "BGR"}), "preprocessing in export.json (colour_order)"),
], ids=["swapped-model", "perturbed-weight", "mean-std", "bgr"])
def test_self_test_fails_naming_the_problem(damage: object, named: str, bundle: Path, ort_python: Path) -> None:
    damage(bundle)
    checked = call(ort_python, bundle, "--self-test")
    assert checked.returncode == 1
    line = checked.stderr.strip()
    assert line.startswith("self-test FAILED: model.onnx on onnxruntime, golden image") and named in line, line
    assert "\n" not in line


def _drop_logits(folder: Path) -> None:
    (folder / "golden/logits.npz").unlink()


def _wrong_golden_shape(folder: Path) -> None:
    np.savez(folder / "golden/images.npz", images=np.zeros((16, 8, 8, 3), np.uint8), labels=np.zeros(16))


def _unknown_version(folder: Path) -> None:
    report = json.loads((folder / "export.json").read_text())
    report["bundle"]["version"] = 99
    (folder / "export.json").write_text(json.dumps(report))


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "args", "says"), [
    (lambda f: (f / "model.int8.onnx").unlink(), ["--self-test", "--artefact", "onnx-int8"],
     "model.int8.onnx is missing from the bundle"),
    (_drop_logits, ["--self-test"], "cannot be read"),
    (_wrong_golden_shape, ["--self-test"], "golden images are uint8 (16, 8, 8, 3), expected uint8 (16, 16, 16, 3)"),
    (_unknown_version, ["--self-test"], "bundle metadata version 99 is not one this runner reads"),
    (lambda f: (f / "note.jpg").write_text("not an image"), ["note.jpg"], "is not an image Pillow can read"),
    (lambda f: None, ["--runtime", "openvino"], "openvino cannot run here: the Python package openvino"),
    (lambda f: None, ["--runtime", "tensorrt", "--artefact", "onnx-int8"], "is not made for tensorrt"),
], ids=["missing-file", "missing-golden", "golden-shape", "version", "not-an-image", "runtime-missing",
        "runtime-cannot-run"])
def test_bad_input_is_one_line_and_exit_2(damage: object, args: list[str], says: str, bundle: Path,
                                          ort_python: Path) -> None:
    damage(bundle)
    args = [str(bundle / a) if a.endswith(".jpg") else a for a in args]
    result = call(ort_python, bundle, *args)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_top_k_prints_class_names(bundle: Path, ort_python: Path, made: tuple[Params, Path, Path]) -> None:
    image = next((Path(made[0].data.root) / "val" / "red").iterdir())
    result = call(ort_python, bundle, str(image), "--top-k", "2")
    assert result.returncode == 0 and result.stdout.startswith(f"{image}: ")
    named = result.stdout.strip().removeprefix(f"{image}: ").split(", ")
    assert len(named) == 2 and all(n.split()[0] in CLASSES and n.endswith("%") for n in named)


@pytest.mark.slow
def test_model_cards_restate_the_reports(made: tuple[Params, Path, Path], ort_python: Path, tmp_path: Path) -> None:
    """The export's card gives its gates' numbers; with bench rows (run.py --bench's, BenchRow-shaped) the
    card gives each row's accuracy and latency and the machine, and names an artefact that failed a runtime."""
    _, _, folder = made
    report = json.loads((folder / "export.json").read_text())
    card = (folder / "MODEL_CARD.md").read_text()
    gate = report["artefacts"]["onnx-int8"]["gate"]
    assert f"top-1 {gate['top1']:.2f}% on {gate['images']} test images" in card and "`blue`, `green`, `red`" in card
    assert f"{report['artefacts']['onnx']['parity']['max_abs_diff']:.2e}" in card
    assert "python run.py --self-test" in card
    out = tmp_path / "bench.json"
    assert call(ort_python, folder, "--bench", "--out", str(out)).returncode == 0
    bench = json.loads(out.read_text())
    bench["rows"][0].update(top1=91.25)
    bench["rows"].append({**bench["rows"][1], "runtime": "openvino", "status": "failed", "reason": "top-1 60% < 90%"})
    card = model_card(report, bench, 18)
    assert f"| onnxruntime | fp32 | onnx | 1 | 91.25% | {bench['rows'][0]['p50_ms']:.3f} |" in card
    assert bench["system"]["cpu"] in card and "- onnx on openvino: failed (top-1 60% < 90%)" in card


@pytest.mark.slow
def test_cakd_model_card_writes_beside_the_export_not_in_it(made: tuple[Params, Path, Path], tmp_path: Path) -> None:
    params, manifest, folder = made
    write_params(tmp_path / "params.yaml", params.model_dump(mode="json"))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"system": {"cpu": "test CPU"}, "rows": [BenchRow(
        "student", "onnxruntime", "fp32", "onnx", 1, "ok", top1=50.0, p50_ms=1.5).to_dict()]}))
    args = ["model-card", "--export", str(folder), "--bench", str(bench), "--data", str(manifest)]
    run_cakd(*args, cwd=tmp_path, check=True)
    card = (tmp_path / "reports/cards/student.md").read_text()
    assert "| onnxruntime | fp32 | onnx | 1 | 50.00% | 1.500 |" in card and "scored on 18 test images" in card
    bench.write_text(json.dumps({"rows": []}))
    failed = run_cakd(*args, cwd=tmp_path)
    assert failed.returncode == 2 and failed.stderr.strip().endswith("has no rows of student: bench its export first")


def test_an_engine_built_on_another_gpu_or_tensorrt_is_refused(tmp_path: Path) -> None:
    onnx_file = tmp_path / "model.fp16.onnx"
    with pytest.raises(runner.BundleError, match=r"no TensorRT engine model.fp16.engine here: run ./model.fp16"):
        runner.engine_for(onnx_file, "10.3.0", "NVIDIA H100")
    (tmp_path / "model.fp16.engine").write_bytes(b"plan")
    (tmp_path / "model.fp16.engine.json").write_text(json.dumps({"gpu": "NVIDIA H100", "tensorrt_version": "10.3.0"}))
    assert runner.engine_for(onnx_file, "10.3.0.26", "NVIDIA H100")[0] == tmp_path / "model.fp16.engine"
    for version, gpu in (("10.4.0", "NVIDIA H100"), ("10.3.0", "NVIDIA L4")):
        with pytest.raises(runner.BundleError, match="was built for NVIDIA H100 with TensorRT 10.3.0, this is"):
            runner.engine_for(onnx_file, version, gpu)


def test_a_resize_pillow_cannot_reproduce_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.transforms import v2

    from cakd.export.bundle import metadata

    assert metadata.interpolation() == "bilinear"  # cakd's eval transform as it is
    monkeypatch.setattr(metadata, "eval_geometry", lambda size: v2.Compose(
        [v2.Resize(size, interpolation=v2.InterpolationMode.NEAREST_EXACT), v2.CenterCrop(size)]))
    with pytest.raises(CakdError, match=r"^cakd's eval resize \(nearest-exact, antialias True\) has no Pillow "):
        metadata.interpolation()
