"""Hostile and broken inputs (issue 22): each ends quickly, in bounded memory, with one line on stderr and a
non-zero exit, or runs normally; an interrupted export keeps the last good one; nothing is written outside the
output folders. Every input here is small; the point is what it would make cakd do."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from cakd.export.runtimes import Session, Settings
from cakd.export.runtimes.openvino_cpu import build as openvino_build
from cakd.export.runtimes.ort_cpu import options as ort_options
from cakd.export.runtimes.ort_cpu import ort_runner
from cakd.pipeline.data import prepare_data
from cakd.pipeline.data.datasets import MAX_IMAGE_BYTES
from cakd.pipeline.errors import CakdError
from cakd.pipeline.files.fileio import TEMP_MARK
from cakd.pipeline.models import ModelSpec, create_model, load_model, save_model
from cakd.pipeline.settings.loading import load_params
from cakd.pipeline.settings.params import Params
from tests.conftest import run_cakd_here, tiny_params, write_params

IMG = 16
PARAMS = tiny_params(
    data={"img_size": IMG, "train_per_class": 12, "test_per_class": 4},
    teacher={"model": "resnet10t", "kwargs": {}},
    train={"epochs": 1, "batch_size": 40},
    export={"calib_images": 16, "parity_images": 16},
    deploy={"runtimes": ["onnxruntime", "openvino"], "precisions": ["fp32", "int8"]},
    bench={"batch_sizes": [1], "warmup": 0, "runs": 1, "rounds": 1, "threads": 1},
)
TEACHER = Path("artifacts/teacher/model.pt")
MANIFEST = Path("artifacts/data/manifest.json")


def one_line(err: str) -> str:
    """The single ``cakd: error:`` line cakd printed last (progress lines may come before it: stderr is also
    the console), with no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("cakd: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err[-3000:]
    return errors[0]


def fails(args: list[str], cwd: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run cakd in this process; it must exit 2 with one line, which is returned."""
    code, err = run_cakd_here(args, cwd, capsys, monkeypatch)
    assert code == 2, err[-3000:]
    return one_line(err)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml, the digits manifest and an (untrained) ResNet-10-T teacher, at the CLI's default paths."""
    root = tmp_path_factory.mktemp("hostile")
    write_params(root / "params.yaml", PARAMS)
    params = Params.model_validate(PARAMS)
    prepare_data(params.data, params.seed, root / MANIFEST.parent)
    torch.manual_seed(0)
    save_model(create_model(ModelSpec("resnet10t", 10, IMG)), root / TEACHER)
    return root


# --- 1. Small inputs that would take the machine down --------------------------------------------------------

def png(path: Path, width: int, height: int) -> Path:
    """A valid grey PNG of any size, written row by row (a 12000x12000 one is 140 KB and needs no big buffer)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then black pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def image_folder(root: Path) -> Path:
    """train/{a,b} and val/{a,b} with two good 8x8 PNGs of noise each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


def prepare_folder(root: Path, capsys, monkeypatch, *more: str) -> tuple[int, str]:
    write_params(root / "params.yaml", tiny_params(data={"name": "imagefolder", "root": str(root / "images"),
                                                         "img_size": IMG}))
    return run_cakd_here(["prepare", "--out", "out", *more], root, capsys, monkeypatch)


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_special_file_named_png_is_refused_not_read(tmp_path: Path, kind: str, capsys, monkeypatch) -> None:
    bad = image_folder(tmp_path / "images") / "train" / "a" / "zero.png"
    if kind == "device":
        bad.symlink_to("/dev/zero")  # read whole: grew `cakd prepare` past 1.8 GB in 7 s
    else:
        os.mkfifo(bad)  # opened for reading: blocks forever
    code, err = prepare_folder(tmp_path, capsys, monkeypatch)
    assert code == 2
    what = "a character device" if kind == "device" else "a FIFO"
    assert f"zero.png is not a regular file ({what})" in one_line(err)
    assert not (tmp_path / "out" / "manifest.json").exists()
    code, err = prepare_folder(tmp_path, capsys, monkeypatch, "-S", "data.on_corrupt=skip")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"]["files"] == ["train/a/zero.png"]


def test_an_image_of_too_many_pixels_or_bytes_is_refused_before_decoding(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:
    folder = image_folder(tmp_path / "images")
    huge = png(folder / "train" / "a" / "huge.png", 12000, 12000)  # 432 MB as RGB; PIL only warns
    assert huge.stat().st_size < 200_000
    code, err = prepare_folder(tmp_path, capsys, monkeypatch)
    assert code == 2
    assert "huge.png: 12000x12000 pixels, more than the 40,000,000 allowed" in one_line(err)
    huge.unlink()
    big = folder / "train" / "b" / "big.png"
    with open(big, "wb") as f:  # sparse: no disk used, but more bytes than any image may have
        f.truncate(MAX_IMAGE_BYTES + 1)
    code, err = prepare_folder(tmp_path, capsys, monkeypatch)
    assert code == 2
    assert f"big.png is {MAX_IMAGE_BYTES + 1:,} bytes, more than the {MAX_IMAGE_BYTES:,} allowed" in one_line(err)


def test_a_symlink_loop_in_the_image_folder_ends(tmp_path: Path, capsys, monkeypatch) -> None:
    folder = image_folder(tmp_path / "images")
    (folder / "train" / "a" / "again").symlink_to(folder / "train" / "a")
    (folder / "train" / "a" / "up").symlink_to(folder / "train")
    code, err = prepare_folder(tmp_path, capsys, monkeypatch)
    assert code == 0, err


def test_a_compressed_idx_bomb_is_refused_as_it_unpacks(tmp_path: Path) -> None:
    from cakd.pipeline.data.idx import MAX_IDX_BYTES, read_bytes

    packer = zlib.compressobj(9, wbits=31)
    member = packer.compress(bytes(16 << 20)) + packer.flush()  # 16 MB of zeros in 16 KB of gzip
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(member * 20)  # members concatenate: 320 MB
    with pytest.raises(CakdError, match=f"unpacks to more than {MAX_IDX_BYTES:,} bytes"):
        read_bytes(tmp_path / "train-images-idx3-ubyte.gz")


def spec_checkpoint(project: Path, path: Path, **spec: object) -> Path:
    """The project's real tiny checkpoint, with a saved spec that says something else."""
    ckpt = torch.load(project / TEACHER, weights_only=True)
    ckpt["spec"] = spec.pop("whole") if "whole" in spec else {**ckpt["spec"], **spec}
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(("spec", "expected"), [
    ({"img_size": 60000}, "'img_size': Input should be less than or equal to 1024 (got 60000)"),
    ({"num_classes": 0}, "'num_classes': Input should be greater than or equal to 1"),
    ({"num_classes": 10**9}, "'num_classes': Input should be less than or equal to 100000"),
    ({"in_chans": 4096}, "'in_chans': Input should be less than or equal to 4"),
    ({"kwargs": [1, 2]}, "'kwargs': Input should be a valid dictionary"),
    ({"kwargs": {"img_size": 60000}}, "kwargs may not set img_size"),
    ({"whole": ["resnet10t"]}, "Input should be a valid dictionary"),
    ({"whole": {"name": "resnet10t"}}, "missing key 'num_classes'"),
    ({"whole": {"name": "resnet10t", "num_classes": "ten", "img_size": 16}}, "'num_classes': Input should be a valid"),
])
def test_a_checkpoint_spec_is_checked_by_the_params_schema(project: Path, tmp_path: Path, spec: dict,
                                                           expected: str) -> None:
    path = spec_checkpoint(project, tmp_path / "model.pt", **spec)
    with pytest.raises(CakdError, match="model spec is invalid") as caught:
        load_model(path)
    assert expected in str(caught.value)


def test_export_of_a_checkpoint_claiming_60000_px_is_one_line(project: Path, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    bad = spec_checkpoint(project, tmp_path / "big.pt", img_size=60000)  # 1.5 KB of spec: allocated until killed
    line = fails(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "x")], project, capsys, monkeypatch)
    assert "'img_size': Input should be less than or equal to 1024 (got 60000)" in line
    assert not (tmp_path / "x").exists()


# 9 levels of 9 aliases: 5 KB of YAML, 387 M strings once expanded. Under a key the schema checks (seed must be
# an integer), the old error message quoted the whole expanded value: 312 MB, 1.65 GB resident.
ALIAS_BOMB = "seed:\n" + "".join([f"  a0: &a0 [{', '.join(['lol'] * 9)}]\n"]
                                 + [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)])


@pytest.mark.parametrize(("text", "expected"), [
    (ALIAS_BOMB, "its aliases expand to more than 100,000 values (an alias bomb?)"),
    ("a: &a [*a]\n", "an alias refers to a value that contains it (a recursive alias)"),
    ("teacher: " + "[" * 20000 + "]" * 20000 + "\n", "nested more than 64 levels deep (line 1)"),
    ("train: {epochs: 1}\nseed: 0\ntrain: {epochs: 2}\n",
     "key 'train' appears twice in one mapping (lines 1 and 3); the second would silently replace the first"),
])
def test_params_yaml_bombs_and_duplicates_are_one_short_line(tmp_path: Path, text: str, expected: str, capsys,
                                                             monkeypatch) -> None:
    (tmp_path / "params.yaml").write_text(text)
    started = time.monotonic()
    line = fails(["prepare"], tmp_path, capsys, monkeypatch)
    assert time.monotonic() - started < 5
    assert line == f"cakd: error: params file params.yaml: {expected}"
    assert len(line) < 300  # the bomb's message was 312 MB: it echoed the expanded value


def test_an_alias_bomb_in_an_override_is_one_short_line(tmp_path: Path, capsys, monkeypatch) -> None:
    write_params(tmp_path / "params.yaml", tiny_params())
    bomb = "{" + ", ".join(line.strip() for line in ALIAS_BOMB.splitlines()[1:]) + "}"
    line = fails(["prepare", "-S", f"seed={bomb}"], tmp_path, capsys, monkeypatch)
    assert "aliases expand to more than 100,000 values" in line and len(line) < 400


def test_a_bad_value_is_quoted_by_a_bounded_prefix(tmp_path: Path, capsys, monkeypatch) -> None:
    write_params(tmp_path / "params.yaml", tiny_params())
    line = fails(["prepare", "-S", f"train.lr={'9' * 100_000}x"], tmp_path, capsys, monkeypatch)
    assert "'train.lr': Input should be a valid number" in line and len(line) < 600


# --- 2. Weights of another architecture ----------------------------------------------------------------------

def test_weights_of_another_architecture_are_refused_naming_how_much_matched(project: Path, tmp_path: Path, capsys,
                                                                             monkeypatch) -> None:
    import timm
    from safetensors.torch import save_file

    mobilenet = tmp_path / "mobilenetv2.safetensors"
    save_file(timm.create_model("mobilenetv2_050", num_classes=10).state_dict(), str(mobilenet))
    line = fails(["train-teacher", "-S", "train.epochs=0", "-S", f"teacher.weights={mobilenet}",
                  "--out", str(tmp_path / "teacher")], project, capsys, monkeypatch)
    assert f"weights {mobilenet} fit only" in line and "parameter tensors of ResNet" in line
    assert "at least 50% must load" in line
    assert not (tmp_path / "teacher" / "model.pt").exists()


# --- 3. One line instead of a traceback ----------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path: Path):
    """A 1 MiB tmpfs filled to the last byte (root only; skipped where mounting is not permitted)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, bytes(4096)):
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(project: Path, full_disk: Path, capsys,
                                                                 monkeypatch) -> None:
    commands = {
        "prepare": ["prepare", "--out", str(full_disk / "data")],
        "train": ["train-teacher", "--out", str(full_disk / "teacher")],
        "export": ["export", "--checkpoint", str(TEACHER), "--out", str(full_disk / "export")],
    }
    for name, args in commands.items():
        line = fails(args, project, capsys, monkeypatch)
        assert "No space left on device (ENOSPC)" in line or "the disk is full" in line, (name, line)
        left = [p.relative_to(full_disk) for p in full_disk.rglob("*") if p.name != "filler" and not p.is_dir()]
        assert left == [], (name, left)


@pytest.mark.parametrize("command", [["prepare"], ["train-teacher"], ["export", "--checkpoint", str(TEACHER)],
                                     ["bench-latency", "x=artifacts/teacher/model.pt"], ["summary"]])
def test_out_naming_a_file_is_one_line_before_any_work(project: Path, tmp_path: Path, command: list[str], capsys,
                                                       monkeypatch) -> None:
    occupied = tmp_path / "occupied"
    occupied.write_text("mine")
    out = occupied / "summary.json" if command == ["summary"] else occupied
    line = fails([*command, "--out", str(out)], project, capsys, monkeypatch)
    assert f"{occupied} is a file, not a folder" in line
    assert occupied.read_text() == "mine"
    line = fails([*command, "--out", str(occupied / "sub" / "dir")], project, capsys, monkeypatch)
    assert f"is inside {occupied}, which is a file" in line


def test_non_utf8_params_and_file_names_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "params.yaml").write_bytes(b"seed: 0\nteacher: {model: caf\xe9}\n")
    line = fails(["prepare"], tmp_path, capsys, monkeypatch)
    assert line == "cakd: error: params file params.yaml is not UTF-8 text (byte 0xe9 at offset 28)"
    folder = image_folder(tmp_path / "images")
    latin1 = os.fsdecode(bytes(folder / "train" / "a") + b"/\xe9t\xe9.png")
    shutil.copyfile(folder / "train" / "a" / "0.png", latin1)
    code, err = prepare_folder(tmp_path, capsys, monkeypatch)
    assert code == 2
    assert "train/a/\\xe9t\\xe9.png has a name that is not UTF-8 text: rename it" in one_line(err)
    os.unlink(latin1)
    os.rename(folder / "val" / "b", os.fsdecode(bytes(folder / "val") + b"/\xff"))
    os.rename(folder / "train" / "b", os.fsdecode(bytes(folder / "train") + b"/\xff"))
    code, err = prepare_folder(tmp_path, capsys, monkeypatch)
    assert code == 2 and "class folder" in err and "train/\\xff has a name that is not UTF-8" in one_line(err)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"embed_dim": 100, "depth": 4, "num_heads": 3}, "AssertionError"),
    ({"depth": -2}, "model 'vit_tiny_patch16_224' cannot be built at 16 px with kwargs {'depth': -2}"),
    ({"embed_dim": 200_000, "depth": 4, "num_heads": 2}, "parameters, more than the 300,000,000 allowed"),
    ({"no_such_argument": 1}, "TypeError"),
])
def test_kwargs_the_model_rejects_are_one_line(tmp_path: Path, kwargs: dict, expected: str, capsys,
                                               monkeypatch) -> None:
    spec = ModelSpec("vit_tiny_patch16_224", 10, IMG, kwargs=kwargs)
    with pytest.raises(CakdError) as caught:
        create_model(spec)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_bad_kwargs_through_the_cli(project: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    line = fails(["train-teacher", "-S", "teacher.model=vit_tiny_patch16_224", "-S",
                  "teacher.kwargs={embed_dim: 100, depth: 4, num_heads: 3}", "--out", str(tmp_path / "t")],
                 project, capsys, monkeypatch)
    assert "model 'vit_tiny_patch16_224' cannot be built" in line and "'num_heads': 3" in line


def onnx_file(path: Path, input_shape: list[int], output_shape: list[int], ops: tuple[str, ...] = ("Identity",),
              domain: str = "") -> Path:
    """A small valid ONNX graph (a chain of one-input ops) with the given input and output shapes."""
    names = ["input", *[f"t{i}" for i in range(len(ops) - 1)], "logits"]
    nodes = [helper.make_node(op, [a], [b], domain=domain) for op, a, b in zip(ops, names[:-1], names[1:], strict=True)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, output_shape)])
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return path


@pytest.fixture(scope="module")
def bad_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    (root / "random.onnx").write_bytes(os.urandom(4096))
    (root / "empty.onnx").write_bytes(b"")
    return {"random": root / "random.onnx", "empty": root / "empty.onnx",
            "rank2": onnx_file(root / "rank2.onnx", [1, 4], [1, 4]),
            "60000px": onnx_file(root / "60000px.onnx", [1, 3, 60000, 60000], [1, 3], ("GlobalAveragePool", "Flatten")),
            "unknown-op": onnx_file(root / "unknown-op.onnx", [1, 3, IMG, IMG], [1, 10], ("NoSuchOp",),
                                    "no.such.domain")}


@pytest.mark.parametrize(("name", "expected"), [
    ("random", "is not a readable ONNX model"), ("empty", "is not a readable ONNX model"),
    ("rank2", "takes an input of shape [1, 4], not a batch of square images"),
    ("60000px", "'img_size': Input should be less than or equal to 1024 (got 60000)"),
    ("unknown-op", "onnxruntime cannot load"),
])
def test_malformed_onnx_given_to_the_bench_is_one_line(project: Path, bad_onnx: dict[str, Path], name: str,
                                                       expected: str, tmp_path: Path, capsys, monkeypatch) -> None:
    line = fails(["bench-latency", str(bad_onnx[name]), "--out", str(tmp_path / "bench")], project, capsys,
                 monkeypatch)
    assert expected in line


@pytest.mark.parametrize("name", ["random", "empty", "rank2", "unknown-op"])
def test_every_onnx_runtime_refuses_a_malformed_file_in_one_line(bad_onnx: dict[str, Path], name: str,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(CakdError, match="onnxruntime cannot load|rank-2 input") as by_ort:
        ort_runner(bad_onnx[name], ort_options())
    session = Session(bad_onnx[name], "fp32", None, IMG, 3, Settings(1, tmp_path))
    if name == "rank2":  # OpenVINO reads it; the bench refuses the shape before any runtime sees it
        return
    with pytest.raises(CakdError, match="OpenVINO cannot load") as by_openvino:
        openvino_build(session)
    for err in (by_ort.value, by_openvino.value):
        assert "\n" not in str(err) and len(str(err)) < 600


@pytest.mark.parametrize(("report", "expected"), [
    ('{"artefacts": {}}', "export.json: missing key 'model' (re-run cakd export)"),
    ('{"artefacts": {}, "model": {"img_size": 60000, "num_classes": 10}}', "less than or equal to 1024"),
    ("[1, 2]", "export.json is not a JSON object (it holds [1, 2]) (re-run cakd export)"),
    ("[" * 100_000, "not usable JSON: nested too deeply"),
])
def test_a_malformed_export_json_is_one_line(project: Path, tmp_path: Path, report: str, expected: str, capsys,
                                             monkeypatch) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "export.json").write_text(report)
    line = fails(["bench-latency", str(folder), "--out", str(tmp_path / "bench")], project, capsys, monkeypatch)
    assert expected in line


# --- 6. Names -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["deit\n", "teacher\n", "a/b", "teacher"])
def test_student_names_must_match_whole(tmp_path: Path, name: str) -> None:
    write_params(tmp_path / "params.yaml", tiny_params(students={name: {"model": "resnet10t"}}))
    with pytest.raises(CakdError, match="must be letters, digits") as caught:
        load_params(tmp_path / "params.yaml")
    assert repr(name) in str(caught.value)


# --- 4 and 5. Exports replaced whole; nothing written outside the outputs -------------------------------------

def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cakd_process(args: list[str], cwd: Path, home: Path) -> subprocess.Popen:
    """A real cakd process with HOME and TMPDIR in folders of their own (what it writes there is visible)."""
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home / "tmp"), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", "DVC_SITE_CACHE_DIR": str(home / "dvc-site")}  # DVC's /var/tmp/dvc, visible
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "MPLCONFIGDIR", "ORT_DISABLE_TELEMETRY",
                 "CAKD_TELEMETRY", "CI", "TORCHINDUCTOR_CACHE_DIR", "DVC_ROOT"):
        env.pop(name, None)
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "cakd.pipeline.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def system_temp_files(folder: Path) -> list[str]:
    """What is in the system's temporary folder, less the empty ``torchinductor_<user>`` folder importing
    torchvision makes there (torch's compile cache; cakd never compiles, so it stays empty)."""
    found = [p for p in folder.rglob("*") if not (p.is_dir() and p.name.startswith("torchinductor_"))]
    return sorted(str(p.relative_to(folder)) for p in found)


def run_ok(args: list[str], cwd: Path, home: Path) -> None:
    proc = cakd_process(args, cwd, home)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"cakd {' '.join(args)}:\n{err[-3000:]}"


@pytest.mark.slow
def test_a_killed_re_export_keeps_the_previous_export_and_its_temp_files_go_on_the_next_run(
        project: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "export"
    code, err = run_cakd_here(["export", "--checkpoint", str(project / TEACHER), "--out", str(out)], project,
                              capsys, monkeypatch)
    assert code == 0, err
    before = snapshot(out)
    assert "export.json" in before and "model.onnx" in before
    proc = cakd_process(["export", "--checkpoint", str(project / TEACHER), "--out", str(out)], project,
                        tmp_path / "home")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill in the middle of INT8 quantisation
        if list(tmp_path.glob(f"{TEMP_MARK}export.*/.int8-forms/*")):  # the INT8 forms' work folder is filling
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the export ended before it could be killed"
    assert snapshot(out) == before  # the previous export, as it was
    assert list(tmp_path.glob(f"{TEMP_MARK}export.*")), "the kill should have left its temporary folder"
    assert system_temp_files(tmp_path / "home" / "tmp") == []
    code, err = run_cakd_here(["export", "--checkpoint", str(project / TEACHER), "--out", str(out), "--precision",
                               "fp32"], project, capsys, monkeypatch)  # the next run (FP32 only: quicker)
    assert code == 0, err
    assert not list(tmp_path.glob(f"{TEMP_MARK}*")) and not list(out.rglob(f"{TEMP_MARK}*"))
    assert set(snapshot(out)) == {"export.json", "model.onnx", "model.pt", "labels.txt", "run.py", "MODEL_CARD.md",
                                  "golden/golden.json", "golden/images.npz", "golden/logits.npz"}  # the bundle


@pytest.mark.slow
def test_a_train_export_bench_run_writes_only_inside_the_project(tmp_path: Path) -> None:
    """HOME, TMPDIR and DVC's site cache are empty folders of their own; the project is a git + DVC repository
    (where dvclive used to open DVC). Every file the three commands create must be inside the project's output
    folders."""
    project, home = tmp_path / "project", tmp_path / "home"
    tmp = home / "tmp"
    project.mkdir()
    write_params(project / "params.yaml", PARAMS)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True, env={
        **os.environ, "HOME": str(home), "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site")})
    shutil.rmtree(tmp_path / "dvc-site", ignore_errors=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)  # a clone has commits: dvclive then used DVC
    subprocess.run(["git", "-c", "user.name=cakd", "-c", "user.email=cakd@localhost", "commit", "-qm", "start"],
                   cwd=project, check=True)
    for name in home.iterdir() if home.exists() else []:
        shutil.rmtree(name) if name.is_dir() else name.unlink()
    project_before = set(snapshot(project))
    params = Params.model_validate(PARAMS)
    prepare_data(params.data, params.seed, project / MANIFEST.parent)
    for args in (["train-teacher"],
                 ["export", "--checkpoint", str(TEACHER), "--out", "artifacts/export/t"],
                 ["bench-latency", "t=artifacts/export/t", "--data", str(MANIFEST)]):
        run_ok(args, project, home)
    outside_home = [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and tmp not in p.parents]
    allowed_cache = [p for p in outside_home if p.startswith(".cache/matplotlib/")]  # its font list: see README
    assert sorted(set(outside_home) - set(allowed_cache)) == []
    assert system_temp_files(tmp) == []
    assert not (home / "dvc-site").exists()  # dvclive opened no DVC repository
    created = set(snapshot(project)) - project_before
    assert created and all(p.split("/")[0] in ("artifacts", "reports") for p in created), sorted(created)


def _limit_address_space() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (6_000_000_000, 6_000_000_000))  # `ulimit -v 6000000`


@pytest.mark.slow
def test_under_a_6_gb_address_space_hostile_inputs_end_in_one_line_within_seconds(project: Path,
                                                                                  tmp_path: Path) -> None:
    """As a separate process under `ulimit -v 6000000` (torch and onnxruntime reserve ~3 GB at start): an alias
    bomb, a 60000 px checkpoint spec, a FIFO named .png and a malformed ONNX file each end in seconds, exit 2,
    one line."""
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    big = spec_checkpoint(project, tmp_path / "big.pt", img_size=60000)
    images = tmp_path / "images"
    for split in ("train", "val"):
        (images / split / "a").mkdir(parents=True)
        os.mkfifo(images / split / "a" / "x.png")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07" + os.urandom(64))
    cases = {
        "alias bomb": (["prepare", "-p", str(tmp_path / "bomb.yaml")], "aliases expand"),
        "60000 px spec": (["export", "--checkpoint", str(big), "--out", str(tmp_path / "x")], "60000"),
        "FIFO as image": (["prepare", "-S", "data.name=imagefolder", "-S", f"data.root={images}",
                           "--out", str(tmp_path / "data")], "x.png"),
        "malformed ONNX": (["bench-latency", f"m={tmp_path / 'broken.onnx'}", "--out", str(tmp_path / "b")],
                           "broken.onnx"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, (args, expected) in cases.items():
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "cakd.pipeline.cli", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=120, preexec_fn=_limit_address_space)
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert expected in one_line(proc.stderr), name
        assert time.monotonic() - started < 60, name
