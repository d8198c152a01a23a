"""Fingerprints: what a resumable run, a reusable export or a measured shortlist was made under."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel


def fingerprint(*parts: BaseModel | dict | str | int | None) -> str:
    """A stable hash of settings and input hashes: a checkpoint only resumes a run with the same one."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
