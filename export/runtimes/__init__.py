"""The inference runtimes an exported model runs on: one module per runtime, ``RUNTIMES`` lists them.

Each module declares its ``RUNTIME`` row: its name, the artefacts it consumes per precision, the runtime
its accuracy is checked against, whether it can run here (and why not), its session options (applied
and recorded from the same function) and how to build a ``Runner``. ``cakd export`` makes the artefacts
the configured runtimes consume; ``cakd bench-latency`` times them. Adding a runtime = one module here
plus one entry below.
"""

from __future__ import annotations

from . import openvino_cpu, ort_cpu, ort_cuda, tensorrt_gpu, torch_cpu, torch_cuda
from .base import Artefact, Precision, Runner, Runtime, Session, Settings

RUNTIMES: dict[str, Runtime] = {module.RUNTIME.name: module.RUNTIME for module in (
    torch_cpu, torch_cuda, ort_cpu, ort_cuda, openvino_cpu, tensorrt_gpu)}


def consumers(kind: Artefact) -> list[str]:
    """The runtimes that run an artefact kind: the artefact table's "consumed by" column, said once, here."""
    return [name for name, runtime in RUNTIMES.items() if any(kind in kinds for kinds in runtime.consumes.values())]

__all__ = ["RUNTIMES", "consumers", "Artefact", "Precision", "Runner", "Runtime", "Session", "Settings"]
