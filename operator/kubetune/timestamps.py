"""RFC 3339 timestamps as Kubernetes writes them, and back to epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(seconds: float, precise: bool = False) -> str:
    """`2026-11-29T09:00:00Z`, Kubernetes' own resolution; `precise` keeps microseconds
    for values that arithmetic is done on later."""
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(seconds, UTC).strftime(pattern)


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
