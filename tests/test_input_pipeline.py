"""The training input pipeline: worker counts that change speed, never the weights (docs/GPU.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from cakd.pipeline.data import build_datasets, prepare_data, resolve_workers
from cakd.pipeline.data.loading import MAX_AUTO_WORKERS, SeededItems, SeededSampler, train_loader
from cakd.pipeline.errors import CakdError
from cakd.pipeline.settings.params import DataParams, MachineParams
from tests.conftest import run_cakd_here, tiny_params, write_params
from tests.test_data_imagefolder import make_folder

SIZE = 16


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The digits (in-memory, resized once) and an image folder (decoded per item), as training builds them."""
    root = tmp_path_factory.mktemp("inputs")
    out = {}
    for name, cfg in {"digits": DataParams(name="digits", img_size=SIZE, train_per_class=4, test_per_class=2),
                      "folder": DataParams(name="imagefolder", root=str(make_folder(root / "data")), img_size=SIZE)
                      }.items():
        manifest = prepare_data(cfg, 0, root / name)
        out[name] = build_datasets(cfg, manifest, 0)[0]
    return out


def test_auto_workers_resolve_as_documented(datasets: dict) -> None:
    digits, folder = datasets["digits"], datasets["folder"]
    assert [resolve_workers("auto", digits, cores=c) for c in (1, 2, 64)] == [0, 0, 0]  # a crop and a flip
    assert [resolve_workers("auto", folder, cores=c) for c in (1, 2, 4, 64)] == [0, 1, 3, MAX_AUTO_WORKERS]
    assert resolve_workers("auto", folder, processes_per_node=4, cores=16) == 3  # the node's cores are shared
    assert resolve_workers(5, digits) == 5 and resolve_workers(0, folder) == 0  # a number is taken as is
    assert MachineParams().num_workers == "auto"


def test_global_batch_is_the_same_images_whatever_the_process_count() -> None:
    one = SeededSampler(50, 8)
    two = [SeededSampler(50, 8, rank, 2) for rank in range(2)]
    for sampler in (one, *two):
        sampler.set_epoch_seed(7)
    assert len(one) == 48 and [len(s) for s in two] == [24, 24]  # whole global batches only
    single = list(one)
    ranks = [list(s) for s in two]
    for step in range(6):
        together = sorted(ranks[0][step * 4:(step + 1) * 4] + ranks[1][step * 4:(step + 1) * 4])
        assert together == sorted(single[step * 8:(step + 1) * 8])  # same images, same item seeds
    assert list(one) == single  # the epoch seed alone decides the order
    one.set_epoch_seed(8)
    assert list(one) != single


def test_seeded_items_leave_the_callers_random_state_alone() -> None:
    items = SeededItems([torch.rand(1) for _ in range(3)])
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    items[(1, 123)]
    assert torch.equal(torch.rand(1), expected)


def test_train_loader_keeps_the_global_batch_or_says_why_not(datasets: dict) -> None:
    digits = datasets["digits"]  # 40 images
    loader, _ = train_loader(digits, 8, rank=1, world=2, workers=0, device=torch.device("cpu"))
    images, _ = next(iter(loader))
    assert images.shape[0] == 4 and len(loader) == 5
    with pytest.raises(CakdError, match="does not split evenly over 3 training processes"):
        train_loader(digits, 8, 0, 3, 0, torch.device("cpu"))
    with pytest.raises(CakdError, match="fewer than one batch"):
        train_loader(digits, 64, 0, 1, 0, torch.device("cpu"))


def test_augmentation_is_the_same_with_or_without_workers(datasets: dict) -> None:
    folder = datasets["folder"]
    batches = []
    for workers in (0, 2):
        sampler = SeededSampler(len(folder), 4)
        sampler.set_epoch_seed(3)
        loader = DataLoader(SeededItems(folder), batch_size=4, sampler=sampler, num_workers=workers)
        batches.append(torch.cat([images for images, _ in loader]))
    assert torch.equal(*batches)


def test_zero_and_two_workers_train_identical_weights(tmp_path: Path, capsys, monkeypatch) -> None:
    """Random crops, flips and mixup on an image folder: the model.pt files are byte for byte the same."""
    root = make_folder(tmp_path / "data", per_class=8)
    data = {"name": "imagefolder", "root": str(root), "img_size": SIZE, "augment": "random-resized-crop",
            "hflip": True, "mixup": 0.5, "train_per_class": 0, "test_per_class": 0}
    write_params(tmp_path / "params.yaml", tiny_params(data=data, train={"epochs": 2, "batch_size": 4}))
    assert run_cakd_here(["prepare"], tmp_path, capsys, monkeypatch)[0] == 0
    files = []
    for workers in (0, 2):
        out = f"teacher-{workers}"
        code, err = run_cakd_here(["train-teacher", "--out", out, "-S", f"machine.num_workers={workers}"],
                                  tmp_path, capsys, monkeypatch)
        assert code == 0, err
        files.append((tmp_path / out / "model.pt").read_bytes())
    assert files[0] == files[1]
