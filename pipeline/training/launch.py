"""Several training processes from params.yaml: a training command relaunches itself under torchrun.

With ``machine.gpus`` > 1 or ``machine.nnodes`` > 1, ``cakd train-teacher`` / ``cakd distill`` run
``python -m torch.distributed.run ... -m cakd.pipeline.cli <the same arguments>`` and exit with its status (as
Ultralytics' ``utils/dist.py`` does): ``dvc repro`` runs the same dvc.yaml command on one process or many.
torchrun is the launcher; this module only writes its command line and keeps its failure report to one line.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator

from ..errors import CakdError
from ..settings.params import MachineParams

# torchrun's own log lines (glog style: "E1207 02:55:00.123000 4242 .../api.py:900] failed (exitcode: 2) ...").
TORCHRUN_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\] ")


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ  # torchrun sets it in every process it starts


def rendezvous_id(argv: list[str]) -> str:
    """The same on every node that runs the same command: their processes join one job."""
    return "cakd-" + hashlib.sha256("\0".join(argv).encode()).hexdigest()[:12]


def torchrun_command(machine: MachineParams, argv: list[str], cuda_devices: int | None) -> list[str] | None:
    """torchrun's command line for ``cakd <argv>``, or None when this process trains alone (one process asked
    for, or already one of torchrun's). ``cuda_devices``: the GPUs this process sees (CUDA_VISIBLE_DEVICES
    applied), None without CUDA (then the processes use gloo on the CPU)."""
    if under_torchrun() or machine.gpus * machine.nnodes == 1:
        return None
    if cuda_devices is not None and machine.gpus > cuda_devices:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise CakdError(f"machine.gpus is {machine.gpus} but this node sees {cuda_devices} GPU(s)"
                        + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
                        + f": set machine.gpus to at most {cuda_devices}")
    if machine.nnodes == 1:
        nodes = ["--standalone"]  # a free local port: runs side by side never collide
    elif not machine.rdzv_endpoint:
        raise CakdError(f"machine.nnodes is {machine.nnodes}: set machine.rdzv_endpoint to host:port of the node "
                        f"every node can reach")
    else:
        nodes = ["--nnodes", str(machine.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", machine.rdzv_endpoint,
                 "--rdzv-id", rendezvous_id(argv)]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(machine.gpus), *nodes,
            "-m", "cakd.pipeline.cli", *argv]


def shown_lines(lines: Iterable[str]) -> Iterator[str]:
    """The processes' own output, without torchrun's log lines and its ChildFailedError traceback (the failing
    process already printed its one line), and each ``cakd: error:`` line once (every rank prints it)."""
    block: list[str] = []
    errors: set[str] = set()
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            yield from _unless_torchrun_failure(block)
            block = [line]
        elif block:
            block.append(line)
        elif line.startswith("cakd: error:"):
            if line not in errors:
                errors.add(line)
                yield line
        elif not TORCHRUN_LOG.match(line):
            yield line
    yield from _unless_torchrun_failure(block)


def _unless_torchrun_failure(block: list[str]) -> list[str]:
    return [] if any("ChildFailedError" in line for line in block) else block


def relaunch_if_asked(machine: MachineParams) -> None:
    """Run this very command under torchrun and exit with its status, when ``machine`` asks for several
    processes; return at once otherwise."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else None
    command = torchrun_command(machine, sys.argv[1:], cuda)
    if command is None:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {"OMP_NUM_THREADS": str(max(1, cores // machine.gpus)), **os.environ}  # torchrun's warning otherwise
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        assert proc.stderr is not None
        failed_with_a_line = False
        for line in shown_lines(proc.stderr):
            failed_with_a_line |= line.startswith("cakd: error:")
            sys.stderr.write(line)
            sys.stderr.flush()
    if proc.returncode and not failed_with_a_line:
        raise CakdError(f"the {machine.gpus * machine.nnodes} training processes under torchrun failed "
                        f"(exit code {proc.returncode}); their output is above")
    raise SystemExit(2 if failed_with_a_line else proc.returncode)
