"""The user's image folder, on real PNG/JPEG files written by PIL into tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cakd.pipeline.data import build_datasets, prepare_data
from cakd.pipeline.errors import CakdError
from cakd.pipeline.settings.params import DataParams
from tests.conftest import run_cakd, tiny_params, write_params

torch.set_num_threads(2)
SIZE = 16


def make_folder(root: Path, splits: tuple[str, ...] = ("train", "val"), classes: tuple[str, ...] = ("cat", "dog"),
                per_class: int = 4, seed: int = 0) -> Path:
    """Random-content images, PNG and JPEG mixed, of size SIZE x SIZE."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root


def config(root: Path, **kw) -> DataParams:
    return DataParams(name="imagefolder", root=str(root), img_size=SIZE, **kw)


def truncated_jpeg(path: Path) -> None:
    Image.fromarray(np.full((SIZE, SIZE, 3), 90, np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-200])


def test_prepare_lists_files_and_measures_the_training_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    manifest = prepare_data(config(root), seed=0, out_dir=tmp_path / "out")

    assert manifest["classes"] == ["cat", "dog"] and manifest["num_classes"] == 2
    assert manifest["counts"] == {"train": 8, "test": 8} and manifest["skipped"] == {"count": 0, "files": []}
    assert manifest["splits"]["train"]["files"][0] == ["train/cat/00.jpg", 0]
    assert manifest["splits"]["test"]["files"][-1] == ["val/dog/03.png", 1]
    train_paths = [root / rel for rel, _ in manifest["splits"]["train"]["files"]]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in train_paths]) / 255.0
    np.testing.assert_allclose(manifest["mean"], pixels.mean(axis=(0, 1, 2)), atol=1e-9)
    np.testing.assert_allclose(manifest["std"], pixels.std(axis=(0, 1, 2)), atol=1e-9)

    same = prepare_data(config(root), seed=0, out_dir=tmp_path / "again")
    assert same["content_hash"] == manifest["content_hash"]
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / "val/cat/01.png")
    assert prepare_data(config(root), seed=0, out_dir=tmp_path / "changed")["content_hash"] != manifest["content_hash"]


def test_datasets_use_the_manifest_file_list(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    cfg = config(root, augment="random-resized-crop", hflip=True)
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / "train/cat/99.png")  # after prepare

    train, test = build_datasets(cfg, manifest, seed=0)
    assert (len(train), len(test)) == (8, 8)  # no re-scan: the new file is not picked up
    assert train.targets == [0, 0, 0, 0, 1, 1, 1, 1]
    image, label = test[5]
    assert type(image) is torch.Tensor and image.shape == (3, SIZE, SIZE) and label == 1
    assert train[0][0].shape == (3, SIZE, SIZE)


def test_other_sizes_and_modes_become_rgb_at_img_size(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    Image.fromarray(np.full((40, 24), 200, np.uint8), mode="L").save(root / "train/cat/grey.png")
    Image.new("RGBA", (9, 30), (10, 20, 30, 128)).save(root / "val/dog/alpha.png")
    cfg = config(root)
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path)
    train, test = build_datasets(cfg, manifest, seed=0, train_augment=False)
    assert manifest["counts"] == {"train": 9, "test": 9}
    assert {tuple(train[i][0].shape) for i in range(len(train))} == {(3, SIZE, SIZE)}
    assert test[len(test) - 1][0].shape == (3, SIZE, SIZE)


def test_test_folder_is_the_fallback_when_val_is_missing(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", splits=("train", "test"))
    manifest = prepare_data(config(root), seed=0, out_dir=tmp_path / "a")
    assert all(rel.startswith("test/") for rel, _ in manifest["splits"]["test"]["files"])

    make_folder(root, splits=("val",), per_class=2)
    manifest = prepare_data(config(root), seed=0, out_dir=tmp_path / "b")
    assert manifest["counts"]["test"] == 4  # val/ wins when both exist
    assert all(rel.startswith("val/") for rel, _ in manifest["splits"]["test"]["files"])


@pytest.mark.parametrize("broken", ["text", "truncated"])
def test_a_corrupt_image_is_named_by_default(tmp_path: Path, broken: str) -> None:
    root = make_folder(tmp_path / "data")
    prepare_data(config(root), seed=0, out_dir=tmp_path / "out")
    bad = root / "train/dog/bad.jpg"
    if broken == "text":
        bad.write_text("this is not an image\n")
    else:
        truncated_jpeg(bad)
    with pytest.raises(CakdError, match=r"corrupt or unreadable image .*train/dog/bad\.jpg") as err:
        prepare_data(config(root), seed=0, out_dir=tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out/manifest.json").exists()  # the earlier manifest does not pass for fresh


def test_skip_policy_excludes_and_counts_corrupt_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    (root / "train/cat/note.jpg").write_text("not an image")
    truncated_jpeg(root / "val/dog/cut.jpg")
    cfg = config(root, on_corrupt="skip")
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path)

    assert manifest["skipped"] == {"count": 2, "files": ["train/cat/note.jpg", "val/dog/cut.jpg"]}
    kept = [rel for split in ("train", "test") for rel, _ in manifest["splits"][split]["files"]]
    assert "train/cat/note.jpg" not in kept and "val/dog/cut.jpg" not in kept
    assert manifest["counts"] == {"train": 8, "test": 8}
    train, test = build_datasets(cfg, manifest, seed=0)
    assert len(torch.stack([train[i][0] for i in range(len(train))])) == 8


def test_per_class_subset_fills_past_skipped_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", per_class=6)
    for i in range(3):
        (root / f"train/cat/x{i}.jpg").write_text("junk")
    cfg = config(root, on_corrupt="skip", train_per_class=5, test_per_class=2)
    manifest = prepare_data(cfg, seed=7, out_dir=tmp_path / "a")
    assert manifest["class_counts"] == {"train": [5, 5], "test": [2, 2]}
    assert all("/x" not in rel for rel, _ in manifest["splits"]["train"]["files"])
    assert prepare_data(cfg, seed=7, out_dir=tmp_path / "b")["splits"] == manifest["splits"]
    assert prepare_data(cfg, seed=8, out_dir=tmp_path / "c")["splits"] != manifest["splits"]


def test_an_image_broken_after_prepare_names_itself(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    cfg = config(root)
    train, _ = build_datasets(cfg, prepare_data(cfg, seed=0, out_dir=tmp_path), seed=0)
    (root / "train/cat/02.jpg").write_bytes(b"\xff\xd8\xff broken")
    with pytest.raises(CakdError, match=r"corrupt or unreadable image .*train/cat/02\.jpg"):
        train[2]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: shutil.rmtree(root / "train"), r"no train/ folder in .*data"),
    (lambda root: shutil.rmtree(root / "val"), r"has train/ but neither val/ nor test/"),
    (lambda root: [p.unlink() for p in (root / "val/dog").iterdir()], r"class folder .*val/dog has no images"),
    (lambda root: (root / "train/bird").mkdir(), r"class folder .*train/bird has no images"),
    (lambda root: (root / "val/bird").mkdir(), r"must have the same class folders \(missing: -; extra: bird\)"),
    (lambda root: [shutil.rmtree(root / s / c) for s in ("train", "val") for c in ("cat", "dog")],
     r"no class folders in .*train"),
    (lambda root: shutil.rmtree(root), r"data.root .*data is not a folder"),
])
def test_bad_folders_give_one_clear_line(tmp_path: Path, damage, message: str) -> None:
    root = make_folder(tmp_path / "data", per_class=2)
    damage(root)
    with pytest.raises(CakdError, match=message) as err:
        prepare_data(config(root), seed=0, out_dir=tmp_path / "out")
    assert "\n" not in str(err.value)


def test_a_class_whose_images_are_all_corrupt_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", per_class=2)
    for path in (root / "train/dog").iterdir():
        path.write_text("junk")
    with pytest.raises(CakdError, match=r"class folder .*train/dog has no readable images"):
        prepare_data(config(root, on_corrupt="skip"), seed=0, out_dir=tmp_path / "out")


def test_prepare_says_on_the_console_how_many_files_it_skipped(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    (root / "train/cat/note.jpg").write_text("not an image")
    truncated_jpeg(root / "val/dog/cut.jpg")
    data = {"name": "imagefolder", "root": str(root), "img_size": SIZE, "on_corrupt": "skip",
            "train_per_class": 0, "test_per_class": 0}
    write_params(tmp_path / "params.yaml", tiny_params(data=data))
    proc = run_cakd("prepare", cwd=tmp_path, check=True)
    assert ("skipped 2 unreadable image files (on_corrupt: skip): train/cat/note.jpg, val/dog/cut.jpg; "
            "all are listed in the manifest") in proc.stderr
