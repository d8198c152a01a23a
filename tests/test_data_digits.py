"""The bundled digits source end to end: prepare -> manifest -> datasets; plus manifest checks and mixup."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from cakd.pipeline.data import build_datasets, build_mixup, load_manifest, prepare_data
from cakd.pipeline.data.digits import load_digits as load_pool
from cakd.pipeline.errors import CakdError
from cakd.pipeline.settings.params import DataParams

torch.set_num_threads(2)


def split_indices(manifest: dict) -> tuple[list[int], list[int]]:
    return manifest["splits"]["train"]["indices"], manifest["splits"]["test"]["indices"]


def test_prepare_writes_a_stratified_seeded_split(tmp_path: Path) -> None:
    cfg = DataParams(name="digits", img_size=16, test_fraction=0.25)
    manifest = prepare_data(cfg, seed=3, out_dir=tmp_path)

    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["source"] == "digits" and manifest["num_classes"] == 10
    assert manifest["classes"] == [str(d) for d in range(10)]
    train, test = split_indices(manifest)
    assert not set(train) & set(test) and len(train) + len(test) == 1797
    assert manifest["counts"] == {"train": len(train), "test": len(test)}
    for n_train, n_test in zip(manifest["class_counts"]["train"], manifest["class_counts"]["test"], strict=True):
        assert abs(n_test - 0.25 * (n_train + n_test)) <= 1  # every class keeps its share in test
    assert manifest["content_hash"].startswith("sha256:") and len(manifest["mean"]) == len(manifest["std"]) == 3

    again = prepare_data(cfg, seed=3, out_dir=tmp_path / "again")
    other = prepare_data(cfg, seed=4, out_dir=tmp_path / "other")
    assert split_indices(again) == (train, test) and again["content_hash"] == manifest["content_hash"]
    assert split_indices(other)[1] != test and other["content_hash"] != manifest["content_hash"]


def test_datasets_are_normalised_with_the_manifest_statistics(tmp_path: Path) -> None:
    cfg = DataParams(name="digits", img_size=16)
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path)
    train, test = build_datasets(cfg, load_manifest(tmp_path / "manifest.json"), seed=0, train_augment=False)

    assert (len(train), len(test)) == (manifest["counts"]["train"], manifest["counts"]["test"])
    image, label = train[0]
    assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.shape == (3, 16, 16)
    assert isinstance(label, int) and 0 <= label < 10
    pixels = torch.stack([train[i][0] for i in range(len(train))]).double()
    assert pixels.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # mean/std were measured on exactly these pixels
    assert (pixels.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    digits = load_digits()
    assert train.targets == digits.target[manifest["splits"]["train"]["indices"]].tolist()


def test_train_augmentation_is_random_and_eval_is_fixed(tmp_path: Path) -> None:
    cfg = DataParams(name="digits", img_size=16, augment="pad-crop", hflip=True)
    manifest = prepare_data(cfg, seed=0, out_dir=tmp_path)
    train, test = build_datasets(cfg, manifest, seed=0)

    torch.manual_seed(0)
    views = [train[7][0] for _ in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(test[7][0], test[7][0])

    rrc = cfg.model_copy(update={"augment": "random-resized-crop"})
    train_rrc, _ = build_datasets(rrc, manifest, seed=0)
    assert train_rrc[0][0].shape == (3, 16, 16)


def test_a_loader_batch_has_the_training_shapes(tmp_path: Path) -> None:
    cfg = DataParams(name="digits", img_size=32)
    train, _ = build_datasets(cfg, prepare_data(cfg, seed=0, out_dir=tmp_path), seed=0)
    images, labels = next(iter(DataLoader(train, batch_size=64, shuffle=True)))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64


def test_per_class_subset_is_fixed_by_the_seed(tmp_path: Path) -> None:
    cfg = DataParams(name="digits", img_size=16, train_per_class=5, test_per_class=3)
    first = prepare_data(cfg, seed=1, out_dir=tmp_path / "a")
    assert first["class_counts"] == {"train": [5] * 10, "test": [3] * 10}
    assert prepare_data(cfg, seed=1, out_dir=tmp_path / "b")["splits"] == first["splits"]
    assert prepare_data(cfg, seed=2, out_dir=tmp_path / "c")["splits"] != first["splits"]

    full = prepare_data(cfg.model_copy(update={"train_per_class": 0, "test_per_class": 0}), 1, tmp_path / "d")
    subset, pool = first["splits"]["train"]["indices"], full["splits"]["train"]["indices"]
    assert set(subset) <= set(pool)
    assert max(subset) > sorted(pool)[100]  # drawn from the whole class, not its first images
    train, test = build_datasets(cfg, first, seed=1)
    assert (len(train), len(test)) == (50, 30)
    assert sorted(train.targets) == sorted(list(range(10)) * 5)


def test_load_manifest_rejects_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CakdError, match="data manifest not found"):
        load_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CakdError, match="not valid JSON"):
        load_manifest(tmp_path / "manifest.json")
    manifest = prepare_data(DataParams(), seed=0, out_dir=tmp_path)
    del manifest["mean"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CakdError, match="missing key 'mean'.*cakd prepare"):
        load_manifest(tmp_path / "manifest.json")


def test_a_manifest_from_other_data_params_is_refused(tmp_path: Path) -> None:
    manifest = prepare_data(DataParams(img_size=16), seed=0, out_dir=tmp_path)
    with pytest.raises(CakdError, match=r"data.img_size=16, params now say 32: re-run `cakd prepare`"):
        build_datasets(DataParams(img_size=32), manifest, seed=0)
    train, _ = build_datasets(DataParams(img_size=16, augment="none", hflip=True), manifest, seed=0)
    assert len(train) == manifest["counts"]["train"]  # augmentation is not part of the selection


def test_mixup_builder_follows_the_params() -> None:
    assert build_mixup(DataParams(), num_classes=10) is None

    smooth = build_mixup(DataParams(label_smoothing=0.1), num_classes=4)
    x = torch.rand(4, 3, 8, 8)
    mixed, target = smooth(x.clone(), torch.tensor([0, 1, 2, 3]))
    assert torch.equal(mixed, x)  # smoothing alone never mixes images
    assert torch.allclose(target.diagonal(), torch.full((4,), 0.9 + 0.1 / 4))

    torch.manual_seed(0)
    mix = build_mixup(DataParams(mixup=1.0, cutmix=1.0), num_classes=4)
    mixed, target = mix(x.clone(), torch.tensor([0, 1, 2, 3]))
    assert not torch.equal(mixed, x)
    assert target.shape == (4, 4) and torch.allclose(target.sum(dim=1), torch.ones(4))
    assert (target > 0).sum(dim=1).min() == 2  # each target blends its own class with the flipped partner's


def test_the_digits_pool_is_exactly_scikit_learns_digits() -> None:
    """Read from the bundled CSV (scikit-learn not imported): the same images, labels and order."""
    pools, digits = load_pool(), load_digits()
    expected = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    assert np.array_equal(pools.images["train"].squeeze(1).numpy(), expected)
    assert pools.labels["train"].tolist() == digits.target.tolist()
    assert pools.classes == [str(c) for c in digits.target_names]


def test_training_stages_do_not_import_scikit_learn() -> None:
    """Every stage pays its imports once per `dvc repro`: scikit-learn (~1 s) stays in prepare and evaluate."""
    code = "import sys, cakd.pipeline.stages.train, cakd.pipeline.stages.export; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
