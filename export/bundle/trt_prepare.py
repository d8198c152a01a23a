"""TensorRT on the target: one build script per TensorRT artefact in the bundle, run on the device it is for.

An engine and a timing cache belong to one GPU model and one TensorRT version. Each script names its timing
cache after both (a rebuild on the same device is quick, another device never reuses it) and writes the
engine's sidecar with both, which ``run.py --runtime tensorrt`` checks before loading the engine.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...pipeline.files.fileio import write_text
from ...pipeline.settings.params import TRTParams
from ..runtimes import RUNTIMES
from ..runtimes.base import INPUT_NAME
from ..runtimes.tensorrt_gpu import profile_shapes, trtexec_command

SCRIPT_SUFFIX = ".trtexec.sh"


def trt_artefacts(artefacts: dict[str, dict]) -> dict[str, str]:
    """kind -> file of every bundled artefact TensorRT builds engines from (FP32, FP16 and its INT8 forms)."""
    consumed = {kind for kinds in RUNTIMES["tensorrt"].consumes.values() for kind in kinds}
    return {kind: entry["file"] for kind, entry in artefacts.items() if kind in consumed}


def build_script(onnx_file: str, precision: str, cfg: TRTParams, img_size: int, in_chans: int) -> str:
    """A POSIX shell script that builds ``<stem>.engine`` with trtexec, its timing cache named after this GPU
    and TensorRT version, and writes the engine's sidecar."""
    stem = Path(onnx_file).stem
    command = trtexec_command(Path(onnx_file), Path(f"{stem}.engine"), cfg.batch_sizes, img_size, cfg.workspace_mb,
                              in_chans)
    shapes = json.dumps(profile_shapes(cfg.batch_sizes, img_size, in_chans))
    return f"""#!/bin/sh
# Build {stem}.engine from {onnx_file} on the target (NVIDIA GPU, TensorRT >= 10 with trtexec on PATH).
# The engine and the timing cache only fit this GPU model and this TensorRT version: the cache is named after
# both, and {stem}.engine.json records them (run.py --runtime tensorrt refuses an engine built elsewhere).
set -e
cd "$(dirname "$0")"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
v=$(trtexec --help 2>&1 | sed -n 's/.*TensorRT v\\([0-9][0-9]*\\).*/\\1/p' | head -n 1)
[ -n "$gpu" ] && [ -n "$v" ] || {{ echo "$0: no NVIDIA GPU (nvidia-smi) or no trtexec here" >&2; exit 2; }}
trt="$((v / 10000)).$((v / 100 % 100)).$((v % 100))"
cache="timing-cache.$(printf '%s' "$gpu" | tr -c 'A-Za-z0-9.-' '_').trt$trt.cache"
{command} --timingCacheFile="$cache"
cat > {stem}.engine.json <<EOF
{{"engine": "{stem}.engine", "onnx": "{onnx_file}", "precision": "{precision}", "gpu": "$gpu",
 "tensorrt_version": "$trt", "timing_cache": "$cache", "input": "{INPUT_NAME}", "input_shapes": {shapes},
 "built_by": "trtexec"}}
EOF
echo "built {stem}.engine for $gpu with TensorRT $trt"
"""


def write_build_scripts(folder: Path, artefacts: dict[str, dict], cfg: TRTParams, img_size: int,
                        in_chans: int) -> list[str]:
    """One executable ``<stem>.trtexec.sh`` per TensorRT artefact; returns their names."""
    names = []
    for kind, onnx_file in trt_artefacts(artefacts).items():
        script = folder / f"{Path(onnx_file).stem}{SCRIPT_SUFFIX}"
        write_text(script, build_script(onnx_file, artefacts[kind]["precision"], cfg, img_size, in_chans))
        script.chmod(0o755)
        names.append(script.name)
    return names
