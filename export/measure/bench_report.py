"""bench.json as ``cakd summary`` reads it back: the bench's own row types (``rows.BenchRow``, ``rows.Pick``),
strictly typed, so a hand-edited or truncated bench report is one line naming its field, not a traceback."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import create_model, model_validator

from ...pipeline.files.reports import Report, read_report
from .rows import BenchRow, Pick


def entry_schema(cls: type) -> type[Report]:
    """A strict schema with the fields, types and defaults of the dataclass ``cls``: one definition of a row."""
    hints = get_type_hints(cls)
    spec: dict[str, Any] = {f.name: (hints[f.name], ... if f.default is MISSING else f.default) for f in fields(cls)}
    return create_model(f"{cls.__name__}Entry", __base__=Report, **spec)


BenchRowEntry = entry_schema(BenchRow)
PickEntry = entry_schema(Pick)


class BenchReport(Report):
    rows: list[BenchRowEntry]  # type: ignore[valid-type]
    picks: list[PickEntry]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _picks_say_what(self) -> BenchReport:
        """A pick that names a model gives what its deploy line states."""
        for i, pick in enumerate(self.picks):
            lacking = [key for key in ("precision", "top1", "p50_ms", "rule") if getattr(pick, key) is None]
            if pick.model is not None and lacking:
                raise ValueError(f"picks.{i} names model {pick.model!r} but no {lacking[0]}")
        return self


def read_bench_report(path: Path) -> dict:
    return read_report(path, BenchReport, "latency report", "re-run cakd bench-latency")
