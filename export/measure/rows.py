"""The bench's results as one row type, shared by the bench, its table, CSV and plot, and ``cakd summary``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

Status = Literal["ok", "failed", "rejected", "skipped", "unavailable"]


@dataclass
class BenchRow:
    """One (model, runtime, precision, artefact, batch size): its latency, its accuracy on that runtime, and
    ``status`` with ``reason`` when it was not measured (unavailable, rejected by the INT8 gate, skipped) or
    failed its accuracy check against its reference runtime."""

    model: str
    runtime: str
    precision: str
    artefact: str | None
    batch_size: int
    status: Status
    reason: str | None = None
    p50_ms: float | None = None
    p50_round_min_ms: float | None = None  # the spread of the per-round p50s: overlapping spreads do not rank
    p50_round_max_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None  # only when at least 100 calls were timed
    mean_ms: float | None = None
    runs: int = 0
    rounds: int = 0
    throughput_ips: float | None = None
    top1: float | None = None
    max_abs_diff: float | None = None  # largest |logit difference| vs the same model's PyTorch FP32 logits
    params_m: float | None = None
    gflops: float | None = None
    file_mb: float | None = None
    activations: str | None = None  # INT8 rows: "uint8" (asymmetric) or "int8" (symmetric)
    source: str = ""

    @property
    def measured(self) -> bool:
        """Timed, scored and passed its accuracy check: may be picked and drawn on the Pareto front."""
        return self.status == "ok" and self.top1 is not None and self.p50_ms is not None

    @property
    def name(self) -> str:
        kind = f" ({self.artefact})" if self.artefact and self.artefact.startswith("onnx-int8-") else ""
        return f"{self.model} / {self.runtime} {self.precision}{kind}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchRow:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


COLUMNS = [f.name for f in fields(BenchRow)]


@dataclass
class Pick:
    """What to deploy on one runtime at batch 1, and by which rule; ``model`` is None when nothing qualifies."""

    runtime: str
    batch_size: int
    model: str | None = None
    precision: str | None = None
    artefact: str | None = None
    top1: float | None = None
    p50_ms: float | None = None
    budget_ms: float | None = None
    rule: str | None = None
    reason: str | None = None  # why nothing was picked

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Pick:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @property
    def line(self) -> str:
        """The summary's deploy line."""
        if self.model is None:
            return f"{self.runtime}: nothing to deploy ({self.reason})"
        return (f"deploy {self.model} {self.precision} on {self.runtime}: {self.top1:.2f}% at {self.p50_ms:.2f} ms "
                f"(batch {self.batch_size}; {self.rule})")
