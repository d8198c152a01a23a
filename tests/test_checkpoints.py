"""Unreadable checkpoints: one line saying whether the file is not a checkpoint, is corrupt, or was refused
because loading it would run code (the global torch's safe unpickler names); never torch's advice to retry
with ``weights_only=False``."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from cakd.pipeline.errors import CakdError
from cakd.pipeline.files.checkpoints import load_checkpoint
from tests.conftest import run_cakd_here, tiny_params, write_params


class RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def flip_tensor_byte(src: Path, dst: Path) -> None:
    """Damage one byte inside the stored tensor data (not the zip headers), as a bad copy would."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + 8] ^= 0xFF
    dst.write_bytes(bytes(data))


def make_bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.arange(64, dtype=torch.float32)}}, good)
    files = {name: tmp_path / f"{name}.pt" for name in ("text", "random", "empty", "truncated", "flipped",
                                                         "code-zip", "code-pickle")}
    files["text"].write_text("epoch,loss\n1,0.5\n")  # a text file renamed .pt
    files["random"].write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    flip_tensor_byte(good, files["flipped"])
    torch.save({"state_dict": RunsCode(tmp_path / "ran")}, files["code-zip"])
    files["code-pickle"].write_bytes(pickle.dumps(RunsCode(tmp_path / "ran")))
    return files


@pytest.mark.parametrize(("name", "wanted"), [
    ("text", r"is not a checkpoint: neither torch\.save's zip format nor a pickle$"),
    ("random", r"is not a checkpoint: neither torch\.save's zip format nor a pickle$"),
    ("empty", r"is not a checkpoint: an empty file$"),
    ("truncated", r"is corrupt: "),
    ("flipped", r"is corrupt: good/data/0 fails its CRC check$"),
    ("code-zip", r"was refused: loading it would import and call posix\.system, i\.e\. run code"),
    ("code-pickle", r"is not a checkpoint: a plain pickle, not torch\.save's zip format \(cakd never unpickles"),
])
def test_each_unreadable_checkpoint_is_one_line_saying_what_is_wrong(tmp_path: Path, name: str,
                                                                      wanted: str) -> None:
    path = make_bad_files(tmp_path)[name]
    with pytest.raises(CakdError, match=rf"^model checkpoint {path} {wanted}") as err:
        load_checkpoint(path, "model checkpoint")
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message
    assert not (tmp_path / "ran").exists()  # nothing in the file was executed


def test_a_good_checkpoint_still_loads(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["w"], torch.ones(3))


def test_the_cli_says_a_text_file_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_params(tmp_path / "params.yaml", tiny_params())
    (tmp_path / "notes.pt").write_text("not weights\n")
    code, err = run_cakd_here(["export", "--checkpoint", "notes.pt"], tmp_path, capsys, monkeypatch)
    assert code == 2
    assert err == ("cakd: error: model checkpoint notes.pt is not a checkpoint: neither torch.save's zip format "
                   "nor a pickle\n")
