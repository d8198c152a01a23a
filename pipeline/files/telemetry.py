"""Runtime libraries' telemetry, off unless the user asks for it: cakd writes nothing outside its outputs.

- onnxruntime (1.2x+ on Linux) keeps a device id and an event database under
  ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` and uploads events unless ``ORT_DISABLE_TELEMETRY=1``
  is set before it is imported (its own switch; ``onnxruntime.disable_telemetry_events()`` does not stop the
  files).
- OpenVINO's ``import openvino`` starts the ``openvino_telemetry`` package (through its model converter),
  which writes ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` when no consent file exists. OpenVINO runs
  without that package (its converter falls back to a stub when it cannot be imported), so cakd makes it
  unimportable in its own process; ``opt_in_out --opt_out`` is OpenVINO's own, per-user switch.

``CAKD_TELEMETRY=1`` leaves both libraries at their own defaults; an ``ORT_DISABLE_TELEMETRY`` the user set is
kept as it is.
"""

from __future__ import annotations

import os
import sys

OPT_IN = "CAKD_TELEMETRY"


def switch_off() -> None:
    """Called when ``cakd.pipeline`` is imported, before any runtime library is."""
    if os.environ.get(OPT_IN, "").lower() in {"1", "true", "yes", "on"}:
        return
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # import openvino_telemetry -> ImportError: OpenVINO's stub
