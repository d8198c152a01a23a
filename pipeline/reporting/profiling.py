"""Where a cakd process spends its time, for ``benchmarks/pipeline_overhead.py``.

With ``CAKD_PROFILE=FILE`` set, each cakd process appends one JSON line to FILE when it ends: its arguments,
when it started, its seconds from process start until the command began its work (interpreter start-up and
imports), and the seconds spent in each named phase (``data``, ``training``, ``evaluation``, ``onnx-export``,
``parity``, ``int8-calibration``, ``int8-gate``, ``bench-accuracy``, ``timing``, ``reports``). Unset, nothing
is recorded and a phase costs one dictionary lookup.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROFILE_ENV = "CAKD_PROFILE"
_phases: dict[str, float] = {}
_ready: float | None = None


def enabled() -> bool:
    return bool(os.environ.get(PROFILE_ENV))


def process_age() -> float:
    """Seconds since this process started (Linux /proc); the import time before any cakd code ran counts."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def mark_ready() -> None:
    """The command starts its work: everything before was start-up and imports."""
    global _ready
    if enabled() and _ready is None:
        _ready = process_age()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the block's wall time to ``name`` (nested phases count in both: keep them disjoint)."""
    if not enabled():
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - start


def write_profile() -> None:
    """Append this process's line to the profile file (called once, as the process ends)."""
    if not enabled():
        return
    age = process_age()
    line = {"argv": sys.argv[1:], "started": time.time() - age, "total_s": age,
            "startup_s": _ready if _ready is not None else age, "phases": _phases}
    with open(os.environ[PROFILE_ENV], "a") as out:
        out.write(json.dumps(line) + "\n")
