"""What a latency number depends on besides the model, recorded so two runs can be compared."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

_PACKAGES = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "numpy",
             "tensorrt")
# Instruction-set extensions that change INT8 / bf16 speed (and OpenVINO's default precision)
_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
          "amx_bf16", "avx512_fp16")


def _cpuinfo_field(name: str) -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The latency-relevant instruction-set flags this CPU has (x86 /proc/cpuinfo)."""
    have = set((_cpuinfo_field("flags") or "").split())
    return [f for f in _FLAGS if f in have]


def load_average() -> float:
    return os.getloadavg()[0]


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def system_info(threads: int) -> dict:
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": _versions(),
    }


def load_warning(before: float, after: float, threads: int) -> str | None:
    """A busy machine inflates and spreads every latency: say so when the 1-minute load average
    exceeded the threads the bench uses."""
    worst = max(before, after)
    if worst <= threads:
        return None
    return (f"load average {worst:.2f} exceeded the {threads} benchmark threads: latencies are inflated by other "
            "work on this machine; re-run on an idle machine before comparing")
